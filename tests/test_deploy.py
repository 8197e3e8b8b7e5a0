"""The deploy files (Dockerfile, .dockerignore, deploy/): the Kubernetes manifest against the Kubernetes JSON
schema, the platforms' files parsed as their platforms read them, each naming the clock's command and giving
it time to stop; the Dockerfile read statically (the image is not built here: that needs the network)."""

from __future__ import annotations

import json
import re
import shlex
import tomllib
from datetime import timedelta
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from dynoclock.cli.args import build_parser
from dynoclock.config.loader import Schedule
from dynoclock.run.watchdog import STOP_GRACE
from tests.support.processes import ROOT

DEPLOY = ROOT / "deploy"
K8S_VERSION = "1.30.0"  # the oldest Kubernetes still supported upstream when this was written
# SIGTERM to SIGKILL must cover the default shutdown_grace, the clock's own stop grace, and a margin.
NEEDED = Schedule.__dataclass_fields__["shutdown_grace"].default
assert isinstance(NEEDED, timedelta)
MIN_STOP = NEEDED.total_seconds() + STOP_GRACE + 5


def manifest() -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all((DEPLOY / "kubernetes.yaml").read_text()) if doc]


def clock_command(argv: list[str]) -> str:
    """The dynoclock command ``argv`` runs (``dynoclock`` alone runs the clock), as the CLI parses it."""
    assert argv[0] == "dynoclock", argv
    rest = argv[1:] or ["run"]
    return str(build_parser().parse_args(rest).command)


# ---- Kubernetes ----------------------------------------------------------------------------


def test_the_kubernetes_manifest_is_valid_against_the_kubernetes_schema() -> None:
    docs = manifest()
    assert [(doc["apiVersion"], doc["kind"]) for doc in docs] == [("apps/v1", "Deployment")]  # no Service
    for doc in docs:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


@pytest.mark.parametrize(
    ("path", "value"),
    [(("spec", "replicas"), "two"), (("spec", "template", "spec", "terminationGracePeriod"), 40)],
    ids=["replicas-not-a-number", "misspelt-field"],
)
def test_the_schema_check_refuses_a_broken_deployment(path: tuple[str, ...], value: Any) -> None:
    (doc,) = manifest()
    node = doc
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def test_the_deployment_runs_a_leader_and_a_standby_that_stop_in_time_with_the_url_from_a_secret() -> None:
    (doc,) = manifest()
    pod = doc["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert doc["spec"]["replicas"] == 2
    assert pod["terminationGracePeriodSeconds"] >= MIN_STOP
    env = {item["name"]: item for item in container["env"]}
    assert set(env["DATABASE_URL"]["valueFrom"]) == {"secretKeyRef"}
    assert "value" not in env["DATABASE_URL"]
    assert clock_command(["dynoclock", *container.get("args", [])]) == "run"
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] != 0
    assert "ports" not in container


# ---- Render, Railway, Fly.io, Procfiles ----------------------------------------------------


def test_render_runs_the_clock_as_one_background_worker_on_the_database() -> None:
    blueprint = yaml.safe_load((DEPLOY / "render.yaml").read_text())
    (worker,) = [s for s in blueprint["services"] if s["type"] == "worker"]
    assert clock_command(shlex.split(worker["startCommand"])) == "run"
    assert worker.get("numInstances", 1) == 1
    assert worker["maxShutdownDelaySeconds"] >= MIN_STOP
    env = {item["key"]: item for item in worker["envVars"]}
    assert env["DATABASE_URL"]["fromDatabase"]["name"] in {db["name"] for db in blueprint["databases"]}


def test_railway_starts_one_clock_and_drains_it_long_enough() -> None:
    deploy = json.loads((DEPLOY / "railway.json").read_text())["deploy"]
    assert clock_command(shlex.split(deploy["startCommand"])) == "run"
    assert deploy["numReplicas"] == 1
    assert isinstance(deploy["drainingSeconds"], int) and deploy["drainingSeconds"] >= MIN_STOP


def test_fly_runs_a_clock_process_that_takes_no_traffic_and_stops_in_time() -> None:
    fly = tomllib.loads((DEPLOY / "fly.toml").read_text())
    assert clock_command(shlex.split(fly["processes"]["clock"])) == "run"
    assert fly["kill_signal"] in ("SIGTERM", "SIGINT") and fly["kill_timeout"] >= MIN_STOP
    assert "clock" not in fly["http_service"]["processes"]


def test_the_procfiles_name_the_clock_process() -> None:
    for procfile in (DEPLOY / "Procfile", ROOT / "Procfile"):
        lines = dict(line.split(": ", 1) for line in procfile.read_text().splitlines() if line.strip())
        command = shlex.split(lines["clock"])
        if procfile.parent == ROOT:  # this repository runs its checkout: python clock.py
            assert command == ["python", "clock.py"]
        else:
            assert clock_command(command) == "run"


def test_the_console_script_the_files_name_is_the_packages() -> None:
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["dynoclock"] == "dynoclock.__main__:main"


# ---- Dockerfile ----------------------------------------------------------------------------


def instructions() -> list[tuple[str, str]]:
    """The Dockerfile's instructions, continuation lines joined: (INSTRUCTION, arguments)."""
    text = re.sub(r"\\\n", " ", (ROOT / "Dockerfile").read_text())
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith("#")]
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1]) for line in lines]


def test_the_dockerfile_builds_a_slim_non_root_image_of_the_package_that_runs_the_clock() -> None:
    steps = instructions()
    assert steps[0] == ("FROM", "python:3.11-slim")
    runs = " ".join(args for op, args in steps if op == "RUN")
    assert re.search(r"apt-get install -y --no-install-recommends tzdata\b", runs)
    assert re.search(r"pip install -r /src/requirements\.txt /src\b", runs)
    assert "requirements-dev" not in (ROOT / "Dockerfile").read_text()
    users = [args for op, args in steps if op == "USER"]
    assert users and users[-1] not in ("root", "0")
    last_user = max(i for i, (op, _) in enumerate(steps) if op == "USER")
    assert all(op != "RUN" for op, _ in steps[last_user:])  # nothing runs as root after the switch
    copied = " ".join(args for op, args in steps if op == "COPY")
    assert "schedule.yaml" in copied and "jobs" in copied
    assert ("ENTRYPOINT", '["dynoclock"]') in steps and ("CMD", '["run"]') in steps


def test_the_dockerignore_keeps_out_what_the_image_does_not_need_and_nothing_it_copies() -> None:
    ignored = {line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()}
    ignored -= {""}
    ignored = {line for line in ignored if not line.startswith("#")}
    assert {".git", ".venv", "tests", "state"} <= ignored
    sources = []
    for op, args in instructions():
        if op == "COPY":
            parts = [p for p in args.split() if not p.startswith("--")]
            sources += [Path(p).parts[0] for p in parts[:-1]]
    assert sources and not set(sources) & ignored
    assert all((ROOT / source).exists() for source in sources)
