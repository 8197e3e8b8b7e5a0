"""A half-open connection to Postgres, for real: the clock's packets are dropped, its sockets stay open.

The clock runs in a network namespace of its own (tests/support/netns.py) and reaches Postgres through a proxy on
the root side of its link. ``drop()`` takes the link down: every packet either way is lost, nothing is reset, the
server keeps the clock's sessions (and the lease row names one of them). Only the clock's bounds can end this:
TCP keepalives and ``tcp_user_timeout`` on every connection, statement timeouts, and a leader that stops
claiming when it cannot renew its lease (a hung clock once held the lease this way and every slot was lost).

Waits are on state (log lines, rows, ticks); the figures printed (how long after the drop) are for reading, not
asserted. The one bound asserted is the platform's: a SIGTERM ends the clock before Heroku's SIGKILL.
"""

from __future__ import annotations

import signal
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from dynoclock.state.ledger import Ledger
from dynoclock.state.runs import Run
from tests.support.logs import parse_ts
from tests.support.netns import Link
from tests.support.processes import (
    TICK_COMMAND,
    ClockProcess,
    Clocks,
    slot_floor,
    tick_slots,
    wait_until,
    write_schedule,
)
from tests.support.state import all_runs, rows_by_slot
from tests.test_exactly_once import assert_no_slot_twice, sleep_until, slots_in, wait_ticks_after

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

SECOND = timedelta(seconds=1)
HEROKU_KILL_AFTER = 30  # seconds from SIGTERM to SIGKILL on a dyno


def tick_schedule(folder: Path) -> Path:
    return write_schedule(folder, f"jobs:\n  tick:\n    every: 1s\n    {TICK_COMMAND}\n")


def behind(link: Link, clocks: Clocks, url: str, schedule: Path, name: str) -> ClockProcess:
    """A clock inside ``link``'s namespace, on the state at ``url`` through a proxy on the link."""
    _, inside = link.forward(url)
    return clocks.start("-c", str(schedule), env={"CLOCK_DATABASE_URL": inside}, name=name, wrap=link.wrap)


def ts(event: dict[str, str]) -> datetime:
    return parse_ts(event["ts"])


def figure(what: str, start: datetime, end: datetime) -> None:
    print(f"measured: {what}: {(end - start).total_seconds():.1f} s")


def lead_then_drop(
    tmp_path: Path, url: str, clocks: Clocks, link: Link
) -> tuple[ClockProcess, ClockProcess, datetime, dict[str, str], dict[str, str]]:
    """A leader behind ``link`` running ticks, a standby on a direct connection; the link drops. Returns both
    clocks, the moment of the drop, the old leader's ``clock.lease_lost`` and the standby's ``clock.leader``."""
    schedule = tick_schedule(tmp_path)
    cut_off = behind(link, clocks, url, schedule, "cut-off")
    cut_off.wait_for("clock.leader")
    cut_off.wait_for("run.ok", count=2)
    standby = clocks(schedule)  # on the state directly
    standby.wait_for("clock.standby")
    link.drop()
    dropped_at = datetime.now(UTC)
    lost = cut_off.wait_for("clock.lease_lost", timeout=60)
    took = standby.wait_for("clock.leader", timeout=60)
    figure("drop -> clock.lease_lost on the cut-off leader", dropped_at, ts(lost))
    figure("drop -> clock.leader on the standby", dropped_at, ts(took))
    # It stopped claiming before its lease could expire in the database: never two leaders at once.
    assert ts(lost) < ts(took), (lost, took, cut_off.text()[-4000:], standby.text()[-2000:])
    assert "not renewed" in lost["note"], lost
    assert cut_off.alive(), cut_off.text()[-4000:]  # the clock is stuck on its network, not dead
    return cut_off, standby, dropped_at, lost, took


def slot_of(event: dict[str, str]) -> datetime:
    return datetime.fromisoformat(event["scheduled_for"].replace("Z", "+00:00"))


def assert_no_claim_after(clock: ClockProcess, moment: datetime) -> None:
    """No slot claimed by ``clock`` after ``moment``: no run of a slot due after it (slots are claimed 250 ms
    ahead; a second covers that). A slot it claimed before may still start late, once its start write gets
    through while the row is still its own (the write is conditional, so no other clock runs that slot)."""
    late = [e for e in clock.events("run.start") if ts(e) > moment and slot_of(e) > moment + timedelta(seconds=1)]
    assert late == [], late


def test_a_leader_whose_packets_are_dropped_stops_claiming_and_a_standby_takes_over(
    tmp_path: Path, pg_schema_url: str, pg_clocks: Clocks, netns_link: Link
) -> None:
    cut_off, standby, dropped_at, lost, took = lead_then_drop(tmp_path, pg_schema_url, pg_clocks, netns_link)
    wait_ticks_after(tmp_path, ts(took), 3)  # the new leader runs the slots
    assert_no_claim_after(cut_off, ts(lost))

    # The cut-off clock's heartbeat stops with its packets: the new leader closes what the ledger still shows it
    # claimed or running, with the reason. Then every slot has a row: ran, or recorded why not.
    store = Ledger(pg_schema_url)
    cut_off_id = cut_off.wait_for("clock.start")["clock"]

    def open_runs() -> list[Run]:
        return [r for r in all_runs(store, "tick") if r.clock == cut_off_id and r.status in ("claimed", "running")]

    wait_until(lambda: not open_runs(), "the new leader to close the cut-off clock's open runs", timeout=90)
    end = datetime.now(UTC)
    wait_ticks_after(tmp_path, end, 2)
    assert standby.stop() == 0
    slots = tick_slots(tmp_path)
    assert_no_slot_twice(slots)
    rows = rows_by_slot(store, "tick")
    window = slots_in(min(slots), max(slots), SECOND)
    assert [s for s in window if s not in rows] == [], "slots with no ledger row"
    ran = set(slots)
    statuses = {s: (rows[s].status, rows[s].clock == cut_off_id) for s in window}
    for slot, (status, by_cut_off) in statuses.items():
        if status == "ok":
            assert slot in ran, (slot, status)
        elif status == "interrupted":  # claimed by the cut-off clock; it ran it or not, nobody else did
            assert by_cut_off, (slot, status)
        else:
            assert status in ("skipped", "missed") and slot not in ran, (slot, status, by_cut_off)
    # Only around the drop did slots go unrun (the lease's expiry), never after the new leader took over, but for
    # one case: a slot the cut-off clock claimed and never started is run by the new leader once that clock counts
    # as dead, however late, and a slot falling due while that run runs is skipped (overlap: skip).
    reclaimed = [ts(e) for e in standby.events("run.reclaimed")]
    after = [rows[s] for s in window if s > ts(took) + SECOND and s not in ran]
    unrun = [
        r
        for r in after
        if not (overlapped(r) and any(0 <= (r.scheduled_for - t).total_seconds() <= 2 for t in reclaimed))
    ]
    assert unrun == [], (unrun, standby.text()[-6000:])
    # Before the drop every slot ran, unless the run before it was still running (overlap: skip, recorded so).
    before = [rows[s] for s in window if s < dropped_at - 2 * SECOND and s not in ran]
    assert [r for r in before if not overlapped(r)] == [], (before, cut_off.text()[-6000:])


def overlapped(run: Run) -> bool:
    """Recorded skipped because the job's previous run was still running (``overlap: skip``)."""
    return run.status == "skipped" and "overlap" in (run.error or "")


def test_a_cut_off_leader_rejoins_as_standby_when_its_packets_flow_again(
    tmp_path: Path, pg_schema_url: str, pg_clocks: Clocks, netns_link: Link
) -> None:
    cut_off, standby, _, lost, took = lead_then_drop(tmp_path, pg_schema_url, pg_clocks, netns_link)
    wait_ticks_after(tmp_path, ts(took), 2)
    netns_link.restore()
    restored_at = datetime.now(UTC)
    rejoined = cut_off.wait_for("clock.standby", timeout=60)
    figure("link restored -> clock.standby on the old leader", restored_at, ts(rejoined))
    wait_ticks_after(tmp_path, ts(rejoined), 3)  # the new leader goes on; the old one claims nothing
    assert_no_claim_after(cut_off, ts(lost))
    assert cut_off.events("clock.restarted") == []  # the scheduler process was stuck on its network, never frozen
    assert cut_off.stop() == 0
    wait_ticks_after(tmp_path, datetime.now(UTC), 2)
    assert standby.stop() == 0
    slots = tick_slots(tmp_path)
    assert_no_slot_twice(slots)
    rows = rows_by_slot(Ledger(pg_schema_url), "tick")
    # The outcomes the old leader could not write while cut off were kept and written once it could.
    assert {s: rows[s].status for s in slots if rows[s].status != "ok"} == {}
    window = slots_in(min(slots), max(slots), SECOND)
    assert [s for s in window if s not in rows] == [], "slots with no ledger row"
    assert all(rows[s].status in ("skipped", "missed") for s in window if s not in set(slots))


def test_a_lone_clock_whose_packets_are_dropped_still_stops_on_sigterm(
    tmp_path: Path, pg_schema_url: str, pg_clocks: Clocks, netns_link: Link
) -> None:
    clock = behind(netns_link, pg_clocks, pg_schema_url, tick_schedule(tmp_path), "alone")
    clock.wait_for("clock.leader")
    clock.wait_for("run.ok", count=2)
    netns_link.drop()
    dropped_at = datetime.now(UTC)
    # The next slot's claim now waits on the dead link, as do the lease's renewal and the heartbeat: the SIGTERM
    # comes in the middle of that, before any of those calls has found its connection dead.
    sleep_until(slot_floor(dropped_at, SECOND) + 1.5 * SECOND)
    termed_at = clock.signal(signal.SIGTERM)
    try:
        code = clock.wait(timeout=HEROKU_KILL_AFTER)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"still running {HEROKU_KILL_AFTER} s after SIGTERM:\n{clock.text()[-6000:]}") from None
    exited_at = datetime.now(UTC)
    assert code == 0, clock.text()[-6000:]
    assert clock.events("clock.stop"), clock.text()[-6000:]
    figure("drop -> SIGTERM", dropped_at, termed_at)
    figure("SIGTERM -> exit 0, packets still dropped", termed_at, exited_at)
    assert_no_slot_twice(tick_slots(tmp_path))
