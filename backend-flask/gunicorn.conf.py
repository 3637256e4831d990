"""gunicorn settings for backend-flask: `gunicorn app:app` from this folder picks them up.

Command-line flags (`-b`, `-w`) and `GUNICORN_CMD_ARGS` override anything set here.
"""

import gc
import os

bind = f"0.0.0.0:{os.environ.get('PORT', '4567')}"
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
# Each worker imports app.py after it forks, so telemetry threads and sockets belong to the
# process that uses them. preload_app=True also works: post_fork below restarts them.
preload_app = False
timeout = 30
# A stop waits this long for requests in flight, then for telemetry to flush.
graceful_timeout = 30
# The app writes one JSON access line per request itself, with the trace id in it; gunicorn's
# own lines (start, stop, worker timeouts) are JSON on stdout too, in the app's format.
accesslog = None
logconfig_dict = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"json": {"()": "cruddur.telemetry.logs.JsonFormatter"}},
    "handlers": {"stdout": {"class": "logging.StreamHandler", "stream": "ext://sys.stdout", "formatter": "json"}},
    "root": {"level": "INFO", "handlers": []},
    "loggers": {
        "gunicorn.error": {"level": "INFO", "handlers": ["stdout"], "propagate": False},
        "gunicorn.access": {"level": "INFO", "handlers": [], "propagate": False},
    },
}
forwarded_allow_ips = os.environ.get("FORWARDED_ALLOW_IPS", "127.0.0.1")


def post_fork(server, worker):
    """A preloaded app was built in the master: give this worker its own telemetry threads."""
    if server.cfg.preload_app:
        worker.app.wsgi().extensions["cruddur"].telemetry.after_fork()


def post_worker_init(worker):
    """Move what the app built at start-up out of the garbage collector's way.

    With four tools loaded a worker tracks ~150,000 long-lived objects, and every full collection
    walked them all, a ~60 ms pause every few hundred requests (the p99 of `make bench`).
    """
    gc.collect()
    gc.freeze()


def worker_exit(server, worker):
    """Flush every span, segment, log line and Rollbar item, and close the database pool, before the
    worker process ends."""
    app = getattr(worker, "wsgi", None)
    if app is not None:
        state = app.extensions["cruddur"]
        state.telemetry.shutdown()
        state.deps.store.close()
