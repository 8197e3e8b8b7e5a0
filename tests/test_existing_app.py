"""README "Add the clock to an existing app", followed step by step: the wheel installed with pip into a fresh
venv beside a small Flask app that pins its own versions (inside our ranges, not our lock), its schedule.yaml,
and the `dynoclock` console script run as the Procfile says, from the app's folder, on the app's Postgres
(`DATABASE_URL`, Heroku's `postgres://` form). An http job calls the app served on loopback, a python job
writes through Flask-SQLAlchemy in the app's context, an enqueue job is run by a real RQ worker of the app's
venv: each leaves its row in the app's table, and its `ok` run in the clock's history."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from textwrap import dedent

import pytest
import sqlalchemy as sa

from tests.support.processes import wait_until
from tests.support.redis import RedisSpace
from tests.support.services import free_port
from tests.test_package import build_wheel

pytestmark = [pytest.mark.slow, pytest.mark.postgres, pytest.mark.redis]

# The app's own pins: older than this repo's lock (requirements.txt), inside the package's ranges.
APP_REQUIREMENTS = dedent("""\
    Flask==3.0.3
    Werkzeug==3.0.6
    Flask-SQLAlchemy==3.1.1
    SQLAlchemy==2.0.36
    rq==2.4.1
    redis==6.4.0
    """)
APP = dedent('''\
    """The app: one table, one endpoint the clock calls."""
    import os

    from flask import Flask, jsonify
    from flask_sqlalchemy import SQLAlchemy

    db = SQLAlchemy()


    class Event(db.Model):
        id = db.Column(db.Integer, primary_key=True)
        source = db.Column(db.String(20), nullable=False)


    def create_app():
        app = Flask(__name__)
        # Heroku's DATABASE_URL says postgres://; SQLAlchemy wants the driver named.
        app.config["SQLALCHEMY_DATABASE_URI"] = os.environ["DATABASE_URL"].replace(
            "postgres://", "postgresql+psycopg://", 1
        )
        db.init_app(app)
        with app.app_context():
            db.create_all()

        @app.post("/tasks/ping")
        def ping():
            db.session.add(Event(source="http"))
            db.session.commit()
            return jsonify(ok=True)

        return app
    ''')
JOBS = dedent("""\
    from sampleapp import Event, db


    def record():  # runs inside create_app()'s context (app: sampleapp:create_app in schedule.yaml)
        db.session.add(Event(source="python"))
        db.session.commit()
    """)
TASKS = dedent("""\
    def record(source):  # run by the RQ worker
        from sampleapp import Event, create_app, db

        with create_app().app_context():
            db.session.add(Event(source=source))
            db.session.commit()
    """)
SCHEDULE = dedent("""\
    jobs:
      call-app:
        every: 2s
        http: {url: "${APP_URL}/tasks/ping", method: POST}
      write-row:
        every: 2s
        python: sampleapp.jobs:record
        app: sampleapp:create_app
      queue-task:
        every: 2s
        enqueue: {func: sampleapp.tasks.record, args: [rq], queue: "${QUEUE}"}
    """)


@dataclass
class SampleApp:
    folder: Path
    bin: Path  # the venv's bin folder

    def env(self, **extra: str) -> dict[str, str]:
        """Ours without this checkout's Python or state variables: what runs is the venv's."""
        drop = ("PYTHONPATH", "VIRTUAL_ENV", "DATABASE_URL", "DYNO")
        env = {k: v for k, v in os.environ.items() if k not in drop and not k.startswith("CLOCK_")}
        return env | {"PATH": f"{self.bin}:{env.get('PATH', '')}"} | extra


@pytest.fixture(scope="module")
def sample_app(tmp_path_factory: pytest.TempPathFactory) -> SampleApp:
    """Step 1 and 2: the package and the app's own pins installed in one fresh venv (once for the module)."""
    base = tmp_path_factory.mktemp("existing-app")
    wheel = build_wheel(base)
    folder = base / "app"
    (folder / "sampleapp").mkdir(parents=True)
    (folder / "requirements.txt").write_text(APP_REQUIREMENTS)
    (folder / "sampleapp" / "__init__.py").write_text(APP)
    (folder / "sampleapp" / "jobs.py").write_text(JOBS)
    (folder / "sampleapp" / "tasks.py").write_text(TASKS)
    (folder / "schedule.yaml").write_text(SCHEDULE)
    (folder / "Procfile").write_text("web: flask --app sampleapp:create_app run\nclock: dynoclock\n")
    venv = base / "venv"
    made = subprocess.run([sys.executable, "-m", "venv", str(venv)], capture_output=True, text=True, timeout=120)
    assert made.returncode == 0, made.stderr
    installed = subprocess.run(
        [str(venv / "bin" / "pip"), "install", "-q", "-r", "requirements.txt", str(wheel)],
        cwd=folder, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert installed.returncode == 0, installed.stdout + installed.stderr
    return SampleApp(folder, venv / "bin")


def test_the_app_keeps_its_own_pins(sample_app: SampleApp) -> None:
    frozen = subprocess.run([str(sample_app.bin / "pip"), "freeze"], capture_output=True, text=True, timeout=60)
    versions = {line.split("==")[0].lower(): line.split("==")[1] for line in frozen.stdout.splitlines() if "==" in line}
    for pin in APP_REQUIREMENTS.split():
        name, version = pin.split("==")
        assert versions[name.lower()] == version, frozen.stdout
    assert any(line.startswith("dynoclock @ file:") for line in frozen.stdout.splitlines()), frozen.stdout


@pytest.fixture
def processes() -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for proc in started:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def test_http_python_and_enqueue_jobs_run_from_the_installed_console_script(
    sample_app: SampleApp, pg_schema_url: str, redis_space: RedisSpace, processes: list[subprocess.Popen[bytes]]
) -> None:
    port = free_port()
    queue = redis_space.name("clock")
    env = sample_app.env(
        DATABASE_URL=pg_schema_url.replace("postgresql://", "postgres://", 1),
        APP_URL=f"http://127.0.0.1:{port}",
        REDIS_URL=redis_space.url,
        QUEUE=queue,
    )
    folder = sample_app.folder
    checked = subprocess.run(["dynoclock", "check"], cwd=folder, env=env, capture_output=True, text=True, timeout=60)
    assert checked.returncode == 0, checked.stderr
    assert checked.stdout == "schedule.yaml: ok, 3 jobs (3 enabled)\n"
    # The table first, once: the three processes below would otherwise race to create it.
    made = subprocess.run(["python", "-c", "import sampleapp; sampleapp.create_app()"], cwd=folder, env=env,
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    assert made.returncode == 0, made.stderr

    logs = {name: open(folder / f"{name}.log", "wb") for name in ("web", "worker", "clock")}  # noqa: SIM115
    try:
        commands = {
            "web": ["flask", "--app", "sampleapp:create_app", "run", "--port", str(port)],
            "worker": ["rq", "worker", "-u", redis_space.url, "--name", redis_space.name("worker"), queue],
            "clock": ["dynoclock"],  # the Procfile's line
        }
        for name, argv in commands.items():
            processes.append(subprocess.Popen(argv, cwd=folder, env=env, stdout=logs[name], stderr=subprocess.STDOUT))
        app_db = sa.create_engine(pg_schema_url.replace("postgresql://", "postgresql+psycopg://", 1))

        def sources() -> set[str]:
            with app_db.connect() as conn:
                return {row.source for row in conn.execute(sa.text("SELECT DISTINCT source FROM event"))}

        def tails() -> str:
            return "\n".join(f"--- {n}\n{(folder / f'{n}.log').read_text()[-3000:]}" for n in commands)

        wait_until(lambda: sources() == {"http", "python", "rq"}, "a row from each job", timeout=90, details=tails)
        clock = processes[2]
        clock.send_signal(signal.SIGTERM)
        assert clock.wait(60) == 0, tails()
        with app_db.connect() as conn:
            ok = {row.job for row in conn.execute(sa.text("SELECT DISTINCT job FROM clock_runs WHERE status = 'ok'"))}
        assert ok == {"call-app", "write-row", "queue-task"}, tails()
        app_db.dispose()
    finally:
        for log in logs.values():
            log.close()
