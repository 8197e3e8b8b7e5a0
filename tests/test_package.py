"""The installable package: the wheel holds the package and its templates only, and its console script and
``python -m dynoclock`` take the same commands as ``python clock.py``."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

from tests.support.processes import ROOT

ANYWHERE = shutil.ignore_patterns("__pycache__", "*.egg-info", ".*_cache")


def left_out(folder: str, names: list[str]) -> set[str]:
    """What a clean checkout does not have: the venv, local state, build output, caches."""
    top = {".git", ".venv", "state", "build"} if Path(folder) == ROOT else set()
    return set(ANYWHERE(folder, names)) | (top & set(names))


def build_wheel(tmp_path: Path) -> Path:
    source = tmp_path / "source"
    shutil.copytree(ROOT, source, ignore=left_out)  # a clean copy: building writes build/ and *.egg-info
    out = tmp_path / "wheels"
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out), str(source)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert built.returncode == 0, built.stdout + built.stderr
    (wheel,) = out.glob("dynoclock-*.whl")
    return wheel


def test_the_wheel_holds_the_package_its_templates_and_its_dependencies_only(tmp_path: Path) -> None:
    wheel = build_wheel(tmp_path)
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        metadata = archive.read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
        entry_points = archive.read(next(n for n in names if n.endswith(".dist-info/entry_points.txt"))).decode()
    assert {name.split("/")[0] for name in names} == {"dynoclock", wheel.name.split("-py")[0] + ".dist-info"}
    templates = {Path(n).name for n in names if n.startswith("dynoclock/ui/templates/")}
    assert templates == {p.name for p in (ROOT / "dynoclock" / "ui" / "templates").glob("*.html")}
    assert "dynoclock = dynoclock.__main__:main" in entry_points
    required = [line.split(": ", 1)[1] for line in metadata.splitlines() if line.startswith("Requires-Dist: ")]
    assert "SQLAlchemy<2.2,>=2.0.36" in required  # ranges, not pins: an app's own pins must resolve
    assert all("==" not in requirement.split(";")[0] for requirement in required)  # (markers say extra == ...)


def test_the_installed_console_script_and_module_run_the_commands(tmp_path: Path) -> None:
    wheel = build_wheel(tmp_path)
    site = tmp_path / "site"
    installed = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(site),
                                str(wheel)], capture_output=True, text=True, timeout=300)  # fmt: skip
    assert installed.returncode == 0, installed.stderr
    env = {**os.environ, "PYTHONPATH": str(site), "APP_URL": "", "CLOCK_DATABASE_URL": f"sqlite:///{tmp_path}/s.db"}
    work = tmp_path / "app"  # not the repository: what runs is the installed package
    work.mkdir()
    shutil.copy(ROOT / "schedule.yaml", work / "schedule.yaml")
    shutil.copytree(ROOT / "jobs", work / "jobs")
    where = subprocess.run([sys.executable, "-c", "import dynoclock; print(dynoclock.__file__)"], cwd=work, env=env,
                           capture_output=True, text=True)  # fmt: skip
    assert where.stdout.startswith(str(site)), where.stdout + where.stderr
    script = subprocess.run([str(site / "bin" / "dynoclock"), "check"], cwd=work, env=env, capture_output=True,
                            text=True, timeout=60)  # fmt: skip
    assert script.returncode == 0, script.stderr
    assert script.stdout.startswith("schedule.yaml: ok")
    module = subprocess.run([sys.executable, "-m", "dynoclock", "run", "heartbeat"], cwd=work, env=env,
                            capture_output=True, text=True, timeout=60)  # fmt: skip
    assert module.returncode == 0, module.stdout + module.stderr
    assert module.stdout.splitlines()[-1].startswith("heartbeat: ok")
