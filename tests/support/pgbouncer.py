"""A real PgBouncer in transaction pooling (what Heroku's connection pooling runs) in front of the machine's
PostgreSQL, started by the tests; each test gets a database of its own behind it (PgBouncer passes no
``options``, so the per-schema URLs of the other tests cannot be used through it)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import sqlalchemy as sa

from tests.support.postgres import admin_engine
from tests.support.services import free_port, unavailable

INI = """[databases]
* = host=127.0.0.1 port=5432

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {port}
unix_socket_dir =
auth_type = trust
auth_file = {folder}/users.txt
pool_mode = transaction
default_pool_size = 2
max_client_conn = 200
logfile = {folder}/pgbouncer.log
pidfile = {folder}/pgbouncer.pid
"""


@dataclass
class Bouncer:
    port: int
    folder: Path

    def url(self, database: str) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def log(self) -> str:
        path = self.folder / "pgbouncer.log"
        return path.read_text(errors="replace") if path.exists() else ""


@pytest.fixture(name="pgbouncer", scope="session")
def pgbouncer_fixture(pg_admin: sa.Engine) -> Iterator[Bouncer]:
    binary = shutil.which("pgbouncer") or ("/usr/sbin/pgbouncer" if os.path.exists("/usr/sbin/pgbouncer") else None)
    if binary is None:
        unavailable("PgBouncer", "not installed (apt-get install pgbouncer)")
    # PgBouncer will not run as root: it runs as postgres, which must reach this folder (pytest's own tmp folders
    # are private to root), and writes its log here.
    folder = Path(tempfile.mkdtemp(prefix="dynoclock-pgbouncer-"))
    folder.chmod(0o777)
    (folder / "users.txt").write_text('"postgres" ""\n')
    port = free_port()
    (folder / "pgbouncer.ini").write_text(INI.format(port=port, folder=folder))
    user = ["-u", "postgres"] if os.geteuid() == 0 else []
    proc = subprocess.Popen([str(binary), *user, str(folder / "pgbouncer.ini")], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)  # fmt: skip
    bouncer = Bouncer(port, folder)
    deadline = time.monotonic() + 20
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                unavailable("PgBouncer", f"did not start: {bouncer.log()[-2000:]}")
            time.sleep(0.05)
    try:
        yield bouncer
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(name="bounced_db")
def bounced_db_fixture(pgbouncer: Bouncer, pg_admin: sa.Engine) -> Iterator[str]:
    """The URL, through PgBouncer, of a fresh database of this test's own (dropped at teardown)."""
    name = f"bounce_{uuid.uuid4().hex[:10]}"
    with admin_engine().connect() as conn:
        conn.execute(sa.text(f"CREATE DATABASE {name}"))
    try:
        yield pgbouncer.url(name)
    finally:
        from dynoclock.state import engines

        for key in [k for k in engines._engines if name in k[0]]:
            engines._engines.pop(key).dispose()
        with admin_engine().connect() as conn:
            conn.execute(sa.text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
