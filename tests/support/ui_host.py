"""A Flask web app with the status page mounted at /clock, as the README shows, served by Werkzeug's real
threaded server: ``python -m tests.support.ui_host SCHEDULE PORT`` (tokens and state from the environment)."""

from __future__ import annotations

import sys

from flask import Flask
from werkzeug.middleware.dispatcher import DispatcherMiddleware
from werkzeug.serving import run_simple

from dynoclock.ui import make_app


def host_app(schedule: str) -> Flask:
    app = Flask("host")

    @app.get("/")
    def home() -> str:
        return "the web app"

    app.wsgi_app = DispatcherMiddleware(app.wsgi_app, {"/clock": make_app(schedule)})  # type: ignore[method-assign]
    return app


if __name__ == "__main__":
    run_simple("127.0.0.1", int(sys.argv[2]), host_app(sys.argv[1]), threaded=True)
