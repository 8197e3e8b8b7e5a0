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
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.processes import ROOT, Clocks, wait_until
from tests.support.services import free_port, unavailable

pytestmark = pytest.mark.usefixtures("no_ui_env")

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


@pytest.fixture
def browser() -> Iterator[Any]:
    if not os.path.exists(CHROMIUM):
        unavailable("Chromium", f"{CHROMIUM} is missing (apt-get install chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError as exc:
        unavailable("playwright", f"the package is missing ({exc}); pip install -r requirements-dev.txt")
    with sync_playwright() as pw:
        try:
            chromium = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        except Exception as exc:
            unavailable("Chromium", f"cannot start {CHROMIUM}: {str(exc).splitlines()[0]}")
        yield chromium
        chromium.close()


def log_tails(folder: Path) -> str:
    """The end of every process's log in ``folder``: what a timeout shows."""
    return "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')[-3000:]}" for p in folder.glob("*.log"))


def listening(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
        return True
    return False


def test_run_now_in_the_browser_shows_the_clocks_run_in_the_history(browser, start_clock: Clocks, tmp_path):
    schedule = tmp_path / "schedule.yaml"
    schedule.write_text(SCHEDULE)
    port = free_port()
    clock = start_clock(schedule)  # the clock and the ui share start_clock's state file
    ui = start_clock.start("ui", "--port", str(port), "-c", str(schedule), env={"CLOCK_UI_TOKEN": TOKEN}, name="ui")
    clock.wait_for("clock.leader", timeout=20)

    def logs() -> str:
        return log_tails(tmp_path)

    wait_until(lambda: listening(port) or not ui.alive(), "the ui to listen", timeout=20, every=0.2, details=logs)
    assert ui.alive() and clock.alive()
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

    wait_until(run_shown, "the manual run in the job's history", timeout=20, every=0.2, details=logs)
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
    assert "event=request.taken" in clock.text()
