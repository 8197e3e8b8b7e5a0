"""The shortcuts of the schedule load give what the long way gives: libyaml's events and PyYAML's own parser
compose the same tree; values read once and reused (tags, crons, durations, zones, defaults) never carry one
job's settings into another's."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import FrozenInstanceError, fields, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from textwrap import dedent
from typing import cast

import pytest
import yaml

from dynoclock.actions.command import CommandAction
from dynoclock.actions.python import PythonAction
from dynoclock.config import credentials, loader, source
from dynoclock.config.loader import Job, load_schedule, parse_job
from dynoclock.config.problems import ConfigError, Invalid
from dynoclock.config.source import load
from dynoclock.config.values import as_duration, as_duration_or_zero
from dynoclock.schedule import cron
from dynoclock.schedule.triggers import Window

ROOT = Path(__file__).resolve().parent.parent

# The same texts plain and quoted (a plain 1 is a number, a quoted one text), in keys and values, repeated; an
# anchor, an alias and a merge; tags written out; nesting in flow and block style.
MIXED = dedent("""\
    x-common: &common {timeout: 30s, retries: 2, "2": two}
    plain: [1, "1", yes, "yes", null, "null", ~, 1.5, "1.5", 0x1f, "0x1f", '', !!str 3, 2026-01-01, "2026-01-01"]
    again: [1, "1", yes, "yes", null, "null", ~, 1.5, "1.5", 0x1f, "0x1f", '', !!str 3, 2026-01-01, "2026-01-01"]
    1: one
    "1": quoted one
    true: a key that reads as a boolean
    a:
      <<: *common
      retries: 3
      list: [*common, {b: [x, {c: d}]}, [[], {}]]
    b: !!map
      deep:
        - - - 7
          - "7"
    text: |
      two
      lines
    """).encode()


def _load_slow(monkeypatch: pytest.MonkeyPatch, raw: bytes) -> source.Source:
    with monkeypatch.context() as patch:
        patch.setattr(source, "_compose_fast", lambda file, text: None)  # as where PyYAML has no libyaml
        return load("s.yaml", raw)


@pytest.mark.skipif(not hasattr(yaml, "CSafeLoader"), reason="PyYAML without libyaml: only one way to compare")
def test_libyaml_and_pyyaml_events_give_the_same_values_lines_and_problems(monkeypatch):
    assert source._compose_fast("s.yaml", MIXED.decode()) is not None  # the fast way is the one taken
    fast, slow = load("s.yaml", MIXED), _load_slow(monkeypatch, MIXED)
    assert fast.data == slow.data
    assert fast.lines == slow.lines
    assert fast.problems == slow.problems and fast.unreadable == slow.unreadable


def test_plain_and_quoted_texts_keep_their_own_types_however_often_they_recur(monkeypatch):
    for src in (load("s.yaml", MIXED), _load_slow(monkeypatch, MIXED)):
        data = src.data
        assert isinstance(data, dict)
        expected = [1, "1", True, "yes", None, "null", None, 1.5, "1.5", 31, "0x1f", "", "3", "2026-01-01"]
        assert data["plain"] == data["again"] == [*expected, "2026-01-01"]
        assert [type(v) for v in data["again"]] == [type(v) for v in [*expected, "2026-01-01"]]
        assert data["1"] == "one" and "true" in data  # keys are their text: 1 and "1" are one key
        duplicate = (5, "1", "duplicate key (first defined at line 4)")
        assert [(p.line, p.path, p.message) for p in src.problems] == [duplicate]
        assert data["a"] == {
            "retries": 3,
            "list": [{"timeout": "30s", "retries": 2, "2": "two"}, {"b": ["x", {"c": "d"}]}, [[], {}]],
            "timeout": "30s",
            "2": "two",
        }
        assert data["b"] == {"deep": [[[7], "7"]]}
        assert data["text"] == "two\nlines\n"
        assert src.lines[("a", "retries")] == 9 and src.lines[("a", "timeout")] == 1
        assert src.lines[("b", "deep", 0, 1)] == 14


# ---- what the jobs of one schedule share -------------------------------------------------------------------


def _jobs(write_schedule, text: str, env: dict[str, str] | None = None) -> dict[str, Job]:
    return load_schedule(str(write_schedule(dedent(text))), env=env or {}).jobs


def test_jobs_with_the_same_cron_keep_their_own_zones_windows_and_options(write_schedule):
    jobs = _jobs(
        write_schedule,
        """\
        defaults: {timeout: 1m, retries: 2}
        jobs:
          a: {cron: "0 2 * * *", command: [x]}
          b: {cron: "0 2 * * *", command: [x], timezone: Europe/London, timeout: 2m}
          c: {cron: "0 2 * * *", command: [x], start: "2030-01-01T00:00:00Z", retries: 0}
          d: {cron: "0 2 * * *", command: [x]}
        """,
    )
    a, b, c, d = jobs["a"], jobs["b"], jobs["c"], jobs["d"]
    assert a.trigger == d.trigger and a.trigger != b.trigger
    assert (a.zone.key, b.zone.key) == ("UTC", "Europe/London")
    assert (a.timeout, b.timeout, c.timeout) == (timedelta(minutes=1), timedelta(minutes=2), timedelta(minutes=1))
    assert (a.retries, b.retries, c.retries) == (2, 2, 0)
    assert a.window == d.window == Window() and c.window == Window(datetime(2030, 1, 1, tzinfo=UTC), None)
    assert a == replace(d, id="a")


def test_jobs_with_the_same_action_text_keep_their_own_arguments_and_settings(write_schedule):
    jobs = _jobs(
        write_schedule,
        """\
        defaults: {args: [1]}
        jobs:
          by-default: {every: 1h, python: "tests.jobs_for_tests:echo_args"}
          same: {every: 1h, python: "tests.jobs_for_tests:echo_args"}
          an-int: {every: 1h, python: "tests.jobs_for_tests:echo_args", args: [1]}
          a-float: {every: 1h, python: "tests.jobs_for_tests:echo_args", args: [1.0]}
          a-bool: {every: 1h, python: "tests.jobs_for_tests:echo_args", args: [true]}
          text: {every: 1h, python: "tests.jobs_for_tests:echo_args", args: ["1"]}
          isolated: {every: 1h, python: "tests.jobs_for_tests:echo_args", isolate: process}
          listed: {every: 1h, command: ["true"]}
          split: {every: 1h, command: "true"}
          env: {every: 1h, command: ["true"], env: {A: "1"}}
          env-int: {every: 1h, command: ["true"], env: {A: 1}}
        """,
    )
    args = {name: _python(jobs[name]).args for name in ("by-default", "an-int", "a-float", "a-bool")}
    assert [type(a[0]) for a in args.values()] == [int, int, float, bool]
    assert _python(jobs["text"]).args == ("1",)
    assert jobs["same"].action is jobs["by-default"].action  # read once
    assert (_python(jobs["isolated"]).isolate, _python(jobs["by-default"]).isolate) == ("process", "thread")
    assert _command(jobs["listed"]).argv == _command(jobs["split"]).argv
    assert _command(jobs["listed"]).env == {}
    assert _command(jobs["env"]).env == _command(jobs["env-int"]).env == {"A": "1"}


def _python(job: Job) -> PythonAction:
    return cast("PythonAction", job.action)


def _command(job: Job) -> CommandAction:
    return cast("CommandAction", job.action)


def test_a_problem_in_a_repeated_action_is_reported_for_every_job_that_has_it(write_schedule):
    path = write_schedule(
        dedent("""\
        jobs:
          a: {every: 1h, python: "tests.jobs_for_tests:echo_args"}
          b: {every: 1h, python: "tests.jobs_for_tests:echo_args", isolate: nowhere}
          c: {every: 1h, python: "tests.jobs_for_tests:echo_args", isolate: nowhere}
          d: {every: 1h, python: "not a target"}
          e: {every: 1h, python: "not a target"}
        """)
    )
    with pytest.raises(ConfigError) as info:
        load_schedule(str(path), env={})
    assert [(p.line, p.path) for p in info.value.problems] == [
        (3, "jobs.b.isolate"),
        (4, "jobs.c.isolate"),
        (5, "jobs.d.python"),
        (6, "jobs.e.python"),
    ]


def test_text_from_the_environment_is_read_for_each_job_even_when_it_reads_alike(write_schedule):
    jobs = _jobs(
        write_schedule,
        """\
        jobs:
          from-env: {every: 1h, command: "echo ${WORD}", shell: true}
          written: {every: 1h, command: "echo x", shell: true}
          from-env-too: {every: 1h, command: "echo ${WORD}", shell: true}
          first: {every: 1h, command: "echo ${X}y", shell: true}
          second: {every: 1h, command: "echo x${Y}", shell: true}
        """,
        env={"WORD": "x", "X": "x", "Y": "y"},
    )
    from_env, written = _command(jobs["from-env"]), _command(jobs["written"])
    assert from_env.values and not written.values  # the variable's value goes to sh as a variable, not as script
    assert from_env.argv != written.argv
    assert jobs["from-env-too"].action == from_env
    assert _command(jobs["first"]).argv != _command(jobs["second"]).argv  # both "echo xy" once expanded


def test_the_jobs_of_a_schedule_are_those_each_read_alone(write_schedule):
    """Every job loaded with the others (shared defaults, actions read once) equals the job read on its own,
    through the Python API's path (nothing shared with any other job)."""
    text = dedent("""\
        jobs:
          a: {cron: "*/5 * * * *", python: "tests.jobs_for_tests:echo_args", retries: 3}
          b: {cron: "*/5 * * * *", python: "tests.jobs_for_tests:echo_args"}
          c: {every: 10m, command: ["true"], jitter: 1m, anchor: "2026-01-01T00:00:05Z"}
          d: {every: 10m, command: ["true"], timezone: Asia/Tokyo}
          e: {at: "2030-01-01T00:00:00", command: "true", timezone: Asia/Tokyo, enabled: false}
          f: {cron: "@daily", http: {url: "https://example.com/x", method: POST}, start: "2030-01-01T00:00:00Z"}
          g: {cron: "@daily", http: {url: "https://example.com/x", method: POST}, end: "2040-01-01T00:00:00Z"}
          h: {cron: "0 0 * * 1-5", sql: "SELECT 1", database: "postgresql://u@h/db", overlap: allow}
        """)
    raw = yaml.safe_load(text)["jobs"]
    jobs = _jobs(write_schedule, text)
    assert list(jobs) == list(raw)
    for job_id, spec in raw.items():
        alone = parse_job(job_id, spec)
        assert jobs[job_id] == replace(alone, origin="schedule"), job_id


@pytest.mark.parametrize("slots", ["set directly", "through Job()"])
def test_a_job_made_by_setting_its_slots_is_the_job_its_constructor_makes(write_schedule, monkeypatch, slots):
    if slots == "through Job()":
        monkeypatch.setattr(loader, "_JOB_SLOTS", None)
    else:
        assert loader._JOB_SLOTS is not None  # the way a load takes
    job = _jobs(write_schedule, "jobs:\n  a: {every: 10m, command: [x], retries: 2, start: '2030-01-01T00:00:00Z'}\n")[
        "a"
    ]
    values = {f.name: getattr(job, f.name) for f in fields(Job)}
    made = loader.new_job(dict(values))
    assert made == Job(**values) and repr(made) == repr(Job(**values))
    assert [getattr(made, f.name) for f in fields(Job)] == list(values.values())
    with pytest.raises(FrozenInstanceError):
        made.retries = 3  # type: ignore[misc]
    if slots == "set directly":  # every field must be given: a default would be a job's value silently
        with pytest.raises(KeyError):
            loader.new_job({k: v for k, v in values.items() if k != "jitter"})
    with pytest.raises(TypeError):
        loader.new_job(dict(values), nonsense=1)


def test_secrets_are_those_every_value_would_give(write_schedule):
    """schedule_secrets looks into only the values that can hold a secret: it finds what looking into every
    value finds."""
    text = dedent("""\
        jobs:
          a:
            every: 1h
            http:
              url: "https://user:pa%73s@example.com/x?token=${API_TOKEN}"
              headers: {Authorization: "Bearer abc", X-Api-Key: k1, Accept: text/plain, Cookie: "a=1; b=2"}
              params: {access_token: t1, page: 2}
              sign: s1
          b: {every: 1h, command: [x, "${DB_PASSWORD}"], env: {MY_SECRET: s2, PLAIN: p, PORT: 5432}}
          c: {every: 1h, sql: SELECT 1, database: "postgresql://u:pw@h/db"}
          d: {every: 1h, command: "echo $${NOT_A_VAR} ${HOME}"}
        """)
    env = {"API_TOKEN": "t0k", "DB_PASSWORD": "dbpw", "HOME": "/home/x"}
    tree = load_schedule(str(write_schedule(text)), env=env).secrets
    found: list[str] = []
    todo: list[tuple[object, str, str]] = [(yaml.safe_load(text), "", "")]
    while todo:
        value, key, parent = todo.pop()
        if isinstance(value, dict):
            todo.extend((item, str(name), key) for name, item in value.items())
        elif isinstance(value, list):
            todo.extend((item, key, parent) for item in value)
        elif value is not None and not isinstance(value, bool):
            found.extend(credentials._secrets_of(str(value), env, key, parent))
    assert tree == frozenset(found)
    assert {"t0k", "dbpw", "abc", "k1", "1", "2", "t1", "s1", "s2", "pw", "pa%73s", "pass"} <= tree


# ---- one pass from the events (plain.py) and the node tree ------------------------------------------------

# Documents the one pass reads: block and flow, nesting, empty collections, every plain type, values that are
# not text (and unreadable ones: an int too long, which is a problem), keys that read as numbers or booleans.
ONE_PASS = [
    "jobs: {}\n",
    "a: 1\n",
    "{}\n",
    "# a comment\n\ntimezone: UTC\njobs:\n  a: {every: 10m, command: [x, 'y', \"z\"]}\n",
    "a:\n  - 1\n  - [2, [3, {b: [4, {}]}], []]\n  -\n    c: d\n    e: [f, g]\nh: ~\n",
    "1: one\ntrue: yes\nnull: 2.5\n3.0: 0o17\nx: 2026-01-01\ny: '2026-01-01'\nz: |\n  two\n  lines\n",
    "a: " + "9" * 5000 + "\nb: [1, " + "8" * 5000 + "]\nc: 3\n",
    "a: .inf\nb: -.nan\nc: 0x_1f\nd: +12_000\ne: 1:20\nf: !\n  x\n",
    "deep: " + "[" * 99 + "]" * 99 + "\n",
    "a: [1, '1', yes, 'yes', null, 'null', ~, '~', 1.5, '1.5', <<, '<<', ! 1]\nb: [1, '1', yes, 'yes', \"1\"]\n"
    "'<<': a quoted key is text\n",
]
# Documents that need the tree: the one pass gives up on each, and the tree's way reads it.
TREE = [
    "",
    "just text\n",
    "- a\n- b\n",
    "x: &a {b: 1}\ny: *a\n",
    "x: {<<: {a: 1}, b: 2}\n",
    "a: 1\nb: 2\na: 3\n",
    "a: !!str 1\n",
    "a: !!python/name:os.system\n",
    "? [a, b]\n: c\n",
    "!!map {a: 1}\n",
    "a: 1\n---\nb: 2\n",
    "deep: " + "[" * 100 + "]" * 100 + "\n",
    "a: [1\n",
    "a: *nope\n",
]


def _either(load_it: Callable[[], source.Source]) -> object:
    try:
        src = load_it()
    except ConfigError as exc:
        return [str(p) for p in exc.problems]
    return src.data, src.lines, src.problems, src.unreadable


@pytest.mark.skipif(not hasattr(yaml, "CSafeLoader"), reason="the one pass reads libyaml's events")
@pytest.mark.parametrize("text", ONE_PASS + TREE)
def test_one_pass_gives_what_the_tree_gives(monkeypatch, text):
    one_pass = source._plain_fast("s.yaml", text) is not None
    assert one_pass == (text in ONE_PASS)
    fast = _read(text)
    monkeypatch.setattr(source, "_plain_fast", lambda file, text: None)
    assert fast == _read(text)


@pytest.mark.skipif(not hasattr(yaml, "CSafeLoader"), reason="the one pass reads libyaml's events")
def test_one_pass_reads_the_shipped_and_the_benchmark_schedules_as_the_tree_does(monkeypatch, tmp_path):
    from bench import gen

    texts = [(ROOT / "schedule.yaml").read_text(), gen.mixed(tmp_path / "mixed.yaml", 300).read_text()]
    for text in texts:
        assert source._plain_fast("s.yaml", text) is not None
    fast = [_read(text) for text in texts]
    monkeypatch.setattr(source, "_plain_fast", lambda file, text: None)
    assert fast == [_read(text) for text in texts]


def _read(text: str) -> object:
    return _either(lambda: load("s.yaml", text.encode()))


def test_a_cron_field_read_once_is_checked_again_in_another_position():
    assert cron.normalize("0 0 31 jan *") == "0 0 31 jan *"
    assert cron.normalize("31 0 * * *") == "31 0 * * *"  # 31 was read as a day of the month
    with pytest.raises(Invalid, match="bad hour '31'"):
        cron.normalize("0 31 * * *")
    with pytest.raises(Invalid, match="bad day-of-week 'jan'"):
        cron.normalize("0 0 * * jan")
    assert cron.normalize("0 0 * * MON-fri") == cron.normalize("0 0 * * mon-FRI") == "0 0 * * mon-fri"


def test_a_duration_read_once_is_refused_where_zero_is_not_allowed(write_schedule):
    path = write_schedule(
        dedent("""\
        jobs:
          a: {every: 10m, command: [x], jitter: 0s, misfire_grace: 0s}
          b: {every: 0s, command: [x]}
          c: {every: 10m, command: [x], timeout: 0s}
        """)
    )
    with pytest.raises(ConfigError) as info:
        load_schedule(str(path), env={})
    assert [(p.line, p.path) for p in info.value.problems] == [(3, "jobs.b.every"), (4, "jobs.c.timeout")]
    assert as_duration_or_zero("0s") == timedelta(0) and as_duration("10m") == as_duration_or_zero("10m")


def test_jobs_given_from_the_app_one_by_one_keep_their_own_settings():
    first = parse_job("a", {"every": "1h", "python": "m:f", "args": [1], "retries": 3, "timezone": "Asia/Tokyo"})
    second = parse_job("b", {"every": "1h", "python": "m:f", "args": [1.0]})
    assert (first.retries, second.retries) == (3, 0)
    assert (first.zone.key, second.zone.key) == ("Asia/Tokyo", "UTC")
    assert type(_python(second).args[0]) is float and second.origin == "api"
    late = parse_job("c", {"at": "2020-01-01T00:00:00Z", "python": "m:f"}, now=datetime(2021, 1, 1, tzinfo=UTC))
    assert late.trigger_text == "2020-01-01T00:00:00Z"


# ---- merge sources read once ---------------------------------------------------------------------------------

MERGES = [
    # plain values merged into every job, a job's own key winning, and a list of sources (earlier wins)
    "x-a: &a {timeout: 30s, retries: 1}\nx-b: &b {retries: 5, overlap: allow}\njobs:\n"
    + "".join(f"  j{i}: {{<<: *a, every: 1m, command: [x]}}\n" for i in range(5))
    + "  own:\n    <<: *a\n    retries: 3\n    every: 1m\n  both: {<<: [*b, *a], every: 1m}\n  again: {<<: [*a, *b]}\n",
    # a source holding a mapping or a list: read again for each job, not reused
    "x-n: &n {env: {A: 1}, args: [1, 2]}\njobs:\n  a: {<<: *n}\n  b: {<<: *n, args: [3]}\n  c: {<<: *n}\n",
    # a source with a problem (an unreadable value): reported for each job that merges it
    "x-u: &u {timeout: !!int x, retries: 2}\njobs:\n  a: {<<: *u}\n  b: {<<: *u}\n  c: {<<: *u, timeout: 1m}\n",
    # merged at different depths, a source that merges another, and a mapping merged inline
    "x-a: &a {k: 1}\nx-c: &c {<<: *a, m: 2}\nout: {<<: *c}\n"
    "jobs:\n  a: {<<: *c}\n  b: {deep: {<<: *c}}\n  d: {<<: {k: 3}}\n",
    # a source that merges itself
    "x: &x {a: 1, b: {<<: *x}}\njobs:\n  a: {<<: *x}\n  b: {<<: *x}\n",
]


@pytest.mark.parametrize("text", MERGES)
def test_a_merge_source_read_once_gives_what_reading_it_each_time_gives(monkeypatch, text):
    reused = _read(text)
    monkeypatch.setattr(source, "REUSE_MERGES", False)
    assert reused == _read(text)


def test_a_merge_source_read_once_still_counts_against_the_alias_budget(monkeypatch):
    """Each merge of a source takes what it holds from MAX_ALIAS_VALUES, reused or not: the file is refused at
    the same merge, with the same message."""
    monkeypatch.setattr(source, "MAX_ALIAS_VALUES", 50)
    text = "x: &x {a: 1, b: 2, c: 3}\njobs:\n" + "".join(f"  j{i}: {{<<: *x}}\n" for i in range(30))
    reused = _read(text)
    monkeypatch.setattr(source, "REUSE_MERGES", False)
    assert reused == _read(text)
    assert isinstance(reused, list) and "past 50 values added by aliases" in reused[0]


@pytest.mark.parametrize("reuse", [True, False])
def test_a_file_past_the_alias_budget_is_refused_wherever_the_budget_runs_out(monkeypatch, reuse):
    """The budget may run out inside an alias, or on a value written out just after one took the last of it:
    either way the file is refused naming an alias (it once failed with an IndexError)."""
    monkeypatch.setattr(source, "MAX_ALIAS_VALUES", 50)
    monkeypatch.setattr(source, "REUSE_MERGES", reuse)
    for jobs in range(10, 30):
        text = "x: &x {a: 1, b: 2, c: 3}\njobs:\n" + "".join(f"  j{i}: {{<<: *x, k: v}}\n" for i in range(jobs))
        outcome = _read(text)
        refused = r":\d+: jobs\.j\d+: YAML alias \*x takes the file past 50 values"
        assert isinstance(outcome, tuple) or (isinstance(outcome, list) and re.search(refused, outcome[0]))
