"""The operator dashboard under /dashboard: server-rendered pages (Jinja), its own sign-in (DASHBOARD_SECRET,
DASHBOARD_READONLY_SECRET), bulk actions, and vendored static files (no CDN: works offline).

session.py (the signed cookie, CSRF), signin.py (roles, throttle), data.py (the pages' queries), charts.py (SVG
geometry), flow_control.py (the plug-in for pauses, limits and wait reasons), views.py (routes)."""
from flask import Flask


def register_dashboard(app: Flask) -> None:
    from .views import bp

    app.register_blueprint(bp)
