"""The WSGI entry point: `gunicorn app:app` and `flask --app app run` load this module."""

from cruddur import create_app

app = create_app()
