"""End to end in headless Chromium: a real clock process and a real `clock.py ui` process on one SQLite state
file; sign in, click "Run now", and see the clock's run appear in the job's history. The screenshot is saved
in the test's folder and in tests/output/ui.png.

Needs Debian's Chromium (/usr/bin/chromium, installed by .ci/run) and the playwright package, which drives it
without downloading a browser of its own. Without them the test is skipped, except under CI=true.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.ui_support import _no_ui_env, free_port  # noqa: F401

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip
TOKEN = "e2e-token-5a1f0c9d"
SCHEDULE = """\
jobs:
  yearly:
    cron: "0 0 1 1 *"
    description: Runs by itself once a year, so any run now is the button's
    command: [echo, happy new year]
  hourly:
    every: 1h
    command: [echo, tick]
"""


def _unavailable(reason: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason}; CI=true requires the browser test", pytrace=False)
    pytest.skip(reason)


@pytest.fixture
def browser() -> Iterator[Any]:
    if not os.path.exists(CHROMIUM):
        _unavailable(f"{CHROMIUM} is missing (apt-get install chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError as exc:
        _unavailable(f"the playwright package is missing ({exc}); pip install -r requirements-dev.txt")
    with sync_playwright() as pw:
        try:
            chromium = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        except Exception as exc:
            _unavailable(f"cannot start {CHROMIUM}: {str(exc).splitlines()[0]}")
        yield chromium
        chromium.close()


@pytest.fixture
def spawn(tmp_path: Path) -> Iterator[Callable[..., subprocess.Popen[bytes]]]:
    """Start ``python clock.py ARGS`` (cwd tmp_path, output in NAME.log); stopped at teardown."""
    started: list[subprocess.Popen[bytes]] = []

    def start(name: str, *args: str, env: dict[str, str]) -> subprocess.Popen[bytes]:
        base = {k: v for k, v in os.environ.items() if not k.startswith("CLOCK_") and k not in ("DATABASE_URL", "DYNO")}
        with open(tmp_path / f"{name}.log", "wb") as log:
            proc = subprocess.Popen(
                [sys.executable, str(ROOT / "clock.py"), *args], cwd=tmp_path, env={**base, **env},
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            )  # fmt: skip
        started.append(proc)
        return proc

    yield start
    for proc in started:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)


def wait_for(predicate: Callable[[], Any], what: str, timeout: float, logs: Path) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            tails = "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')[-3000:]}" for p in logs.glob("*.log"))
            raise AssertionError(f"timed out waiting for {what}\n{tails}")
        time.sleep(0.2)


def listening(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
        return True
    return False


def test_run_now_in_the_browser_shows_the_clocks_run_in_the_history(browser, spawn, tmp_path):
    schedule = tmp_path / "schedule.yaml"
    schedule.write_text(SCHEDULE)
    state = {"CLOCK_DATABASE_URL": f"sqlite:///{tmp_path / 'state.db'}"}
    port = free_port()
    clock = spawn("clock", "-c", str(schedule), env=state)
    ui = spawn("ui", "ui", "--port", str(port), "-c", str(schedule), env={**state, "CLOCK_UI_TOKEN": TOKEN})
    wait_for(lambda: "event=clock.leader" in (tmp_path / "clock.log").read_text(), "the clock to lead", 20, tmp_path)
    wait_for(lambda: listening(port) or ui.poll() is not None, "the ui to listen", 20, tmp_path)
    assert ui.poll() is None and clock.poll() is None
    base = f"http://127.0.0.1:{port}"

    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.goto(f"{base}/")
    page.fill("#token", TOKEN)
    page.click("button:has-text('Sign in')")
    page.wait_for_selector("table.jobs")
    assert "leader-id" in page.content()  # the clocks section names the leading clock

    page.click("tr[data-job='yearly'] button:has-text('Run now')")
    page.wait_for_selector(".notice")
    assert "picks it up within a few seconds" in page.inner_text(".notice")

    page.click("a:has-text('yearly')")
    ok_manual = "table.history tbody tr:has(.s-ok):has(td:text-is('manual'))"

    def run_shown() -> bool:
        if page.locator(ok_manual).count():
            return True
        page.reload()
        return False

    wait_for(run_shown, "the manual run in the job's history", 20, tmp_path)
    row = page.inner_text(ok_manual)
    assert "ok" in row and "manual" in row
    assert page.locator("svg.chart rect[data-status='ok']").count() == 1
    page.screenshot(path=str(tmp_path / "ui.png"), full_page=True)
    page.click("a:has-text('All jobs')")
    assert "ok" in page.inner_text("tr[data-job='yearly']")
    page.screenshot(path=str(tmp_path / "ui-index.png"), full_page=True)
    out = ROOT / "tests" / "output"
    out.mkdir(exist_ok=True)
    for name in ("ui.png", "ui-index.png"):
        shutil.copy(tmp_path / name, out / name)
    assert "event=request.taken" in (tmp_path / "clock.log").read_text()
