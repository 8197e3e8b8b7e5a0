"""The machine's Redis for the enqueue and Celery tests, each test in a space of its own; a TLS Redis too.

Every test gets a unique token: its queue names, RQ job ids (through the clock job's id) and worker
names carry it, and at teardown every key holding it is deleted, so tests can share the server (and
run at the same time as another copy of the suite). They use a database of their own as well
(TEST_REDIS_URL, default db 11; Celery's broker the next one), never the app's db 0.

Unreachable, or no TLS Redis can be made: skipped, or failed under CI=true (``services.unavailable``).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.support.services import free_port, unavailable

REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/11")


def with_db(url: str, db: int) -> str:
    """``url`` pointing at database ``db``."""
    base = url.split("?", 1)[0].rstrip("/")
    head, _, last = base.rpartition("/")
    if last.isdigit() and "//" in head:
        base = head
    return f"{base}/{db}"


def db_of(url: str) -> int:
    last = url.split("?", 1)[0].rstrip("/").rpartition("/")[2]
    return int(last) if last.isdigit() else 0


@dataclass
class RedisSpace:
    """One test's share of Redis: ``url`` (its database), ``token`` (in every name it creates)."""

    url: str
    token: str
    client: Any  # redis.Redis

    def name(self, what: str) -> str:
        """A queue, job or worker name unique to this test."""
        return f"{what}-{self.token}"

    def keys(self) -> list[str]:
        return sorted(k.decode() for k in self.client.scan_iter(match=f"*{self.token}*", count=1000))

    def clean(self) -> None:
        for key in self.keys():
            self.client.delete(key)
        for shared in ("rq:queues", "rq:workers"):  # sets of all queues / workers: remove only ours
            for member in self.client.smembers(shared):
                if self.token in member.decode():
                    self.client.srem(shared, member)


@pytest.fixture(scope="session", name="redis_server")
def redis_server_fixture() -> str:
    """The test Redis URL, once it answered PING; unreachable: skip (fail under CI=true)."""
    try:
        import redis

        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2, socket_timeout=2).ping()
    except Exception as exc:
        unavailable("Redis", f"unreachable at {REDIS_URL} (set TEST_REDIS_URL): {exc}")
    return REDIS_URL


def _space(url: str) -> Iterator[RedisSpace]:
    import redis

    client = redis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=10)
    space = RedisSpace(url, uuid.uuid4().hex[:12], client)
    try:
        yield space
    finally:
        space.clean()
        client.close()


@pytest.fixture(name="redis_space")
def redis_space_fixture(redis_server: str) -> Iterator[RedisSpace]:
    """This test's space in the RQ database; its keys are deleted afterwards."""
    yield from _space(redis_server)


@pytest.fixture(name="broker_space")
def broker_space_fixture(redis_server: str) -> Iterator[RedisSpace]:
    """This test's space in the Celery broker's database (the one after the RQ tests')."""
    yield from _space(with_db(redis_server, db_of(redis_server) + 1))


# ---- a TLS Redis with a self-signed certificate, as Heroku Redis has ------------------------------


@dataclass
class TlsRedis:
    url: str  # rediss://127.0.0.1:PORT/0
    cert: Path


@pytest.fixture(scope="module", name="tls_redis")
def tls_redis_fixture(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsRedis]:
    """A throwaway ``redis-server --tls-port`` with a certificate made by openssl; skipped (failed under
    CI=true) if either is missing or this redis-server was built without TLS."""
    server, openssl = shutil.which("redis-server"), shutil.which("openssl")
    if not server or not openssl:
        unavailable("a TLS Redis", "it needs redis-server and openssl on PATH")
    assert server and openssl
    folder = tmp_path_factory.mktemp("tls-redis")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True, timeout=30,
    )  # fmt: skip
    port = free_port()
    log = folder / "redis.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [server, "--port", "0", "--tls-port", str(port), "--tls-cert-file", str(cert), "--tls-key-file",
             str(key), "--tls-auth-clients", "no", "--save", "", "--appendonly", "no", "--dir", str(folder)],
            stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        url = f"rediss://127.0.0.1:{port}/0"
        import redis

        client = redis.Redis.from_url(url, ssl_cert_reqs=None, socket_connect_timeout=1)
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                break
            except Exception as exc:
                if proc.poll() is not None or time.monotonic() > deadline:
                    tail = log.read_text()[-500:]
                    unavailable("a TLS Redis", f"redis-server --tls-port did not start ({exc}): {tail}")
                time.sleep(0.05)
        client.close()
        yield TlsRedis(url, cert)
    finally:
        proc.terminate()
        proc.wait(timeout=10)
