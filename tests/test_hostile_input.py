"""Hostile schedule files: ``check`` answers every one with located lines and exit 2, in bounded memory.

Each file goes through the real ``python clock.py check`` with its address space capped at 1 GiB (``ulimit -v``):
a YAML alias bomb, a merge-key bomb, too many aliases, nesting too deep (written, or reached through aliases),
then every key that takes a number, a duration or a boolean over a table of nasty values (huge numbers,
superscript and Arabic-Indic digits, 1e999, NaN, -0, floats, nested lists, a 100,000-character string). The
answer must be one ``FILE:LINE: key.path: message`` line per problem (each short), exit 2, and no traceback.
"""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.processes import PYTHON, ROOT, clock_env

MEMORY_KB = 1024 * 1024  # a clock that reads a bomb must stay well inside a small dyno
LONGEST_LINE = 400  # a problem line quotes what it found, shortened: never the whole 100,000 characters


def check(path: Path) -> subprocess.CompletedProcess[str]:
    """``python clock.py check -c PATH`` as a real process, with its address space capped at ``MEMORY_KB``."""
    argv = [PYTHON, str(ROOT / "clock.py"), "check", "-c", str(path)]
    return subprocess.run(
        ["sh", "-c", f'ulimit -v {MEMORY_KB} && exec "$@"', "sh", *argv],
        cwd=ROOT,
        env=clock_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )


def assert_refused(path: Path, result: subprocess.CompletedProcess[str], expected: list[tuple[int, str, str]]) -> None:
    """Exit 2, no traceback, and exactly the ``expected`` (line, key path, message regex) lines, in file order."""
    assert "Traceback" not in result.stderr + result.stdout, result.stderr[-3000:]
    assert result.returncode == 2, (result.returncode, result.stderr[-3000:])
    lines = result.stderr.splitlines()
    assert len(lines) == len(expected), result.stderr[-3000:]
    for text, (line, key, pattern) in zip(lines, expected, strict=True):
        assert len(text) <= LONGEST_LINE, text[:1000]
        prefix = f"{path}:{line}: {key}: " if key else f"{path}:{line}: "
        assert text.startswith(prefix), text
        assert re.search(pattern, text[len(prefix) :]), text


def line_of(text: str, needle: str, nth: int = 1) -> int:
    """The 1-based line of the ``nth`` line of ``text`` that contains ``needle``."""
    found = [i for i, line in enumerate(text.splitlines(), 1) if needle in line]
    return found[nth - 1]


JOB = "jobs:\n  a:\n    every: 10m\n    command: [echo]\n"


# ---- bombs and depth ---------------------------------------------------------------------------------------


def billion_laughs(levels: int = 10, width: int = 9) -> str:
    """The classic: each anchor is a list of ``width`` aliases to the one before, 9^10 values from 600 bytes."""
    lines = ["x-a0: &a0 [" + ", ".join(["lol"] * width) + "]"]
    for i in range(1, levels):
        lines.append(f"x-a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * width) + "]")
    return "\n".join(lines) + "\n" + JOB + f"    kwargs: {{x: *a{levels - 1}}}\n"


def merge_bomb(levels: int = 12, width: int = 9) -> str:
    """Merge keys that merge the level below ``width`` times: the result stays 9 keys, the work is 9^11."""
    lines = ["x-m0: &m0 {" + ", ".join(f"k{j}: 1" for j in range(width)) + "}"]
    for i in range(1, levels):
        lines.append(f"x-m{i}: &m{i} {{<<: [" + ", ".join([f"*m{i - 1}"] * width) + "]}")
    return "\n".join(lines) + "\n" + JOB.replace("  a:\n", f"  a:\n    <<: *m{levels - 1}\n")


def many_aliases(count: int) -> str:
    return "x-one: &one 1\nx-many:\n" + "".join("  - *one\n" for _ in range(count)) + JOB


def nested(depth: int, flow: bool) -> str:
    """``x-deep`` holding lists nested so that the file is ``depth`` collections deep (the top mapping is one)."""
    inner = depth - 1
    if flow:
        return JOB + "x-deep: " + "[" * inner + "]" * inner + "\n"
    return JOB + "x-deep:\n" + "".join("  " * (i + 1) + "-\n" for i in range(inner - 1)) + "  " * inner + "- 1\n"


def deep_through_aliases() -> str:
    """An anchor 60 levels deep used 45 levels down: 106 levels once expanded, 61 as written."""
    d = "x-d: &d " + "[" * 60 + "]" * 60 + "\n"
    return d + "x-e: " + "[" * 45 + "*d" + "]" * 45 + "\n" + JOB


@dataclass(frozen=True)
class Case:
    id: str
    text: str
    problems: list[tuple[int, str, str]]  # (line, key path, regex on the message)


def case(id: str, text: str, *problems: tuple[int, str, str]) -> Case:
    return Case(id, text, list(problems))


BOMB = r"YAML alias \*{alias} takes the file past 100,000 values added by aliases: .*\(an alias bomb\)$"
_LAUGHS = billion_laughs()
_MERGES = merge_bomb()
_MANY = many_aliases(10_001)
_DEEP_ALIAS = deep_through_aliases()

CASES = [
    case(
        "billion-laughs",
        _LAUGHS,
        (line_of(_LAUGHS, "x-a5"), "x-a5[0]", BOMB.format(alias="a4")),
    ),
    case(
        "merge-key-bomb",
        _MERGES,
        (line_of(_MERGES, "x-m5:"), "x-m5", BOMB.format(alias="m4")),
    ),
    case(
        "more-than-10000-aliases",
        _MANY,
        (line_of(_MANY, "*one", 10_001), "", r"more than 10,000 YAML aliases: expected .*, found the 10,001st here$"),
    ),
    case(
        "nested-1000-flow",
        nested(1000, flow=True),
        (5, "", r"nested more than 100 levels deep: expected .*found a 101st level here"),
    ),
    case(
        "nested-100000-flow",
        nested(100_000, flow=True),
        (5, "", r"nested more than 100 levels deep"),
    ),
    case(
        "nested-1000-block",
        nested(1000, flow=False),
        (105, "", r"nested more than 100 levels deep"),
    ),
    case(
        "nested-1000-flow-mappings",
        JOB + "x-deep: " + "{a: " * 1000 + "1" + "}" * 1000 + "\n",
        (5, "", r"nested more than 100 levels deep"),
    ),
    case("nested-101", nested(101, flow=True), (5, "", r"nested more than 100 levels deep")),
    case(
        "nested-deeper-through-aliases",
        _DEEP_ALIAS,
        (2, "x-e" + "[0]" * 45, r"YAML alias \*d nests the file more than 100 levels deep"),
    ),
    # ---- values whose parsing raised ------------------------------------------------------------------
    case(
        "retries-5000-digits",
        JOB + "    retries: " + "1" * 5000 + "\n",
        (
            5,
            "jobs.a.retries",
            r"expected a number of at most 4,300 digits \(or text in quotes\), got '1+'\.\.\. \(5,000 characters\)$",
        ),
    ),
    case(
        "retries-5000-digits-quoted",
        JOB + "    retries: '" + "1" * 5000 + "'\n",
        (5, "jobs.a.retries", r"expected a number between 0 and 100, got '1111.*'\.\.\. \(5,000 characters\)$"),
    ),
    case(
        "start-100000-characters",
        JOB + "    start: '" + "2" * 100_000 + "'\n",
        (5, "jobs.a.start", r"expected an ISO-8601 time like .*, got '2222.*'\.\.\. \(100,000 characters\)$"),
    ),
    case(
        "workers-superscript-two",
        "workers: ²\n" + JOB,
        (1, "workers", r"expected a whole number, got '²'"),
    ),
    case(
        "timezone-that-is-a-folder",
        JOB + "    timezone: America\n",
        (5, "jobs.a.timezone", r"unknown time zone 'America'; expected an IANA name like Europe/London"),
    ),
    case(
        "timezone-5000-characters",
        JOB + "    timezone: " + "x" * 5000 + "\n",
        (5, "jobs.a.timezone", r"unknown time zone 'xxxx.*'\.\.\. \(5,000 characters\)"),
    ),
    case(
        "expect-status-superscript",
        "jobs:\n  a:\n    every: 1m\n    http: {url: 'http://127.0.0.1/x', expect_status: '²00'}\n",
        (4, "jobs.a.http.expect_status", r"expected an HTTP status like 200 or 2xx .*got '²00'"),
    ),
    case(
        "ping-port-out-of-range",
        JOB + "    ping: 'http://127.0.0.1:99999999999/p'\n",
        (5, "jobs.a.ping", r"expected a port from 0 to 65535 in the URL"),
    ),
    case(
        "ping-port-superscript",
        JOB + "    ping: 'http://127.0.0.1:²/p'\n",
        (5, "jobs.a.ping", r"expected a port from 0 to 65535 in the URL"),
    ),
    case(
        "cron-field-5000-digits",
        "jobs:\n  a:\n    cron: '" + "1" * 5000 + " * * * *'\n    command: [echo]\n",
        (3, "jobs.a.cron", r"expected a crontab expression .*got '1111.*'\.\.\. \(5,008 characters\)"),
    ),
]


def test_the_hostile_table_ids_are_unique():
    assert len({c.id for c in CASES}) == len(CASES)


@pytest.mark.parametrize("c", [pytest.param(c, id=c.id) for c in CASES])
def test_hostile_file_is_refused_with_a_located_line(tmp_path, c):
    path = tmp_path / "schedule.yaml"
    path.write_text(c.text)
    assert_refused(path, check(path), c.problems)


def test_the_billion_laughs_file_is_about_1_kb():
    assert len(_LAUGHS.encode()) < 1200


def test_nesting_100_deep_and_anchors_in_5000_jobs_are_still_fine(tmp_path):
    """The limits leave room for any real schedule: the deepest allowed nesting, and a merge and an alias
    in each of 5,000 jobs (10,000 aliases; each job grows by a 5-key mapping)."""
    deep = tmp_path / "deep.yaml"
    deep.write_text(nested(100, flow=True))
    lines = ["x-job: &job {every: 10m, timeout: 30s, retries: 2, overlap: allow, catch_up: all}", "x-cmd: &cmd [echo]"]
    lines += ["jobs:"] + [f"  j{i}:\n    <<: *job\n    command: *cmd" for i in range(5000)]
    anchors = tmp_path / "anchors.yaml"
    anchors.write_text("\n".join(lines) + "\n")
    for path, jobs in ((deep, 1), (anchors, 5000)):
        result = check(path)
        assert result.returncode == 0, result.stderr[-3000:]
        assert f"ok, {jobs} jobs" in result.stdout


# ---- every number, duration and boolean over nasty values --------------------------------------------------

_OPTIONS = ("timeout", "retries", "retry_delay", "retry_max_delay", "misfire_grace", "jitter", "enabled")
_HTTP = ("connect_timeout", "verify", "follow_redirects")
_ENQUEUE = ("job_timeout", "result_ttl", "verify", "wait")
# Every key read by the number, duration and boolean parsers of dynoclock/config, set to {v}; each in a job (or
# place) of its own, so that each problem has its own line. FUZZED_PATHS names them in the same order.
FUZZ_TEMPLATE = (
    "workers: {v}\nshutdown_grace: {v}\nhistory_keep: {v}\ndefaults:\n  retries: {v}\n  timeout: {v}\njobs:\n"
    + "".join(f"  o-{k}:\n    cron: '0 * * * *'\n    command: [echo]\n    {k}: {{v}}\n" for k in _OPTIONS)
    + "  t-every:\n    command: [echo]\n    every: {v}\n"
    + "  c-shell:\n    every: 1h\n    command: [echo]\n    shell: {v}\n"
    + "".join(f"  h-{k}:\n    every: 1h\n    http: {{url: 'http://127.0.0.1:9/', {k}: {{v}}}}\n" for k in _HTTP)
    + "".join(
        f"  q-{k}:\n    every: 1h\n    enqueue: {{func: tests.rq_tasks.add, redis: 'redis://127.0.0.1', {k}: {{v}}}}\n"
        for k in _ENQUEUE
    )
)
FUZZED_PATHS = [
    *("workers", "shutdown_grace", "history_keep", "defaults.retries", "defaults.timeout"),
    *(f"jobs.o-{k}.{k}" for k in _OPTIONS),
    *("jobs.t-every.every", "jobs.c-shell.shell"),
    *(f"jobs.h-{k}.http.{k}" for k in _HTTP),
    *(f"jobs.q-{k}.enqueue.{k}" for k in _ENQUEUE),
]

# Nasty values as written in YAML; none of them is a valid number, duration or boolean.
NASTY: dict[str, str] = {
    "4301-digits": "1" * 4301,
    "5000-digits-quoted": "'" + "1" * 5000 + "'",
    "4000-digits": "9" * 4000,
    "4000-digits-with-unit": "'" + "9" * 4000 + "s'",
    "superscript-two": "²",
    "superscript-two-quoted": "'²'",
    "superscript-with-unit": "'²m'",
    "arabic-indic-twelve": "'١٢'",
    "arabic-indic-with-unit": "'١٢m'",
    "fullwidth-with-unit": "'１０m'",
    "1e999-text": "1e999",
    "1e999-float": "1.0e+999",
    "minus-inf": "-.inf",
    "nan-float": ".nan",
    "nan-text": "'NaN'",
    "minus-zero-text": "'-0'",
    "negative": "-1",
    "negative-duration": "'-5s'",
    "float": "1.5",
    "float-duration": "'1.5m'",
    "nested-lists": "[[[[1]]]]",
    "mapping": "{a: 1}",
    "null": "~",
    "100000-characters": "'" + "x" * 100_000 + "'",
}


def fuzz_file(value: str) -> tuple[str, list[tuple[int, str]]]:
    """A schedule with ``value`` under every fuzzed key, and the (line, key path) of each, in file order."""
    marked = [i for i, line in enumerate(FUZZ_TEMPLATE.splitlines(), 1) if "{v}" in line]
    return FUZZ_TEMPLATE.replace("{v}", value), list(zip(marked, FUZZED_PATHS, strict=True))


@pytest.mark.parametrize("name", list(NASTY))
def test_every_number_duration_and_boolean_refuses_a_nasty_value(tmp_path, name):
    text, where = fuzz_file(NASTY[name])
    assert len(where) == len(FUZZED_PATHS) == 21
    path = tmp_path / "schedule.yaml"
    path.write_text(text)
    assert_refused(path, check(path), [(line, key, r"expected .*, (got|found) ") for line, key in where])
