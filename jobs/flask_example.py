"""A small Flask app wired to the clock, to copy from: jobs that run inside the app, and a signed endpoint.

schedule.yaml:

    count-users:
      every: 1h
      python: jobs.flask_example:count_users
      app: jobs.flask_example:create_app     # runs inside this app's context: db.session works
    import-feeds:
      every: 10m
      http: {url: "${APP_URL}/tasks/import-feeds", sign: "${CLOCK_SIGNING_SECRET}"}
"""

from __future__ import annotations

import os

from flask import Flask, Response, jsonify, request
from flask_sqlalchemy import SQLAlchemy

from dynoclock import require_signature
from dynoclock.actions.base import RunContext

db = SQLAlchemy()


class User(db.Model):  # type: ignore[name-defined,misc]
    id = db.Column(db.Integer, primary_key=True)
    name = db.Column(db.String(80), nullable=False)


def create_app() -> Flask:
    app = Flask(__name__)
    app.config["SQLALCHEMY_DATABASE_URI"] = os.environ.get("EXAMPLE_APP_DATABASE_URL", "sqlite:///example-app.db")
    db.init_app(app)
    with app.app_context():
        db.create_all()

    @app.post("/tasks/import-feeds")
    @require_signature()  # 401 unless signed with $CLOCK_SIGNING_SECRET within the last 5 minutes
    def import_feeds() -> Response:
        return jsonify(ok=True, slot=request.headers.get("X-Clock-Scheduled-For"))

    return app


def count_users(run: RunContext | None = None) -> str:
    """A job that uses the app's database through Flask-SQLAlchemy, as a route would."""
    return f"users={db.session.query(User).count()}"
