"""WSGI entry point: `gunicorn wsgi:app`, `flask --app wsgi ...`. A bad setting: one line and exit status 3."""
from jobprocessor.startup import app_or_exit

app = app_or_exit()
