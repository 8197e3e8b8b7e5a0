"""The status page under hostile requests, on real servers: ``python clock.py ui`` and the page mounted in a Flask
app served by Werkzeug. Large bodies are refused with 413 before they are read (the process does not grow with
them), and the sign-in form's ``next`` only ever redirects inside the page."""

from __future__ import annotations

import contextlib
import select
import socket
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from textwrap import dedent
from urllib.parse import urljoin, urlsplit

import pytest
import requests

from tests.support.processes import PYTHON, ROOT, clock_env, wait_until
from tests.support.services import free_port
from tests.support.ui import csrf_of

pytestmark = pytest.mark.usefixtures("no_ui_env")

TOKEN = "hostile-write-token-0123456789"
MB = 1 << 20
SCHEDULE = dedent("""\
    jobs:
      nightly:
        cron: "30 2 * * *"
        command: [echo, nightly]
    """)


@dataclass
class Page:
    """The status page on a real server: its process, and where the page is mounted (``prefix``)."""

    proc: subprocess.Popen[bytes]
    port: int
    prefix: str
    log: Path

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}{self.prefix}"

    def peak_rss_kb(self) -> int:
        """The process's peak resident memory so far (VmHWM), in kB."""
        status = Path(f"/proc/{self.proc.pid}/status").read_text()
        return int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmHWM:")))

    def signed_in(self) -> requests.Session:
        """A browser's session: the sign-in form fetched, the token posted, the cookies kept."""
        session = requests.Session()
        form = session.get(f"{self.base}/login", timeout=30)
        assert form.status_code == 200, form.text
        back = session.post(
            f"{self.base}/login", data={"token": TOKEN, "csrf": csrf_of(form.text)}, allow_redirects=False, timeout=30
        )
        assert back.status_code == 303, back.text
        return session


@pytest.fixture(params=["ui", "flask"])
def page(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Page]:
    """``python clock.py ui`` (the page at /), or a Flask app with the page at /clock (Werkzeug's server)."""
    schedule = tmp_path / "schedule.yaml"
    schedule.write_text(SCHEDULE)
    port = free_port()
    env = clock_env(f"sqlite:///{tmp_path}/state.db", {"CLOCK_UI_TOKEN": TOKEN})
    if request.param == "ui":
        args, prefix = [PYTHON, str(ROOT / "clock.py"), "ui", "-c", str(schedule), "--port", str(port)], ""
    else:
        args, prefix = [PYTHON, "-m", "tests.support.ui_host", str(schedule), str(port)], "/clock"
    log = tmp_path / "page.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(args, cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)
    served = Page(proc, port, prefix, log)
    try:

        def ready() -> bool:
            assert proc.poll() is None, log.read_text()
            with contextlib.suppress(requests.ConnectionError):
                return requests.get(f"{served.base}/login", timeout=5).status_code == 200
            return False

        wait_until(ready, "the status page to answer", details=log.read_text)
        yield served
    finally:
        proc.kill()
        proc.wait(timeout=10)


# ---- large bodies ------------------------------------------------------------------------------


def send_large_body(page: Page, method: str, path: str, declared: int | None, send: int) -> int:
    """Send a form body of ``send`` bytes (1 MB at a time, one buffer reused), declared as ``declared`` bytes in
    Content-Length, or chunked when None; stop sending as soon as the server answers. The response's status."""
    sock = socket.create_connection(("127.0.0.1", page.port), timeout=60)
    with sock:
        head = (
            f"{method} {page.prefix}{path} HTTP/1.1\r\nHost: 127.0.0.1:{page.port}\r\n"
            "Content-Type: application/x-www-form-urlencoded\r\nConnection: close\r\n"
        )
        head += f"Content-Length: {declared}\r\n" if declared is not None else "Transfer-Encoding: chunked\r\n"
        sock.sendall(head.encode() + b"\r\n")
        chunk = b"token=" + b"a" * (MB - 6)
        framed = chunk if declared is not None else b"%x\r\n%s\r\n" % (len(chunk), chunk)
        sent = 0
        with contextlib.suppress(OSError):  # the server may close its side once it has answered
            while sent < send and not select.select([sock], [], [], 0)[0]:
                sock.sendall(framed)
                sent += len(chunk)
            if declared is None and sent >= send:
                sock.sendall(b"0\r\n\r\n")
            sock.shutdown(socket.SHUT_WR)  # a Content-Length never reached: the server sees the end
        answer = b""
        while b"\r\n" not in answer:
            data = sock.recv(65536)
            assert data, f"no response to {method} {path}; sent {sent} bytes"
            answer += data
        return int(answer.split(b" ", 2)[1])


@pytest.mark.parametrize("declared", [600_000_000, None], ids=["content-length-600MB", "chunked-200MB"])
def test_a_large_body_is_413_on_every_route_and_is_never_read_into_memory(page: Page, declared: int | None) -> None:
    """An unauthenticated 600 MB POST to /login once grew the UI process from 58 MB to 2.4 GB."""
    page.signed_in()  # warm: templates compiled, the ledger opened
    before = page.peak_rss_kb()
    for method, path in [("POST", "/login"), ("POST", "/jobs/nightly/run"), ("POST", "/logout"), ("GET", "/")]:
        # A declared 600 MB arrives as 4 MB and an end; a chunked one goes on for 200 MB unless answered.
        status = send_large_body(page, method, path, declared, 4 * MB if declared else 200 * MB)
        assert status == 413, (method, path, page.log.read_text()[-3000:])
    grown_mb = (page.peak_rss_kb() - before) / 1024
    assert grown_mb < 50, f"the page's process grew by {grown_mb:.0f} MB"
    assert page.proc.poll() is None
    assert requests.get(f"{page.base}/login", timeout=30).status_code == 200  # still serving


def test_a_small_form_still_signs_in_and_acts(page: Page) -> None:
    session = page.signed_in()
    csrf = csrf_of(session.get(f"{page.base}/", timeout=30).text)
    done = session.post(f"{page.base}/jobs/nightly/run", data={"csrf": csrf}, allow_redirects=False, timeout=30)
    assert done.status_code == 303 and "notice=run" in done.headers["Location"]


# ---- where sign-in redirects to ----------------------------------------------------------------

INSIDE = [  # (next, where sign-in goes: a path under the page)
    ("/", "/"),
    ("/jobs/nightly", "/jobs/nightly"),
    ("/jobs/nightly?page=2", "/jobs/nightly?page=2"),
    ("/jobs/nightly?page=2&notice=<x>&next=//evil.example", "/jobs/nightly?page=2"),
    ("/jobs/<script>", "/jobs/%3Cscript%3E"),
]
HOSTILE = [
    "//evil.example",
    "///evil.example",
    "/\\evil.example",
    "\\\\evil.example",
    "/\t/evil.example",
    "/\n/evil.example",
    "/\r\nSet-Cookie: x=y",
    "\n",
    "\t",
    "",
    " /jobs/nightly",
    "https://evil.example/",
    "http:evil.example",
    "javascript:alert(1)",
    "%2F%2Fevil.example",
    "/%2F%2Fevil.example",
    "/%09/evil.example",
    "/%5Cevil.example",
    "/jobs/nightly/../../..//evil.example",
    "/login",
    "/logout",
    "/jobs/nightly/run",
    "/jobs/nightly\x00",
    "/jobs/\u2028x",
    "/" + "a" * 30_000,
    "/jobs/" + "a" * 3_000,
]


def sign_in_to(page: Page, session: requests.Session, back: str) -> requests.Response:
    form = session.get(f"{page.base}/login", timeout=30)
    data = {"token": TOKEN, "csrf": csrf_of(form.text), "next": back}
    return session.post(f"{page.base}/login", data=data, allow_redirects=False, timeout=30)


def test_sign_in_redirects_only_inside_the_page(page: Page) -> None:
    session = requests.Session()
    origin = f"http://127.0.0.1:{page.port}"
    wrong: list[tuple[str, object]] = []
    for back, expected in [*INSIDE, *((h, "/") for h in HOSTILE)]:
        response = sign_in_to(page, session, back)
        if response.status_code != 303:
            wrong.append((back[:80], response.status_code))
            continue
        location = response.headers["Location"]
        # What a browser does with it: drop tabs and newlines, resolve against the page: it stays on the page.
        cleaned = "".join(c for c in location if c not in "\t\n\r")
        target = urlsplit(urljoin(f"{origin}{page.prefix}/login", cleaned))
        inside = (target.scheme, target.netloc) == ("http", f"127.0.0.1:{page.port}")
        if location != page.prefix + expected or not inside or not target.path.startswith(page.prefix + "/"):
            wrong.append((back[:80], location[:200]))
    assert not wrong, "\n".join(map(repr, wrong)) + "\n" + page.log.read_text()[-2000:]
    assert page.proc.poll() is None


def test_a_next_carried_from_a_page_asked_for_survives_sign_in(page: Page) -> None:
    """Asking for a job's second page without a session shows the form; signing in lands on that page."""
    session = requests.Session()
    asked = session.get(f"{page.base}/jobs/nightly?page=2", timeout=30)
    assert asked.status_code == 401
    assert 'name="next" value="/jobs/nightly?page=2"' in asked.text
    response = session.post(
        f"{page.base}/login",
        data={"token": TOKEN, "csrf": csrf_of(asked.text), "next": "/jobs/nightly?page=2"},
        allow_redirects=False,
        timeout=30,
    )
    assert response.headers["Location"] == f"{page.prefix}/jobs/nightly?page=2"
