"""The WSGI entry point: `gunicorn app:app` and `flask --app app run` load this module."""

import sys

from cruddur import create_app
from cruddur.config import ConfigError

#: The exit status gunicorn's master reads as "the app cannot load" (`Arbiter.APP_LOAD_ERROR`): it
#: stops, rather than restarting workers that would fail the same way.
APP_LOAD_ERROR = 4

try:
    app = create_app()
except ConfigError as error:
    # A setting the user can fix: one line naming it, not a traceback.
    print(f"cruddur: configuration error: {error}", file=sys.stderr, flush=True)
    raise SystemExit(APP_LOAD_ERROR) from None
