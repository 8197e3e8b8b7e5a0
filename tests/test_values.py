"""The value parsers under schedule.yaml: durations, ${VAR} expansion, and YAML with line numbers; and how
measured durations are written."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from textwrap import dedent

import pytest

from dynoclock.cli.tables import format_history
from dynoclock.config.durations import format_duration, parse_duration
from dynoclock.config.envvars import expand, variables
from dynoclock.config.problems import ConfigError, Invalid
from dynoclock.config.source import dotted, load
from dynoclock.observe.timefmt import duration_text
from dynoclock.state.runs import Run
from dynoclock.ui.views import run_row

# ---- durations -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("30s", timedelta(seconds=30)),
        ("10m", timedelta(minutes=10)),
        ("1h30m", timedelta(hours=1, minutes=30)),
        ("1d", timedelta(days=1)),
        ("2w", timedelta(weeks=2)),
        ("500ms", timedelta(milliseconds=500)),
        ("1w2d3h4m5s6ms", timedelta(weeks=1, days=2, hours=3, minutes=4, seconds=5, milliseconds=6)),
        ("90m", timedelta(minutes=90)),
        ("1h 30m", timedelta(hours=1, minutes=30)),
        ("  10m ", timedelta(minutes=10)),
        ("3650d", timedelta(days=3650)),
    ],
)
def test_parse_duration_reads_units_largest_first(text, expected):
    assert parse_duration(text) == expected


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("10 minutes", r"^expected a duration like 30s, 10m or 1h30m, got '10 minutes'$"),
        ("", r"got ''$"),
        ("m", r"got 'm'$"),
        ("10", r"got '10'$"),
        ("1.5h", r"got '1\.5h'$"),
        ("-5m", r"got '-5m'$"),
        ("30S", r"got '30S'$"),
        ("30m1h", r"got '30m1h'$"),  # units must go largest first
        ("10m10m", r"got '10m10m'$"),  # each unit once
        ("h1", r"got 'h1'$"),
        ("1h-", r"got '1h-'$"),
        (5, r"^expected a duration with a unit like 5s or 5m, got 5$"),
        (1.5, r"^expected a duration with a unit like 1\.5s or 1\.5m, got 1\.5$"),
        (True, r"^expected a duration like 30s, 10m or 1h30m, got True$"),
        (None, r"got None$"),
        (["10m"], r"got \['10m'\]$"),
        ("0s", r"^expected a duration greater than zero, got '0s'$"),
        ("0h0m", r"greater than zero"),
        ("3651d", r"^expected a duration of at most 3650d \(about 10 years\), got '3651d'$"),
        ("99999999999999w", r"at most 3650d"),
    ],
)
def test_parse_duration_refuses_with_what_was_expected_and_found(value, message):
    with pytest.raises(Invalid, match=message):
        parse_duration(value)


def test_zero_duration_is_allowed_only_when_asked():
    assert parse_duration("0s", allow_zero=True) == timedelta(0)
    with pytest.raises(Invalid, match="greater than zero"):
        parse_duration("0s")


@pytest.mark.parametrize(
    ("delta", "text"),
    [
        (timedelta(0), "0s"),
        (timedelta(seconds=30), "30s"),
        (timedelta(seconds=5400), "1h30m"),
        (timedelta(days=1), "1d"),
        (timedelta(days=8), "1w1d"),
        (timedelta(milliseconds=1500), "1s500ms"),
        (timedelta(weeks=1, days=2, hours=3, minutes=4, seconds=5, milliseconds=6), "1w2d3h4m5s6ms"),
    ],
)
def test_format_duration_uses_the_schedule_words(delta, text):
    assert format_duration(delta) == text


@pytest.mark.parametrize("text", ["30s", "10m", "1h30m", "1d", "2w", "500ms", "1w6d23h59m59s999ms"])
def test_canonical_duration_text_round_trips(text):
    assert format_duration(parse_duration(text)) == text


@pytest.mark.parametrize("seconds", [1, 59, 60, 61, 3599, 3600, 86399, 86400, 604800, 694861, 7 * 86400 + 1])
def test_duration_round_trips_through_its_text(seconds):
    delta = timedelta(seconds=seconds)
    assert parse_duration(format_duration(delta)) == delta


def test_non_canonical_duration_is_written_back_canonically():
    assert format_duration(parse_duration("90m")) == "1h30m"
    assert format_duration(parse_duration("1h 30m")) == "1h30m"


@pytest.mark.parametrize(
    ("ms", "text"),
    [
        (None, "-"),
        (0, "0 ms"),
        (850, "850 ms"),
        (999, "999 ms"),
        (1000, "1.0 s"),
        (2500, "2.5 s"),
        (10_000, "10.0 s"),
        (59_949, "59.9 s"),
        (59_960, "1 min 0 s"),
        (200_000, "3 min 20 s"),
        (7_500_000, "2 h 5 min"),
    ],
)
def test_measured_durations_have_one_spelling(ms, text):
    """How long a run took, as the CLI's tables and the status page both write it (not the schedule's 1h30m)."""
    assert duration_text(ms) == text


def test_the_history_table_and_the_status_page_write_a_run_duration_alike():
    slot = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
    run = Run("r1", "tick", slot, slot, slot, slot, "ok", 1, None, 2500, "clock.1", "schedule")
    assert "2.5 s" in format_history([run]).splitlines()[1]
    assert run_row(run, None).duration == "2.5 s"


# ---- ${VAR} expansion --------------------------------------------------------------------------

ENV = {"APP_URL": "https://app.example.com", "EMPTY": "", "TOKEN": "t0k"}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("${APP_URL}/tasks/x", "https://app.example.com/tasks/x"),
        ("Bearer ${TOKEN}", "Bearer t0k"),
        ("${APP_URL}${TOKEN}", "https://app.example.comt0k"),
        ("${EMPTY}", ""),
        ("${NOPE:-http://localhost:5000}", "http://localhost:5000"),
        ("${EMPTY:-fallback}", "fallback"),  # as in sh: unset *or empty*
        ("${APP_URL:-fallback}", "https://app.example.com"),
        ("${NOPE:-}", ""),
        ("${NOPE:-a:-b}", "a:-b"),  # the default is everything after the first ':-'
        ("${APP_URL:+true}", "true"),
        ("${NOPE:+true}", ""),
        ("${EMPTY:+true}", ""),
        ("$$", "$"),
        ("cost: $$5", "cost: $5"),
        ("$${APP_URL}", "${APP_URL}"),  # $$ escapes the reference
        ("$HOME/bin:$PATH", "$HOME/bin:$PATH"),  # bare $NAME is the shell's business
        ("echo $1 and $", "echo $1 and $"),
        ("no references", "no references"),
    ],
)
def test_expand_replaces_references_like_a_shell(text, expected):
    assert expand(text, ENV) == expected


def test_expanded_value_is_not_expanded_again():
    assert expand("${A}", {"A": "${B}", "B": "secret"}) == "${B}"


def test_unset_variable_is_an_error_naming_it():
    with pytest.raises(
        Invalid, match=r"^environment variable NOPE is not set \(use \$\{NOPE:-default\} for a default\)$"
    ):
        expand("${APP_URL}/${NOPE}", ENV)


def test_unset_variable_expands_to_empty_when_missing_is_ok():
    assert expand("${NOPE}/tasks", ENV, missing_ok=True) == "/tasks"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("${APP_URL", r"unterminated '\$\{' \(write \$\$ for a literal dollar\)"),
        ("price ${", r"unterminated '\$\{'"),
        ("${}", r"'\$\{\}' is not a variable reference; expected \$\{NAME\} or \$\{NAME:-default\}"),
        ("${1ST}", r"'\$\{1ST\}' is not a variable reference"),
        ("${APP-URL}", r"'\$\{APP-URL\}' is not a variable reference"),
        ("${APP URL}", r"'\$\{APP URL\}' is not a variable reference"),
        ("${A:=x}", r"'\$\{A:=x\}' is not a variable reference"),
        ("${:-x}", r"'\$\{:-x\}' is not a variable reference"),
    ],
)
def test_malformed_reference_is_an_error(text, message):
    with pytest.raises(Invalid, match=message):
        expand(text, ENV)


def test_variables_lists_the_names_referred_to():
    assert variables("${A} ${B:-x} ${C:+y} $D $$ $${E}") == ["A", "B", "C"]


# ---- YAML with line numbers --------------------------------------------------------------------

DOC = dedent("""\
    # comment on line 1
    timezone: UTC
    defaults:
      timeout: 60s
    jobs:
      import-feeds:
        every: 10m
        http:
          url: https://app.example.com/x
          headers:
            X-Trace: "1"
      flask-scheduled:
        cron: "*/5 * * * *"
        command:
          - flask
          - scheduled
        env: {A: 1, B: 2}
      year-end:
        at: 2026-12-31T23:00:00Z
        enabled: yes
        enqueue: {func: app.tasks.x, args: [1,
          2]}
    """)


def test_load_records_the_line_of_every_key():
    src = load("s.yaml", DOC.encode())
    lines = src.lines
    assert lines[("timezone",)] == 2
    assert lines[("defaults", "timeout")] == 4
    assert lines[("jobs",)] == 5
    assert lines[("jobs", "import-feeds")] == 6
    assert lines[("jobs", "import-feeds", "http", "url")] == 9
    assert lines[("jobs", "import-feeds", "http", "headers", "X-Trace")] == 11
    assert lines[("jobs", "flask-scheduled", "env", "B")] == 17
    assert lines[("jobs", "year-end", "enqueue", "func")] == 21


def test_load_records_the_line_of_list_items():
    src = load("s.yaml", DOC.encode())
    assert src.lines[("jobs", "flask-scheduled", "command", 0)] == 15
    assert src.lines[("jobs", "flask-scheduled", "command", 1)] == 16
    assert src.lines[("jobs", "year-end", "enqueue", "args", 1)] == 22


def test_line_of_a_missing_key_is_its_nearest_ancestors():
    src = load("s.yaml", DOC.encode())
    assert src.line(("jobs", "import-feeds", "http", "method")) == 8
    assert src.line(("jobs", "nope", "every")) == 5
    assert src.line(("nope",)) == 2  # the document starts after the comment


def test_load_builds_plain_values_and_keeps_timestamps_as_text():
    data = load("s.yaml", DOC.encode()).data
    assert data["jobs"]["flask-scheduled"]["command"] == ["flask", "scheduled"]
    assert data["jobs"]["flask-scheduled"]["env"] == {"A": 1, "B": 2}
    assert data["jobs"]["year-end"]["at"] == "2026-12-31T23:00:00Z"
    assert data["jobs"]["year-end"]["enabled"] is True
    assert data["jobs"]["year-end"]["enqueue"]["args"] == [1, 2]


def test_load_accepts_a_byte_order_mark():
    assert load("s.yaml", b"\xef\xbb\xbfjobs: {}\n").data == {"jobs": {}}


def test_merged_keys_carry_the_line_where_they_were_written():
    src = load(
        "s.yaml",
        dedent("""\
        jobs:
          a: &common
            every: 10m
            sql: SELECT 1
          b:
            <<: *common
            sql: SELECT 2
        """).encode(),
    )
    assert src.data["jobs"]["b"] == {"every": "10m", "sql": "SELECT 2"}
    assert src.lines[("jobs", "b", "every")] == 3
    assert src.lines[("jobs", "b", "sql")] == 7


def test_duplicate_keys_are_all_kept_as_problems_and_the_first_value_stays():
    src = load("s.yaml", b"a: 1\nb: 2\na: 3\nb: 4\n")
    assert [(p.line, p.path) for p in src.problems] == [(3, "a"), (4, "b")]
    assert src.data == {"a": 1, "b": 2}


def test_unreadable_values_are_problems_and_marked_so_nobody_checks_them_again():
    src = load("s.yaml", b"a: !!python/name:os.system\nb: [!!int x, 2]\nc: 3\n")
    assert [(p.line, p.path) for p in src.problems] == [(1, "a"), (2, "b[0]")]
    assert src.unreadable == {("a",), ("b", 0)}
    assert src.data == {"a": None, "b": [None, 2], "c": 3}


@pytest.mark.parametrize(
    ("raw", "line", "message"),
    [
        (b"a: [1\n", 2, r"YAML syntax error: while parsing a flow sequence"),
        (b"a: 1\nb: \x00\n", 2, r"not YAML text: unacceptable character #x0000"),
        (b"a: 1\n\xc3\x28\n", 2, r"not UTF-8 text"),
        (b"\n\n", 1, r"the file is empty"),
    ],
)
def test_text_that_is_not_yaml_is_refused_at_once_with_its_line(raw, line, message):
    with pytest.raises(ConfigError) as info:
        load("s.yaml", raw)
    [problem] = info.value.problems
    assert (problem.file, problem.line, problem.path) == ("s.yaml", line, "")
    assert re.search(message, problem.message)


def test_dotted_path_writes_list_items_in_brackets():
    assert dotted(("jobs", "a", "command", 2)) == "jobs.a.command[2]"
    assert dotted(("jobs", "a", "http", "headers")) == "jobs.a.http.headers"
    assert dotted(()) == ""


def test_load_keeps_one_string_for_text_repeated_across_jobs():
    data = load("s.yaml", b"jobs:\n  a: {every: 10m, command: [x]}\n  b:\n    every: 10m\n    command: [x]\n").data
    a, b = data["jobs"]["a"], data["jobs"]["b"]
    assert a == b and a["every"] is b["every"] and a["command"][0] is b["command"][0]
    assert [id(key) for key in a] == [id(key) for key in b]
