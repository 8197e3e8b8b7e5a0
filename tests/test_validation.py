"""Broken schedules: every problem is reported with file, line, key path and what was expected.

One table drives two tests: ``load_schedule`` must raise ConfigError with exactly the
listed problems (in file order), and the real ``python clock.py check`` must print them
as ``FILE:LINE: KEY.PATH: message`` lines on stderr, exit 2 and never show a traceback.
"""

from __future__ import annotations

import re
import subprocess
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from textwrap import dedent

import pytest

from dynoclock.actions.http import HttpAction
from dynoclock.actions.sql import SqlAction
from dynoclock.config.loader import load_schedule
from dynoclock.config.preflight import environment_problems
from dynoclock.config.problems import ConfigError
from dynoclock.schedule.triggers import EveryTrigger
from tests.support.processes import run_cli


@dataclass(frozen=True)
class Case:
    id: str
    text: str | bytes
    problems: list[tuple[int, str, str]]  # (line, key path, regex on the message), in file order
    env: dict[str, str] = field(default_factory=dict)


def case(id: str, text: str | bytes, *problems: tuple[int, str, str], env: dict[str, str] | None = None) -> Case:
    body = dedent(text) if isinstance(text, str) else text
    return Case(id, body, list(problems), env or {})


CASES = [
    # ---- the file itself ----------------------------------------------------------------
    case(
        "yaml-syntax-bad-indent",
        """\
        jobs:
          a:
            every: 10m
           sql: SELECT 1
        """,
        (4, "", r"YAML syntax error: .*expected <block end>"),
    ),
    case(
        "yaml-unquoted-cron-stars",
        """\
        jobs:
          a:
            cron: * * * * *
            sql: SELECT 1
        """,
        (3, "", r"YAML syntax error: .*must be quoted, e\.g\. cron: \"\*/5 \* \* \* \*\""),
    ),
    case(
        "yaml-unquoted-cron-macro",
        """\
        jobs:
          a:
            cron: @daily
            sql: SELECT 1
        """,
        (3, "", r"YAML syntax error: .*'@'.*must be quoted"),
    ),
    case(
        "yaml-two-documents",
        """\
        jobs: {}
        ---
        jobs: {}
        """,
        (2, "", r"expected a single document in the stream"),
    ),
    case("empty-file", "", (1, "", r"the file is empty; expected a mapping with a 'jobs:' key")),
    case("only-a-comment", "# nothing scheduled yet\n", (1, "", r"the file is empty")),
    case(
        "list-at-top-level",
        """\
        - every: 10m
          sql: SELECT 1
        """,
        (1, "", r"expected a mapping \(key: value lines\), got a list"),
    ),
    case("scalar-at-top-level", "hello\n", (1, "", r"expected a mapping .*got 'hello'")),
    case(
        "no-jobs-key",
        """\
        timezone: UTC
        """,
        (1, "jobs", r"missing 'jobs:'"),
    ),
    case(
        "list-where-jobs-mapping-belongs",
        """\
        timezone: UTC
        jobs:
          - every: 10m
            sql: SELECT 1
        """,
        (2, "jobs", r"expected a mapping \(key: value lines\), got a list"),
    ),
    case(
        "job-is-a-string",
        """\
        jobs:
          cleanup: run the cleanup
        """,
        (2, "jobs.cleanup", r"expected a mapping .*got 'run the cleanup'"),
    ),
    case(
        "duplicate-job-id",
        """\
        jobs:
          cleanup:
            every: 10m
            sql: SELECT 1
          cleanup:
            every: 5m
            sql: SELECT 2
        """,
        (5, "jobs.cleanup", r"duplicate key \(first defined at line 2\)"),
    ),
    case(
        "duplicate-key-inside-job",
        """\
        jobs:
          cleanup:
            every: 10m
            sql: SELECT 1
            every: 5m
        """,
        (5, "jobs.cleanup.every", r"duplicate key \(first defined at line 3\)"),
    ),
    case(
        "binary-nul-byte",
        b"jobs:\n  a:\n    every: 10m\n    sql: SELECT\x00 1\n",
        (4, "", r"not YAML text: unacceptable character #x0000"),
    ),
    case(
        "binary-invalid-utf8",
        b"# schedule\ntimezone: UTC\njobs: \xff\xfe\x00\x01\n",
        (3, "", r"not UTF-8 text"),
    ),
    case(
        "python-object-tag-on-mapping",
        """\
        jobs:
          a: !!python/object/apply:os.system
            - echo pwned
        """,
        (2, "jobs.a", r"unsupported YAML tag !!python/object/apply:os\.system"),
    ),
    case(
        "python-name-tag-on-scalar",
        """\
        jobs:
          a:
            every: 10m
            sql: !!python/name:os.system
        """,
        (4, "jobs.a.sql", r"unsupported YAML tag !!python/name:os\.system"),
    ),
    case(
        "standard-tag-with-bad-value",
        """\
        jobs:
          a:
            every: !!int ten
            sql: SELECT 1
        """,
        (3, "jobs.a.every", r"cannot read 'ten' as !!int"),
    ),
    case(
        "alias-refers-to-itself",
        """\
        jobs:
          a: &loop
            every: 10m
            python: jobs.examples:heartbeat
            kwargs: *loop
        """,
        (5, "jobs.a.kwargs", r"a YAML alias refers to itself"),
    ),
    case(
        "merge-key-of-a-number",
        """\
        jobs:
          a:
            <<: 5
            every: 10m
            sql: SELECT 1
        """,
        (3, "jobs.a", r"'<<' merges a mapping or a list of them"),
    ),
    # ---- keys --------------------------------------------------------------------------
    case(
        "unknown-top-level-key",
        """\
        timezon: UTC
        jobs: {}
        """,
        (1, "timezon", r"unknown key 'timezon'; did you mean 'timezone'\?"),
    ),
    case(
        "unknown-job-key-suggests-closest",
        """\
        jobs:
          a:
            every: 10m
            timout: 30s
            sql: SELECT 1
        """,
        (4, "jobs.a.timout", r"unknown key 'timout'; did you mean 'timeout'\?"),
    ),
    case(
        "unknown-key-inside-http",
        """\
        jobs:
          a:
            every: 10m
            http:
              url: https://app.example.com/tasks/a
              methd: POST
        """,
        (6, "jobs.a.http.methd", r"unknown key 'methd'; did you mean 'method'\?"),
    ),
    case(
        "unknown-key-without-close-match-lists-keys",
        """\
        jobs:
          a:
            every: 10m
            enqueue: {func: app.tasks.x, zzz: 1}
        """,
        (4, "jobs.a.enqueue.zzz", r"unknown key 'zzz'; expected one of: args, func, "),
    ),
    case(
        "job-id-with-uppercase",
        """\
        jobs:
          DailyReport:
            cron: "0 6 * * *"
            sql: SELECT 1
        """,
        (2, "jobs.DailyReport", r"job id 'DailyReport' must be 1-100 of a-z, 0-9, '_' and '-'"),
    ),
    case(
        "job-id-with-spaces",
        """\
        jobs:
          daily report:
            cron: "0 6 * * *"
            sql: SELECT 1
        """,
        (2, "jobs.daily report", r"job id 'daily report' must be"),
    ),
    case(
        "no-trigger",
        """\
        jobs:
          a:
            sql: SELECT 1
        """,
        (2, "jobs.a", r"expected exactly one trigger: cron, every or at; found none"),
    ),
    case(
        "two-triggers",
        """\
        jobs:
          a:
            cron: "0 * * * *"
            every: 1h
            sql: SELECT 1
        """,
        (2, "jobs.a", r"expected exactly one trigger: cron, every or at; got cron and every"),
    ),
    case(
        "no-action",
        """\
        jobs:
          a:
            every: 1h
            timeout: 30s
        """,
        (2, "jobs.a", r"expected exactly one action: http, sql, python, command, enqueue\b.*; found none"),
    ),
    case(
        "two-actions",
        """\
        jobs:
          a:
            every: 1h
            sql: SELECT 1
            command: [flask, scheduled]
        """,
        (2, "jobs.a", r"expected exactly one action: .*; got sql and command"),
    ),
    # ---- cron --------------------------------------------------------------------------
    *(
        case(
            f"cron-{name}",
            f"""\
            jobs:
              a:
                cron: {expr}
                sql: SELECT 1
            """,
            (3, "jobs.a.cron", message),
        )
        for name, expr, message in [
            ("minute-out-of-range", '"61 * * * *"', r"bad minute '61': out of range 0-59"),
            ("hour-out-of-range", '"0 24 * * *"', r"bad hour '24': out of range 0-23"),
            ("day-of-month-zero", '"0 0 0 * *"', r"bad day-of-month '0': out of range 1-31"),
            ("month-13", '"0 0 1 13 *"', r"bad month '13': out of range 1-12"),
            ("day-of-week-name", '"0 0 * * funday"', r"bad day-of-week 'funday': expected 0-7 or a name"),
            ("four-fields", '"0 0 * *"', r"expected 5 fields \(minute hour day-of-month month day-of-week\), got 4"),
            ("zero-step", '"*/0 * * * *"', r"bad minute step in '\*/0': the step must be at least 1"),
            ("backwards-range", '"30-10 * * * *"', r"bad minute range '30-10': it runs backwards"),
            ("unknown-macro", "'@fortnightly'", r"unknown macro '@fortnightly'"),
            ("reboot", "'@reboot'", r"@reboot has no time to schedule; use 'at:'"),
            ("never-fires", '"0 0 30 2 *"', r"never fires: no listed month has that day-of-month"),
            ("cronsim-extension-L", '"0 0 L * *"', r"bad day-of-month 'l'"),
            ("not-text", "5", r"expected a crontab expression like \"0 2 \* \* \*\" or @daily, got 5"),
        ]
    ),
    # ---- durations, zones, instants ----------------------------------------------------
    *(
        case(
            f"every-{name}",
            f"""\
            jobs:
              import-feeds:
                every: {value}
                sql: SELECT 1
            """,
            (3, "jobs.import-feeds.every", message),
        )
        for name, value, message in [
            ("words", "10 minutes", r"^expected a duration like 30s, 10m or 1h30m, got '10 minutes'$"),
            ("bare-number", "5", r"^expected a duration with a unit like 5s or 5m, got 5$"),
            ("zero", "0s", r"^expected a duration greater than zero, got '0s'$"),
            ("negative", "-5m", r"^expected a duration like 30s, 10m or 1h30m, got '-5m'$"),
            ("fraction", "1.5h", r"^expected a duration like 30s, 10m or 1h30m, got '1.5h'$"),
            ("absurdly-long", "99999999999w", r"at most 3650d"),
        ]
    ),
    case(
        "unknown-time-zone-at-top",
        """\
        timezone: Mars/Olympus_Mons
        jobs:
          a:
            every: 10m
            sql: SELECT 1
        """,
        (1, "timezone", r"unknown time zone 'Mars/Olympus_Mons'; expected an IANA name"),
    ),
    case(
        "unknown-time-zone-per-job",
        """\
        jobs:
          a:
            cron: "0 6 * * *"
            timezone: America/Springfield
            sql: SELECT 1
        """,
        (4, "jobs.a.timezone", r"unknown time zone 'America/Springfield'"),
    ),
    case(
        "bad-at-instant",
        """\
        jobs:
          year-end:
            at: next tuesday
            sql: SELECT 1
        """,
        (3, "jobs.year-end.at", r"expected an ISO-8601 time like 2026-12-31T23:00:00Z, got 'next tuesday'"),
    ),
    case(
        "at-on-a-day-that-does-not-exist",
        """\
        jobs:
          year-end:
            at: 2026-02-30T10:00:00Z
            sql: SELECT 1
        """,
        (3, "jobs.year-end.at", r"expected an ISO-8601 time"),
    ),
    case(
        "at-beyond-the-calendar",
        """\
        jobs:
          far:
            at: "9999-12-31T23:59:59-05:00"
            sql: SELECT 1
        """,
        (3, "jobs.far.at", r"expected a time between the years 1000 and 9000"),
    ),
    case(
        "anchor-on-a-cron-job",
        """\
        jobs:
          a:
            cron: "0 * * * *"
            anchor: 2026-01-01T00:00:00Z
            sql: SELECT 1
        """,
        (4, "jobs.a.anchor", r"'anchor' applies to 'every' only, and this job uses 'cron'"),
    ),
    case(
        "bad-anchor",
        """\
        jobs:
          a:
            every: 3d
            anchor: noon
            sql: SELECT 1
        """,
        (4, "jobs.a.anchor", r"expected an ISO-8601 time.*got 'noon'"),
    ),
    case(
        "start-after-end",
        """\
        jobs:
          campaign:
            every: 1h
            start: 2026-06-01T00:00:00Z
            end: 2026-05-01T00:00:00Z
            sql: SELECT 1
        """,
        (5, "jobs.campaign.end", r"end lies before start"),
    ),
    # ---- ${VAR} ------------------------------------------------------------------------
    case(
        "unset-variable-is-named-once",
        """\
        jobs:
          a:
            every: 10m
            http:
              url: ${NOPE}/tasks/a
        """,
        (5, "jobs.a.http.url", r"^environment variable NOPE is not set \(use \$\{NOPE:-default\} for a default\)$"),
    ),
    case(
        "unterminated-variable",
        """\
        jobs:
          a:
            every: 10m
            http:
              url: "${APP_URL/tasks/a"
        """,
        (5, "jobs.a.http.url", r"unterminated '\$\{' \(write \$\$ for a literal dollar\)"),
        env={"APP_URL": "https://app.example.com"},
    ),
    case(
        "not-a-variable-name",
        """\
        jobs:
          a:
            every: 10m
            command: "echo ${1ST}"
        """,
        (4, "jobs.a.command", r"'\$\{1ST\}' is not a variable reference"),
    ),
    case(
        "unset-variable-in-defaults",
        """\
        defaults:
          timezone: ${CLOCK_TZ}
        jobs:
          a:
            every: 10m
            sql: SELECT 1
        """,
        (2, "defaults.timezone", r"^environment variable CLOCK_TZ is not set"),
    ),
    # ---- actions -----------------------------------------------------------------------
    case(
        "args-on-a-command-job",
        """\
        jobs:
          a:
            every: 10m
            command: [flask, scheduled]
            args: [1]
        """,
        (5, "jobs.a.args", r"'args' applies to python jobs only, and this is a command job"),
    ),
    case(
        "kwargs-not-a-mapping",
        """\
        jobs:
          digest:
            cron: "30 17 * * mon-fri"
            python: jobs.digest:send
            kwargs: [100]
        """,
        (5, "jobs.digest.kwargs", r"expected a mapping \(key: value lines\), got a list"),
    ),
    case(
        "python-target-without-colon",
        """\
        jobs:
          digest:
            cron: "30 17 * * mon-fri"
            python: jobs.digest.send
        """,
        (4, "jobs.digest.python", r"expected module:function like jobs\.digest:send, got 'jobs\.digest\.send'"),
    ),
    case(
        "python-isolate-unknown",
        """\
        defaults:
          isolate: fork
        jobs:
          digest:
            every: 1h
            python: jobs.digest:send
        """,
        (2, "defaults.isolate", r"expected one of process, thread, got 'fork'"),
    ),
    case(
        "python-max-memory-with-threads",
        """\
        jobs:
          digest:
            every: 1h
            python: jobs.digest:send
            max_memory: 512MB
        """,
        (5, "jobs.digest.max_memory", r"max_memory applies to isolate: process only"),
    ),
    case(
        "python-max-memory-not-a-size",
        """\
        jobs:
          digest:
            every: 1h
            python: jobs.digest:send
            isolate: process
            max_memory: lots
        """,
        (6, "jobs.digest.max_memory", r"expected a memory size like 512MB or 2GB, got 'lots'"),
    ),
    case(
        "http-without-url",
        """\
        jobs:
          a:
            every: 10m
            http:
              method: POST
        """,
        (4, "jobs.a.http", r"missing 'url'"),
    ),
    case(
        "http-url-without-scheme",
        """\
        jobs:
          a:
            every: 10m
            http:
              url: app.example.com/tasks/a
        """,
        (5, "jobs.a.http.url", r"expected an http:// or https:// URL, got 'app\.example\.com/tasks/a'"),
    ),
    case(
        "http-url-unparsable",
        """\
        jobs:
          a:
            every: 10m
            http:
              url: "http://[::1/tasks"
        """,
        (5, "jobs.a.http.url", r"expected an http:// or https:// URL.*Invalid IPv6 URL"),
    ),
    case(
        "http-bad-method",
        """\
        jobs:
          a:
            every: 10m
            http: {url: "https://app.example.com/x", method: FETCH}
        """,
        (4, "jobs.a.http.method", r"expected one of GET, POST, PUT, PATCH, DELETE, HEAD, got 'FETCH'"),
    ),
    case(
        "http-bad-expect-status",
        """\
        jobs:
          a:
            every: 10m
            http:
              url: https://app.example.com/x
              expect_status: [200, 999]
        """,
        (6, "jobs.a.http.expect_status", r"expected an HTTP status like 200 or 2xx .*got 999"),
    ),
    case(
        "http-json-and-data",
        """\
        jobs:
          a:
            every: 10m
            http:
              url: https://app.example.com/x
              json: {a: 1}
              data: a=1
        """,
        (7, "jobs.a.http.data", r"set either 'json' or 'data', not both"),
    ),
    case(
        "command-empty-list",
        """\
        jobs:
          a:
            every: 10m
            command: []
        """,
        (4, "jobs.a.command", r"expected a command like \[flask, scheduled\], got an empty list"),
    ),
    case(
        "command-unbalanced-quote",
        """\
        jobs:
          a:
            every: 10m
            command: echo 'hello
        """,
        (4, "jobs.a.command", r"cannot split \"echo 'hello\" into arguments: No closing quotation"),
    ),
    case(
        "shell-true-with-a-list",
        """\
        jobs:
          a:
            every: 10m
            shell: true
            command: [echo, hello]
        """,
        (5, "jobs.a.command", r"with shell: true, write the command as one string"),
    ),
    case(
        "enqueue-without-func",
        """\
        jobs:
          export:
            at: "2026-12-31T23:00:00Z"
            enqueue: {queue: default, args: [1]}
        """,
        (4, "jobs.export.enqueue", r"missing 'func': expected func: app\.tasks\.export_posts"),
    ),
    case(
        "enqueue-bad-redis-url",
        """\
        jobs:
          export:
            every: 1d
            enqueue:
              func: app.tasks.export_posts
              redis: localhost:6379
        """,
        (6, "jobs.export.enqueue.redis", r"expected a Redis URL like redis://localhost:6379/0 .*got 'localhost:6379'"),
    ),
    case(
        "sql-bad-database-url",
        """\
        jobs:
          a:
            every: 1d
            database: app.db
            sql: SELECT 1
        """,
        (4, "jobs.a.database", r"expected a database URL like postgres://.*got 'app\.db'"),
    ),
    # ---- options -----------------------------------------------------------------------
    *(
        case(
            f"option-{key}-{name}",
            f"""\
            jobs:
              a:
                every: 10m
                sql: SELECT 1
                {key}: {value}
            """,
            (5, f"jobs.a.{key}", message),
        )
        for key, name, value, message in [
            ("overlap", "bogus", "bogus", r"^expected one of skip, allow, replace, got 'bogus'$"),
            ("retries", "negative", "-1", r"^expected a number between 0 and 100, got -1$"),
            ("retries", "words", "many", r"^expected a whole number, got 'many'$"),
            ("catch_up", "bogus", "everything", r"^expected one of one, all, got 'everything'$"),
            ("enabled", "maybe", "maybe", r"^expected true or false, got 'maybe'$"),
            ("timeout", "bare-number", "30", r"expected a duration with a unit like 30s or 30m, got 30"),
            ("jitter", "not-shorter-than-interval", "10m", r"jitter must be shorter than the interval \(10m\)"),
        ]
    ),
    # ---- defaults ----------------------------------------------------------------------
    case(
        "trigger-key-in-defaults",
        """\
        defaults:
          cron: "0 * * * *"
        jobs:
          a:
            every: 10m
            sql: SELECT 1
        """,
        (2, "defaults.cron", r"'cron' cannot be a default: each job names its own trigger and action"),
    ),
    case(
        "action-key-in-defaults",
        """\
        defaults:
          timeout: 30s
          sql: SELECT 1
        jobs:
          a:
            every: 10m
            sql: SELECT 2
        """,
        (3, "defaults.sql", r"'sql' cannot be a default"),
    ),
    case(
        "typo-in-defaults-suggests-closest",
        """\
        defaults:
          retires: 3
        jobs:
          a:
            every: 10m
            sql: SELECT 1
        """,
        (2, "defaults.retires", r"unknown key 'retires'; did you mean 'retries'\?"),
    ),
    case(
        "bad-default-reported-once-at-its-line",
        """\
        defaults:
          timeout: soon
          timezone: Nowhere/Special
        jobs:
          a:
            every: 10m
            sql: SELECT 1
          b:
            cron: "0 * * * *"
            sql: SELECT 2
        """,
        (2, "defaults.timeout", r"expected a duration like 30s, 10m or 1h30m, got 'soon'"),
        (3, "defaults.timezone", r"unknown time zone 'Nowhere/Special'"),
    ),
    # ---- several problems, disabled jobs -----------------------------------------------
    case(
        "every-problem-reported-in-file-order",
        """\
        timezone: Mars/Base
        jobs:
          b:
            every: 10 minutes
            sql: SELECT 1
          a:
            cron: "61 * * * *"
            timout: 5s
            sql: SELECT 2
        """,
        (1, "timezone", r"unknown time zone 'Mars/Base'"),
        (4, "jobs.b.every", r"got '10 minutes'"),
        (7, "jobs.a.cron", r"bad minute '61'"),
        (8, "jobs.a.timout", r"did you mean 'timeout'"),
    ),
    case(
        "duplicate-key-reported-with-the-other-problems",
        """\
        jobs:
          a:
            every: 10 minutes
            sql: SELECT 1
          a:
            cron: "0 * * * *"
            sql: SELECT 2
          b:
            cron: "0 25 * * *"
            sql: SELECT 3
        """,
        (3, "jobs.a.every", r"got '10 minutes'"),
        (5, "jobs.a", r"duplicate key \(first defined at line 2\)"),
        (9, "jobs.b.cron", r"bad hour '25'"),
    ),
    case(
        "typo-in-a-disabled-job-is-still-an-error",
        """\
        jobs:
          import-feeds:
            enabled: ${APP_URL:+true}
            every: 10m
            timout: 30s
            http:
              url: ${APP_URL}/tasks/import-feeds
        """,
        (5, "jobs.import-feeds.timout", r"did you mean 'timeout'"),
    ),
    case(
        "typo-naming-an-unset-variable-in-a-disabled-job-is-still-an-error",
        """\
        jobs:
          import-feeds:
            enabled: ${APP_URL:+true}
            every: 10m
            headrs: {Authorization: "Bearer ${APP_TOKEN}"}
            http:
              url: ${APP_URL}/tasks/import-feeds
        """,
        (5, "jobs.import-feeds.headrs", r"unknown key 'headrs'"),
    ),
]


def test_the_table_is_large_and_its_ids_are_unique():
    assert len(CASES) >= 45
    assert len({c.id for c in CASES}) == len(CASES)


def _write(tmp_path: Path, c: Case) -> Path:
    path = tmp_path / "schedule.yaml"
    if isinstance(c.text, bytes):
        path.write_bytes(c.text)
    else:
        path.write_text(c.text)
    return path


@pytest.mark.parametrize("c", [pytest.param(c, id=c.id) for c in CASES])
def test_broken_schedule_is_refused_with_file_line_and_key_path(tmp_path, c):
    path = _write(tmp_path, c)
    with pytest.raises(ConfigError) as info:
        load_schedule(str(path), env=c.env)
    found = [(p.file, p.line, p.path) for p in info.value.problems]
    assert found == [(str(path), line, key) for line, key, _ in c.problems], info.value
    for problem, (_, _, pattern) in zip(info.value.problems, c.problems, strict=True):
        assert re.search(pattern, problem.message), problem.message
        assert "\n" not in problem.message


@pytest.fixture(scope="module")
def check_results(tmp_path_factory) -> dict[str, tuple[Path, subprocess.CompletedProcess[str]]]:
    """``clock.py check`` on every table entry, a few processes at a time (each takes ~0.3 s to start)."""

    def check(c: Case) -> tuple[Path, subprocess.CompletedProcess[str]]:
        path = _write(tmp_path_factory.mktemp(c.id), c)
        return path, run_cli("check", "-c", str(path), env=c.env)

    with ThreadPoolExecutor(max_workers=4) as pool:
        return dict(zip([c.id for c in CASES], pool.map(check, CASES), strict=True))


@pytest.mark.parametrize("c", [pytest.param(c, id=c.id) for c in CASES])
def test_check_cli_prints_one_located_line_per_problem_and_exits_2(check_results, c):
    path, result = check_results[c.id]
    assert result.returncode == 2, result
    assert "Traceback" not in result.stderr + result.stdout
    lines = result.stderr.splitlines()
    assert len(lines) == len(c.problems), result.stderr
    for text, (line, key, pattern) in zip(lines, c.problems, strict=True):
        prefix = f"{path}:{line}: {key}: " if key else f"{path}:{line}: "
        assert text.startswith(prefix), text
        assert re.search(pattern, text[len(prefix) :]), text


# ---- what must not happen, and what must work --------------------------------------------


def test_python_tag_constructs_nothing(tmp_path, write_schedule):
    marker = tmp_path / "constructed"
    path = write_schedule(
        dedent(f"""\
        jobs:
          a:
            every: 10m
            sql: !!python/object/apply:os.system ["touch {marker}"]
        """)
    )
    with pytest.raises(ConfigError, match="unsupported YAML tag"):
        load_schedule(str(path), env={})
    assert not marker.exists()


def test_database_url_error_does_not_show_the_password(write_schedule):
    path = write_schedule(
        dedent("""\
        jobs:
          a:
            every: 1d
            database: "app:s3cret-pw@db.example.com/app"
            sql: SELECT 1
        """)
    )
    with pytest.raises(ConfigError, match="expected a database URL") as info:
        load_schedule(str(path), env={})
    assert "s3cret-pw" not in str(info.value)


APP_JOB = """\
jobs:
  import-feeds:
    enabled: ${APP_URL:+true}
    every: 10m
    http:
      url: ${APP_URL}/tasks/import-feeds
      headers: {Authorization: "Bearer ${CLOCK_TOKEN:-dev}"}
"""


def test_job_enabled_by_an_unset_variable_is_disabled_and_may_name_it(write_schedule):
    schedule = load_schedule(str(write_schedule(APP_JOB)), env={})
    job = schedule.jobs["import-feeds"]
    assert job.enabled is False


def test_variable_set_to_empty_disables_the_job_like_an_unset_one(write_schedule):
    schedule = load_schedule(str(write_schedule(APP_JOB)), env={"APP_URL": ""})
    assert schedule.jobs["import-feeds"].enabled is False


def test_job_enabled_by_a_set_variable_runs_with_it(write_schedule):
    env = {"APP_URL": "https://app.example.com", "CLOCK_TOKEN": "t0ken"}
    schedule = load_schedule(str(write_schedule(APP_JOB)), env=env)
    job = schedule.jobs["import-feeds"]
    assert job.enabled is True
    assert job.action == HttpAction(
        "https://app.example.com/tasks/import-feeds", headers={"Authorization": "Bearer t0ken"}
    )
    assert "t0ken" in schedule.secrets


def test_variable_default_is_used_when_unset_and_ignored_when_set(write_schedule):
    path = write_schedule(
        dedent("""\
        jobs:
          a:
            every: 10m
            http:
              url: ${APP_URL:-http://localhost:5000}/tasks/a
        """)
    )
    unset = load_schedule(str(path), env={})
    assert unset.jobs["a"].action == HttpAction("http://localhost:5000/tasks/a")
    set_ = load_schedule(str(path), env={"APP_URL": "https://app.example.com"})
    assert set_.jobs["a"].action == HttpAction("https://app.example.com/tasks/a")


def test_yaml_anchor_and_merge_key_share_settings_and_own_keys_win(write_schedule):
    path = write_schedule(
        dedent("""\
        jobs:
          nightly-a: &nightly
            cron: "0 3 * * *"
            timezone: Europe/London
            timeout: 10m
            retries: 2
            sql: SELECT 1
          nightly-b:
            <<: *nightly
            timeout: 30s
            sql: SELECT 2
        """)
    )
    schedule = load_schedule(str(path), env={})
    a, b = schedule.jobs["nightly-a"], schedule.jobs["nightly-b"]
    assert (b.zone.key, b.retries, b.trigger_text) == ("Europe/London", 2, "0 3 * * *")
    assert b.timeout == timedelta(seconds=30)
    assert a.timeout == timedelta(minutes=10)
    assert b.action == SqlAction(("SELECT 2",), None)


def test_merge_key_list_earlier_source_wins(write_schedule):
    path = write_schedule(
        dedent("""\
        jobs:
          a: &first
            every: 1h
            retries: 1
            sql: SELECT 1
          b: &second
            every: 2h
            retries: 2
            overlap: allow
            sql: SELECT 2
          c:
            <<: [*first, *second]
        """)
    )
    c = load_schedule(str(path), env={}).jobs["c"]
    assert isinstance(c.trigger, EveryTrigger)
    assert (c.trigger.interval, c.retries, c.overlap) == (timedelta(hours=1), 1, "allow")


def test_problem_in_a_merged_job_points_at_the_anchor_line(write_schedule):
    path = write_schedule(
        dedent("""\
        jobs:
          a: &common
            every: 1h
            overlap: sometimes
            sql: SELECT 1
          b:
            <<: *common
            sql: SELECT 2
        """)
    )
    with pytest.raises(ConfigError) as info:
        load_schedule(str(path), env={})
    assert [(p.line, p.path) for p in info.value.problems] == [(4, "jobs.a.overlap"), (4, "jobs.b.overlap")]


def test_defaults_apply_to_every_job_and_a_job_overrides_them(write_schedule):
    path = write_schedule(
        dedent("""\
        timezone: America/New_York
        defaults:
          timeout: 60s
          retries: 1
          timezone: Europe/Paris
        jobs:
          a:
            every: 10m
            sql: SELECT 1
          b:
            cron: "0 * * * *"
            timeout: 5s
            timezone: UTC
            sql: SELECT 2
        """)
    )
    schedule = load_schedule(str(path), env={})
    a, b = schedule.jobs["a"], schedule.jobs["b"]
    assert (a.timeout, a.retries, a.zone.key) == (timedelta(seconds=60), 1, "Europe/Paris")
    assert (b.timeout, b.retries, b.zone.key) == (timedelta(seconds=5), 1, "UTC")
    assert schedule.zone.key == "America/New_York"


def test_enabled_in_defaults_is_applied_and_a_job_can_opt_back_in(write_schedule):
    path = write_schedule(
        dedent("""\
        defaults:
          enabled: false
        jobs:
          a:
            every: 10m
            sql: SELECT 1
          b:
            every: 10m
            enabled: true
            sql: SELECT 2
        """)
    )
    jobs = load_schedule(str(path), env={}).jobs
    assert (jobs["a"].enabled, jobs["b"].enabled) == (False, True)


# ---- the environment a valid schedule needs ------------------------------------------------------


def test_check_reports_what_each_enabled_job_lacks_in_this_environment(write_schedule, tmp_path):
    path = write_schedule(
        dedent(f"""\
        jobs:
          py: {{every: 1h, python: "no_such_module_4f2a:run"}}
          prog: {{every: 1h, command: [no-such-program-4f2a]}}
          builtin: {{every: 1h, command: "exit 3"}}
          script: {{every: 1h, command: [./missing.sh]}}
          cwd: {{every: 1h, command: [sh], cwd: {tmp_path}/nowhere}}
          shell: {{every: 1h, shell: true, command: "no-such-program-4f2a"}}
          db: {{every: 1h, sql: SELECT 1}}
          rq: {{every: 1h, enqueue: {{func: app.tasks.export}}}}
          cel: {{every: 1h, celery: {{task: app.tasks.export}}}}
          web: {{every: 1h, http: {{url: "http://127.0.0.1:9/x"}}}}
          off: {{every: 1h, enabled: false, command: [no-such-program-4f2a]}}
        """)
    )
    problems = environment_problems(load_schedule(str(path), env={}), env={})
    assert [(p.path, p.message) for p in problems] == [
        ("jobs.py.python", "cannot import no_such_module_4f2a: No module named 'no_such_module_4f2a'"),
        ("jobs.prog.command", "'no-such-program-4f2a' is not on PATH"),
        (
            "jobs.builtin.command",
            "'exit' is not on PATH: it is shell syntax; add 'shell: true' to run the line with sh",
        ),
        ("jobs.script.command", "'./missing.sh' is not an executable file"),
        ("jobs.cwd.command", f"cwd '{tmp_path}/nowhere' is not a directory"),
        ("jobs.db.sql", "no database: set 'database:' on the job, or DATABASE_URL"),
        ("jobs.rq.enqueue", "no Redis: set 'redis:' in enqueue, or REDIS_URL"),
        ("jobs.cel.celery", "no broker: set 'broker:' in celery, or CELERY_BROKER_URL / REDIS_URL"),
    ]
    assert all(p.line for p in problems)
    env = {"DATABASE_URL": "sqlite://", "REDIS_URL": "redis://localhost:6379/0"}
    assert [p.path for p in environment_problems(load_schedule(str(path), env=env), env=env)] == [
        "jobs.py.python",
        "jobs.prog.command",
        "jobs.builtin.command",
        "jobs.script.command",
        "jobs.cwd.command",
    ]


def test_the_clock_runs_its_schedule_without_the_lines_once_the_environment_is_checked(
    write_schedule, monkeypatch, capsys
):
    import sys

    from dynoclock.cli.main import main

    path = write_schedule("jobs:\n  a: {every: 1h, command: [sh]}\n  b: {every: 1h, command: [no-such-program-4f2a]}\n")
    given = []

    def run_clock(schedule, clock):
        given.append(schedule)
        return 0

    monkeypatch.setenv("CLOCK_SUPERVISE", "0")
    monkeypatch.setattr("dynoclock.daemon.process.run_clock", run_clock)
    monkeypatch.setattr(sys, "path", list(sys.path))  # the command adds the schedule's folder
    assert main(["run", "-c", str(path)]) == 2 and given == []
    assert f"{path}:3: jobs.b.command: 'no-such-program-4f2a' is not on PATH" in capsys.readouterr().err
    path.write_text("jobs:\n  a: {every: 1h, command: [sh]}\n")
    assert main(["run", "-c", str(path)]) == 0
    (schedule,) = given
    assert list(schedule.jobs) == ["a"] and schedule.lines == {}


def test_a_loaded_job_and_what_it_holds_keep_no_attribute_dict(write_schedule):
    # One of each per job, 10,000 jobs in a schedule: an attribute dict each was megabytes of the clock's memory.
    path = write_schedule(
        'jobs:\n  a: {cron: "0 3 * * *", start: "2030-01-01T00:00:00Z", python: "tests.jobs_for_tests:echo_args"}\n'
        "  b: {every: 10m, command: [sh]}\n  c: {at: 2030-01-01T00:00:00Z, sql: SELECT 1, database: 'sqlite://'}\n"
    )
    jobs = load_schedule(str(path), env={}).jobs
    held = [(job, job.trigger, job.window, job.action) for job in jobs.values()]
    assert [type(o).__name__ for o in held[0] + held[1][1:2] + held[2][1:2] + held[1][3:] + held[2][3:]] == [
        "Job", "CronTrigger", "Window", "PythonAction", "EveryTrigger", "AtTrigger", "CommandAction", "SqlAction",
    ]  # fmt: skip
    assert not [o for objects in held for o in objects if hasattr(o, "__dict__")]


def test_jobs_with_the_same_trigger_or_window_share_one(write_schedule):
    path = write_schedule(
        'jobs:\n  a: {cron: "0 3 * * *", start: "2030-01-01T00:00:00Z", command: [sh]}\n'
        '  b: {cron: "0 3 * * *", start: "2030-01-01T01:00:00+01:00", command: [sh]}\n'
        "  c: {every: 1h, command: [sh]}\n  d: {every: 60m, command: [sh]}\n  e: {every: 2h, command: [sh]}\n"
    )
    a, b, c, d, e = load_schedule(str(path), env={}).jobs.values()
    assert a.trigger is b.trigger and a.window is b.window and c.window is d.window is e.window
    assert c.trigger is d.trigger and c.trigger is not e.trigger and e.trigger == EveryTrigger(timedelta(hours=2))
