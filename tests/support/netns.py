"""A network namespace behind a link whose packets a test can drop: a real half-open connection.

``Link`` makes a network namespace (``dynoclock-<pid>-<n>``) joined to the root namespace by a veth pair: root side
10.200.N.1/30, namespace side 10.200.N.2/30 (N free on this machine, picked under a lock file so that parallel
tests never share one). A process started with ``link.wrap`` (``ip netns exec NAME``, which execs: the pid stays the
process's) lives in it, and reaches the machine only through that pair: ``link.forward`` starts a ``Proxy``
listening on 10.200.N.1 that forwards to Postgres on loopback.

``drop()`` sets the root side of the pair DOWN: every packet, either way, vanishes; nothing is reset and nothing
inside the namespace is told. Its side keeps its address, its route and a permanent neighbour entry for
10.200.N.1; with no carrier its packets are discarded after they left TCP (the kernel's no-carrier queue reports
success), as a network that loses them would. The Postgres server keeps its sessions (its peer is the proxy),
so the clock inside holds a half-open connection, and only its keepalives and ``tcp_user_timeout`` can find out.

Why not ``tc``: this kernel has no ``netem`` and no drop action; and a queue that drops on the namespace's own
side (``pfifo limit 0``) reports every drop to TCP as local congestion, which TCP retries without counting a
keepalive probe or a retransmission, so a connection idle at that moment is never found dead (measured: still
open after 40 s, where a dropped link ends it in about 10 s). That is not what a lost network looks like.

Every link is removed at teardown (the fixture), and links left by a test process that died are removed by the
next one. The root namespace's ``lo`` and other interfaces are never touched. Without root, ``ip`` or network
namespaces, a test skips (fails under CI=true: ``services.unavailable``).
"""

from __future__ import annotations

import contextlib
import fcntl
import itertools
import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator

import pytest
from sqlalchemy.engine import make_url

from tests.support.proxy import Proxy
from tests.support.services import unavailable

PREFIX = "dynoclock-"
LOCK = "/tmp/dynoclock-netns.lock"
_counter = itertools.count()


class LinkError(RuntimeError):
    """A command of ``ip`` failed."""


def ip(*args: str, check: bool = True) -> str:
    """Run ``ip ARGS``; its output (raises LinkError with its message when it fails and ``check``)."""
    done = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)
    if check and done.returncode != 0:
        raise LinkError(f"ip {' '.join(args)}: {(done.stderr or done.stdout).strip()}")
    return done.stdout


class Link:
    """A network namespace and its veth pair to the root namespace (see the module's docstring)."""

    def __init__(self) -> None:
        self.name = f"{PREFIX}{os.getpid()}-{next(_counter)}"
        self.index = -1
        self.proxies: list[Proxy] = []
        with open(LOCK, "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            _remove_orphans()
            self.index = _free_index()
            self.root_dev, self.ns_dev = f"dcr{self.index}", f"dcn{self.index}"
            self.host_ip, self.ns_ip = f"10.200.{self.index}.1", f"10.200.{self.index}.2"
            try:
                self._create()
            except LinkError:
                self.close()
                raise

    @property
    def wrap(self) -> list[str]:
        """The command prefix that runs a program inside the namespace."""
        return ["ip", "netns", "exec", self.name]

    def _create(self) -> None:
        ip("netns", "add", self.name)
        ip("link", "add", self.root_dev, "type", "veth", "peer", "name", self.ns_dev, "netns", self.name)
        ip("addr", "add", f"{self.host_ip}/30", "dev", self.root_dev)
        ip("link", "set", "dev", self.root_dev, "up")
        ip("-n", self.name, "addr", "add", f"{self.ns_ip}/30", "dev", self.ns_dev)
        ip("-n", self.name, "link", "set", "dev", "lo", "up")
        ip("-n", self.name, "link", "set", "dev", self.ns_dev, "up")
        mac = re.search(r"link/ether ([0-9a-f:]{17})", ip("-o", "link", "show", "dev", self.root_dev))
        assert mac, f"no MAC address on {self.root_dev}"
        # Permanent: a carrier loss keeps it, so the namespace never learns of the drop from a failed ARP lookup.
        ip("-n", self.name, "neigh", "replace", self.host_ip, "lladdr", mac.group(1), "dev", self.ns_dev,
           "nud", "permanent")  # fmt: skip
        self._wait_carrier()

    def forward(self, url: str) -> tuple[Proxy, str]:
        """A Proxy on the root side to the database of ``url``, and the URL that reaches it from inside."""
        upstream = make_url(url)
        proxy = Proxy(upstream.host or "127.0.0.1", upstream.port or 5432, listen=self.host_ip).start()
        self.proxies.append(proxy)
        inside = upstream.set(host=self.host_ip, port=proxy.port).render_as_string(hide_password=False)
        return proxy, inside

    def drop(self) -> None:
        """From now on every packet between the namespace and the machine is lost, silently, both ways."""
        ip("link", "set", "dev", self.root_dev, "down")

    def restore(self) -> None:
        """Packets flow again (connections not yet found dead resume)."""
        ip("link", "set", "dev", self.root_dev, "up")
        self._wait_carrier()

    def _wait_carrier(self) -> None:
        deadline = time.monotonic() + 10
        while "LOWER_UP" not in ip("-n", self.name, "-o", "link", "show", "dev", self.ns_dev):
            if time.monotonic() > deadline:
                raise LinkError(f"{self.ns_dev} in {self.name} has no carrier")
            time.sleep(0.05)

    def pids(self) -> list[int]:
        """The processes living in the namespace."""
        return [int(pid) for pid in ip("netns", "pids", self.name, check=False).split()]

    def close(self) -> None:
        """Stop the proxies, end what still runs inside (only this test's processes), remove the namespace and
        with it the veth pair."""
        for proxy in self.proxies:
            proxy.cut()
        for pid in self.pids():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        ip("netns", "del", self.name, check=False)
        if self.index >= 0 and ip("link", "show", "dev", self.root_dev, check=False):
            ip("link", "del", "dev", self.root_dev, check=False)


def _free_index() -> int:
    """An N whose 10.200.N.0/30 no interface of the root namespace uses, starting from one of this process's."""
    used = {int(n) for n in re.findall(r"inet 10\.200\.(\d+)\.", ip("-o", "-4", "addr", "show"))}
    start = os.getpid() % 250
    for step in range(250):
        index = 1 + (start + step) % 250
        if index not in used:
            return index
    raise LinkError("no free 10.200.N.0/30 network")


def _remove_orphans() -> None:
    """Remove the namespaces of test processes that are gone (killed before their teardown)."""
    for line in ip("netns", "list", check=False).splitlines():
        match = re.match(rf"{PREFIX}(\d+)-\d+\b", line)
        if match and not _alive(int(match.group(1))):
            name = line.split()[0]
            for pid in ip("netns", "pids", name, check=False).split():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(pid), signal.SIGKILL)
            ip("netns", "del", name, check=False)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@pytest.fixture(name="netns_link")
def netns_link_fixture() -> Iterator[Link]:
    """A Link of this test's own, removed at teardown; skips (fails under CI=true) where none can be made."""
    if shutil.which("ip") is None:
        unavailable("network namespaces", "no `ip` command (iproute2)")
    if os.geteuid() != 0:
        unavailable("network namespaces", "making one needs root")
    try:
        link = Link()
    except LinkError as exc:
        unavailable("network namespaces", str(exc))
    try:
        yield link
    finally:
        link.close()
