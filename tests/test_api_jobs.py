"""Runtime jobs from the app (``dynoclock.connect``), on SQLite and Postgres: validation with key paths, JSON-only
arguments, idempotent adds, schedule.yaml ids refused, unknown ids, the app's own transaction, the schema upgrade,
and claims that commit only under the job's version."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session

import dynoclock
from dynoclock.client import Scheduler
from dynoclock.state.jobstore import JobStore
from dynoclock.state.ledger import Ledger
from dynoclock.state.publish import publish_schedule
from dynoclock.state.tables import SCHEMA_VERSION, jobs, meta

SOON = datetime(2030, 1, 1, 9, 0, tzinfo=UTC)


@pytest.fixture(name="app")
def app_fixture(state_db: str) -> Scheduler:
    return dynoclock.connect(state_db)


def row_of(app: Scheduler, job_id: str) -> dict[str, object]:
    with app.ledger.engine.connect() as conn:
        row = conn.execute(sa.select(jobs).where(jobs.c.id == job_id)).first()
    assert row is not None, job_id
    return dict(row._mapping)


def test_specs_are_validated_as_schedule_yaml_jobs_with_key_paths(app: Scheduler) -> None:
    cases: list[tuple[dict[str, Any], str]] = [
        ({"cron": "0 9 32 * *", "python": "myapp.jobs:digest"}, "jobs.digest-42.cron: bad day-of-month '32'"),
        ({"every": "1h", "python": "myapp.jobs:digest", "retris": 2},
         "jobs.digest-42.retris: unknown key 'retris'; did you mean 'retries'?"),
        ({"every": "1h"}, "jobs.digest-42: expected exactly one action"),
        ({"every": "1h", "cron": "* * * * *", "command": "true"}, "jobs.digest-42: expected exactly one trigger"),
        ({"every": "1h", "python": "myapp.jobs:digest", "timezone": "Mars/Base"}, "jobs.digest-42.timezone: unknown"),
        ({"every": "1h", "python": "not a target"}, "jobs.digest-42.python: expected module:function"),
    ]  # fmt: skip
    for spec, message in cases:
        with pytest.raises(dynoclock.ConfigError) as caught:
            app.add("digest-42", **spec)
        assert str(caught.value).startswith(message), (spec, str(caught.value))
    with pytest.raises(dynoclock.ConfigError, match=r"^jobs\.Bad Id: job id 'Bad Id' must be"):
        app.add("Bad Id", every="1h", command="true")
    assert app.jobs() == []


def test_arguments_are_json_only(app: Scheduler) -> None:
    for value, kind in ((SOON, "datetime"), (Decimal("1.5"), "Decimal"), ({1, 2}, "set"), (object(), "object")):
        with pytest.raises(dynoclock.ConfigError) as caught:
            app.add("remind", every="1h", python="myapp.jobs:remind", kwargs={"user": {"when": value}})
        assert str(caught.value) == (
            "jobs.remind.kwargs.user.when: expected JSON data (text, numbers, true/false, null, lists, mappings), "
            f"got a {kind}"
        )
    with pytest.raises(dynoclock.ConfigError, match=r"^jobs\.remind\.kwargs\.x: nan is not JSON"):
        app.add("remind", every="1h", python="myapp.jobs:remind", kwargs={"x": float("nan")})
    app.add("remind", every="1h", python="myapp.jobs:remind", args=[1, "a", None, [True]], kwargs={"n": {"k": 1.5}})
    assert [(job["spec"] or {}).get("kwargs") for job in app.jobs()] == [{"n": {"k": 1.5}}]


def test_dollar_signs_are_taken_literally(app: Scheduler, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SECRET_TOKEN", "s3cr3t")
    app.add("literal", every="1h", command=["echo", "${SECRET_TOKEN}", "$$", "$HOME"])
    (job,) = app.jobs()
    assert job["spec"] is not None and job["spec"]["command"] == ["echo", "${SECRET_TOKEN}", "$$", "$HOME"]


def test_adding_twice_is_one_job_and_another_spec_needs_replace(app: Scheduler) -> None:
    app.add("digest-42", cron="0 9 * * *", timezone="Europe/Paris", python="myapp.jobs:digest", kwargs={"u": 42})
    app.add("digest-42", python="myapp.jobs:digest", kwargs={"u": 42}, timezone="Europe/Paris", cron="0 9 * * *")
    assert row_of(app, "digest-42")["version"] == 1
    with pytest.raises(dynoclock.ConfigError, match="another spec; pass replace=True"):
        app.add("digest-42", cron="0 8 * * *", python="myapp.jobs:digest")
    app.add("digest-42", cron="0 8 * * *", python="myapp.jobs:digest", replace=True)
    row = row_of(app, "digest-42")
    assert row["version"] == 2 and row["kind"] == "cron"
    (job,) = app.jobs()
    assert job["id"] == "digest-42" and job["origin"] == "api" and job["paused"] is False
    assert job["next"] is not None and job["next"].hour == 8 and job["next"] > datetime.now(UTC)


def test_at_is_idempotent_by_key_and_generates_ids_without_one(app: Scheduler) -> None:
    assert app.at(SOON, key="remind-7", python="myapp.jobs:remind", kwargs={"id": 7}) == "remind-7"
    assert app.at(SOON, key="remind-7", python="myapp.jobs:remind", kwargs={"id": 7}) == "remind-7"
    first = app.at(SOON + timedelta(hours=1), python="myapp.jobs:remind")
    second = app.at(SOON + timedelta(hours=1), python="myapp.jobs:remind")
    assert first != second and first.startswith("at-")
    listed = {job["id"]: job for job in app.jobs()}
    assert set(listed) == {"remind-7", first, second}
    assert listed["remind-7"]["next"] == SOON and listed["remind-7"]["kind"] == "at"
    assert row_of(app, "remind-7")["version"] == 1
    with pytest.raises(dynoclock.ConfigError, match="another spec"):
        app.at(SOON + timedelta(minutes=5), key="remind-7", python="myapp.jobs:remind", kwargs={"id": 7})
    naive = app.at(datetime(2030, 1, 1, 10, 0), key="naive", command="true")  # naive: UTC
    assert {job["id"]: job["next"] for job in app.jobs()}[naive] == datetime(2030, 1, 1, 10, 0, tzinfo=UTC)


def test_at_many_inserts_in_one_transaction(app: Scheduler) -> None:
    items = [{"when": SOON + timedelta(seconds=n), "key": f"r-{n}", "command": "true"} for n in range(500)]
    ids = app.at_many(items)
    assert ids == [f"r-{n}" for n in range(500)]
    assert app.at_many(items[:10]) == ids[:10]  # again: nothing changes
    assert len(app.store.one_offs(None, SOON + timedelta(days=1))) == 500
    with pytest.raises(dynoclock.ConfigError, match=r"^jobs\.r-x\.timeout"):  # one bad item: none written
        app.at_many([{"when": SOON, "key": "new-1", "command": "true"},
                     {"when": SOON, "key": "r-x", "command": "true", "timeout": "soon"}])  # fmt: skip
    assert "new-1" not in {job["id"] for job in app.jobs()}


def test_an_add_refused_part_way_leaves_none_of_its_rows_in_the_apps_transaction(app: Scheduler) -> None:
    app.at(SOON, key="taken", command="true")
    mixed = [{"when": SOON, "key": "fresh-1", "command": "true"},
             {"when": SOON, "key": "taken", "command": "false"},  # another spec under a live id: refused
             {"when": SOON, "key": "fresh-2", "command": "true"}]  # fmt: skip
    with app.ledger.engine.connect() as conn, conn.begin():
        with pytest.raises(dynoclock.ConfigError, match=r"^jobs\.taken: a job with this id exists"):
            app.at_many(mixed, connection=conn)
        app.add("kept", every="1h", command="true", connection=conn)  # the app goes on and commits
    assert {job["id"] for job in app.jobs()} == {"taken", "kept"}
    assert row_of(app, "taken")["spec"] == '{"at":"2030-01-01T09:00:00+00:00","command":"true"}'
    ids = app.at_many([mixed[0], {"when": SOON, "key": "taken", "command": "true"}, mixed[2]])  # known + new
    assert ids == ["fresh-1", "taken", "fresh-2"] and row_of(app, "taken")["version"] == 1
    app.at_many([{"when": SOON + timedelta(hours=1), "key": "taken", "command": "true"}], replace=True)
    assert row_of(app, "taken")["version"] == 2
    assert {job["id"]: job["next"] for job in app.jobs()}["taken"] == SOON + timedelta(hours=1)


def test_update_and_remove(app: Scheduler) -> None:
    app.add("poll", every="10s", command="true", timeout="5s")
    app.update("poll", every="5s")
    spec = row_of(app, "poll")
    assert spec["version"] == 2 and '"every":"5s"' in str(spec["spec"]) and '"timeout":"5s"' in str(spec["spec"])
    app.update("poll", cron="*/5 * * * *", timeout=None)  # a new trigger replaces the old; None removes a key
    (job,) = app.jobs()
    assert job["spec"] == {"cron": "*/5 * * * *", "command": "true"} and job["kind"] == "cron"
    with pytest.raises(dynoclock.ConfigError, match=r"^jobs\.poll\.every"):
        app.update("poll", every="never")
    app.remove("poll")
    assert app.jobs() == []
    with pytest.raises(dynoclock.UnknownJob):
        app.remove("poll")
    app.add("poll", every="1h", command="true")  # an id removed may be used again
    assert [job["id"] for job in app.jobs()] == ["poll"]


def test_unknown_ids_are_errors_for_every_call(app: Scheduler) -> None:
    calls: list[Callable[[], object]] = [
        lambda: app.update("ghost", every="1h"), lambda: app.remove("ghost"), lambda: app.pause("ghost"),
        lambda: app.resume("ghost"), lambda: app.run_now("ghost"),
    ]  # fmt: skip
    for call in calls:
        with pytest.raises(dynoclock.UnknownJob) as caught:
            call()
        assert isinstance(caught.value, KeyError)
        assert str(caught.value) == "no job 'ghost': not in the schedule.yaml the clock runs, nor added from the app"
    assert app.controls.paused() == {} and app.controls.pending_requests() == []


def test_schedule_yaml_ids_are_refused_for_add_update_remove_but_not_controls(app: Scheduler) -> None:
    publish_schedule(JobStore(app.ledger), {"nightly": {"cron": "0 3 * * *", "timezone": "UTC"}})
    refused: list[Callable[[], object]] = [
        lambda: app.add("nightly", every="1h", command="true"), lambda: app.update("nightly", every="1h"),
        lambda: app.remove("nightly"),
    ]  # fmt: skip
    for call in refused:
        with pytest.raises(dynoclock.ConfigError, match=r"^jobs\.nightly: cannot (add|update|remove) a schedule"):
            call()
    app.pause("nightly")
    assert set(app.controls.paused()) == {"nightly"}
    app.resume("nightly")
    app.run_now("nightly")
    assert [r["job"] for r in app.controls.pending_requests()] == ["nightly"]
    (job,) = app.jobs()
    assert job["origin"] == "schedule" and job["next"] is not None and job["next"].hour == 3 and job["spec"] is None
    publish_schedule(JobStore(app.ledger), {})  # the next schedule has no such job: the id is free again
    app.add("nightly", every="1h", command="true")
    assert [(job["id"], job["origin"]) for job in app.jobs()] == [("nightly", "api")]


def test_publishing_the_schedule_writes_only_what_changed_across_chunks(
    app: Scheduler, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("dynoclock.state.publish.CHUNK", 3)  # 8 ids: three chunks
    store = JobStore(app.ledger)
    specs: dict[str, dict[str, object]] = {f"job-{i}": {"every": f"{i + 1}m", "anchor": "2030-01-01T00:00:00+00:00"}
                                            for i in range(8)}  # fmt: skip
    app.add("job-5", every="1h", command="true")  # an app's job under an id schedule.yaml takes
    app.add("mine", every="1h", command="true")
    assert publish_schedule(store, specs) == ["job-5"]
    versions = {job_id: row_of(app, job_id)["version"] for job_id in specs}
    assert versions == {**{job_id: 1 for job_id in specs}, "job-5": 2}
    assert row_of(app, "job-5")["origin"] == "schedule" and row_of(app, "mine")["origin"] == "api"
    assert publish_schedule(store, specs) == []  # the same schedule again: no row changes
    assert {job_id: row_of(app, job_id)["version"] for job_id in specs} == versions
    specs["job-1"] = {"cron": "0 3 * * *", "timezone": "UTC"}
    del specs["job-7"]
    assert publish_schedule(store, specs) == []
    assert row_of(app, "job-1")["version"] == 2 and row_of(app, "job-1")["kind"] == "cron"
    assert row_of(app, "job-7")["removed_at"] is not None and row_of(app, "job-7")["version"] == 2
    assert [row_of(app, job_id)["version"] for job_id in ("job-0", "job-2", "job-6")] == [1, 1, 1]
    specs["job-7"] = {"every": "8m", "anchor": "2030-01-01T00:00:00+00:00"}  # back: the tombstone comes alive
    publish_schedule(store, specs)
    assert row_of(app, "job-7")["removed_at"] is None and row_of(app, "job-7")["version"] == 3
    assert sorted(row.id for row in store.recurring("api")) == ["mine"]
    assert len(store.recurring()) == 9


def test_a_job_exists_iff_the_apps_transaction_commits(app: Scheduler) -> None:
    engine = app.ledger.engine
    with engine.connect() as conn:
        with conn.begin() as tx:
            app.add("rolled-back", every="1h", command="true", connection=conn)
            app.at(SOON, key="also-rolled-back", command="true", connection=conn)
            tx.rollback()
        with conn.begin():
            app.add("committed", every="1h", command="true", connection=conn)
    with Session(engine) as session:
        app.at(SOON, key="session-rolled-back", command="true", connection=session)
        session.rollback()
    with Session(engine) as session, session.begin():
        app.at(SOON, key="session-committed", command="true", connection=session)
    assert {job["id"] for job in app.jobs()} == {"committed", "session-committed"}


def test_changes_raise_the_counter_the_leader_polls(app: Scheduler) -> None:
    store = JobStore(app.ledger)
    before = store.seq()
    app.add("a", every="1h", command="true")
    app.add("a", every="1h", command="true")  # no change, no wake
    after_add = store.seq()
    app.pause("a")
    app.remove("a")
    assert before < after_add < store.seq()
    changed = store.changed_since(before, SOON)
    assert [(row.id, row.removed) for row in changed] == [("a", True)]


def test_a_claim_commits_only_under_the_jobs_current_version(app: Scheduler) -> None:
    ledger = Ledger(app.ledger.url)
    app.add("poll", every="10s", command="true")
    slot = datetime(2030, 1, 1, tzinfo=UTC)
    stale: set[str] = set()
    assert ledger.claim("r1", "poll", slot, "clock-a", version=1, stale=stale) and not stale
    app.update("poll", every="5s")
    assert not ledger.claim("r2", "poll", slot + timedelta(seconds=5), "clock-a", version=1, stale=stale)
    assert stale == {"r2"}
    assert ledger.claim("r3", "poll", slot + timedelta(seconds=5), "clock-a", version=2)
    app.remove("poll")
    assert not ledger.claim("r4", "poll", slot + timedelta(seconds=10), "clock-a", version=2, stale=stale)
    assert stale == {"r2", "r4"}
    assert [run.run_id for run in ledger.history("poll")] == ["r3", "r1"]


def test_schema_3_is_upgraded_to_4(state_db: str) -> None:
    ledger = Ledger(state_db)
    ledger.ensure_schema()
    with ledger.engine.begin() as conn:  # a database as a clock of schema 3 left it
        jobs.drop(conn)
        conn.execute(meta.update().where(meta.c.key == "schema_version").values(value="3"))
    app = dynoclock.connect(state_db)
    with app.ledger.engine.connect() as conn:
        version = conn.execute(sa.select(meta.c.value).where(meta.c.key == "schema_version")).scalar()
    assert version == str(SCHEMA_VERSION) == "4"
    app.add("after-upgrade", every="1h", command="true")
    assert [job["id"] for job in app.jobs()] == ["after-upgrade"]


def test_finished_one_offs_leave_the_list_and_old_rows_are_pruned(app: Scheduler) -> None:
    from tests.support.history import finish_run

    store = JobStore(app.ledger)
    app.add("gone", every="1h", command="true")
    app.remove("gone")
    app.at(SOON, key="done", command="true")
    app.at(SOON + timedelta(days=1), key="pending", command="true")
    assert app.ledger.claim("r1", "done", SOON, "clock-a")
    assert store.finish_one_offs(SOON + timedelta(seconds=1)) == 0  # claimed, not over
    finish_run(app.ledger, "r1", "ok", None, 5)
    assert [job["id"] for job in app.jobs()] == ["pending"]  # over: no longer listed, at once
    assert store.finish_one_offs(SOON + timedelta(seconds=1)) == 1
    app.at(SOON, key="done", command="true")  # the same key again: it ran, it does not run again
    assert [job["id"] for job in app.jobs()] == ["pending"]
    assert store.prune(datetime.now(UTC) - timedelta(days=1)) == 0  # kept as long as the history is
    assert store.prune(datetime.now(UTC) + timedelta(seconds=1)) == 2
    with app.ledger.engine.connect() as conn:
        assert set(conn.execute(sa.select(jobs.c.id)).scalars()) == {"pending"}
    assert [run.run_id for run in app.ledger.history("done")] == ["r1"]  # its history stays


@pytest.mark.postgres
def test_the_apps_own_connection_writes_to_the_clocks_schema_and_stays_the_apps(pg_schema_url: str) -> None:
    from dynoclock.state.engines import normalize_url
    from tests.support.postgres import POSTGRES_URL

    app = dynoclock.connect(pg_schema_url)
    web = sa.create_engine(normalize_url(POSTGRES_URL), poolclass=sa.pool.NullPool)  # the app's: search_path public
    with web.connect() as conn, conn.begin():
        app.add("from-the-app", every="1h", command="true", connection=conn)
        # The app's own statements still land where its connection points.
        assert conn.execute(sa.text("SELECT current_schema()")).scalar() == "public"
        assert conn.get_execution_options().get("schema_translate_map") is None
    assert [job["id"] for job in app.jobs()] == ["from-the-app"]
    web.dispose()
