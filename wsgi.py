"""WSGI entry point: `gunicorn wsgi:app`, `flask --app wsgi ...`."""
from jobprocessor import create_app

app = create_app()
