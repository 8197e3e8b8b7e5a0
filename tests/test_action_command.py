"""``command:`` jobs as real subprocesses."""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable
from pathlib import Path

from dynoclock.actions.command import MAX_LINE, MAX_LINES
from dynoclock.observe.timefmt import iso_utc
from tests.support.processes import PYTHON, process_gone, run_cli, wait_until
from tests.support.runner import Harness, now_slot

Write = Callable[[str], Path]


def command_job(command: list[str] | str, extra: str = "", timeout: str = "30s") -> str:
    """A one-job schedule; a list is written as a YAML flow list of JSON strings (no quoting surprises)."""
    value = json.dumps(command)
    return f"jobs:\n  task:\n    every: 1h\n    timeout: {timeout}\n    command: {value}\n{extra}"


def output(h: Harness, stream: str | None = None, job: str = "task") -> list[str]:
    return [e["line"] for e in h.captured.of("run.output", job=job) if stream in (None, e["stream"])]


def test_an_argv_list_runs_without_a_shell(write_schedule: Write) -> None:
    args = ["a b", "$HOME", "*", "; echo injected"]
    h = Harness.load(
        write_schedule(command_job([PYTHON, "-c", "import json,sys; print(json.dumps(sys.argv[1:]))", *args]))
    )
    outcome = h.run("task")
    assert (outcome.status, outcome.detail) == ("ok", "exit=0")
    assert [json.loads(line) for line in output(h, "stdout")] == [args]  # passed literally, one by one


def test_a_string_with_shell_true_runs_in_sh_and_both_streams_are_logged(write_schedule: Write) -> None:
    h = Harness.load(write_schedule(command_job('echo "$((6 * 7))"; echo to-stderr >&2', "    shell: true\n")))
    assert h.run("task").status == "ok"
    assert output(h, "stdout") == ["42"]
    assert output(h, "stderr") == ["to-stderr"]
    [start] = h.captured.of("run.start", job="task")
    assert {e["run_id"] for e in h.captured.of("run.output")} == {start["run_id"]}


def test_env_and_cwd_apply_to_the_command(write_schedule: Write, tmp_path: Path) -> None:
    workdir = tmp_path / "work"
    workdir.mkdir()
    script = "import os; print(os.getcwd()); print(os.environ['GREETING'])"
    h = Harness.load(
        write_schedule(
            command_job([PYTHON, "-c", script], f"    env: {{GREETING: hello there}}\n    cwd: '{workdir}'\n")
        )
    )
    assert h.run("task").status == "ok"
    assert output(h, "stdout") == [str(workdir), "hello there"]


def test_the_run_is_described_in_clock_variables(write_schedule: Write) -> None:
    h = Harness.load(
        write_schedule(command_job('echo "$CLOCK_JOB|$CLOCK_SCHEDULED_FOR|$CLOCK_RUN_ID"', "    shell: true\n"))
    )
    slot = now_slot()
    assert h.run("task", slot).status == "ok"
    [start] = h.captured.of("run.start", job="task")
    assert output(h) == [f"task|{iso_utc(slot)}|{start['run_id']}"]


def test_a_nonzero_exit_fails_the_run(write_schedule: Write) -> None:
    h = Harness.load(write_schedule(command_job([PYTHON, "-c", "import sys; print('half done'); sys.exit(3)"])))
    outcome = h.run("task")
    assert (outcome.status, outcome.error) == ("failed", "exit=3: half done")
    assert output(h) == ["half done"]
    [failed] = h.captured.of("run.failed", job="task")
    assert failed["error"] == "exit=3: half done"


def test_a_missing_program_fails_the_run(write_schedule: Write) -> None:
    h = Harness.load(write_schedule(command_job(["no-such-program-for-clock-tests"])))
    outcome = h.run("task")
    assert outcome.status == "failed"
    assert outcome.error.startswith("cannot start 'no-such-program-for-clock-tests'")


def test_a_command_ignoring_sigterm_is_killed_at_its_timeout(write_schedule: Write, tmp_path: Path) -> None:
    got_term = tmp_path / "got-term"
    # In schedule.yaml "$$" is a literal "$", so the shell's own $$ (its pid) is written "$$$$".
    script = f"trap 'echo TERM >> {got_term}' TERM; echo $$$$; while :; do sleep 0.1; done"
    h = Harness.load(write_schedule(command_job(script, "    shell: true\n", timeout="1s")))
    outcome = h.run("task")
    assert (outcome.status, outcome.error) == ("timeout", "timeout=1s exceeded")
    assert h.captured.names(job="task")[0] == "run.start"
    assert h.captured.names(job="task")[-1] == "run.timeout"
    assert not h.captured.of("run.abandoned")
    assert got_term.read_text().split() == ["TERM"]  # it was asked to stop, and refused
    pid = int(output(h, "stdout")[0])
    assert process_gone(pid)  # so it was killed (SIGKILL)


# ---- ${VAR} in shell: true commands -------------------------------------------------------------

# Spaces, both quotes, $, backticks, a command substitution, a backslash, a glob, a `;` command, a newline.
NASTY = "a  b 'c' \"d\" $HOME `id` $(id) \\ * ; touch pwned\nsecond line"

# Every place a ${VAR} can stand in an sh script; each line writes what the shell made of it to a file.
CONTEXTS = """\
# don't let this quote open a string
printf %s ${V} > plain.txt
printf %s "<${V}>" > double.txt
printf %s '<${V}>' > single.txt
x=$(printf %s ${V}); printf %s "$x" > substitution.txt
printf '<%s>' ${MISSING:-two words} ${EMPTY} ${MISSING:+gone} ${V:+--flag} > words.txt
cat > here.txt <<END
<${V}> $$HOME
END
cat > quoted-here.txt <<'END'
<${V}> $$HOME
END
echo $((${N} * 7)) > arithmetic.txt
printf %s ${V}\\${N} > escaped.txt
"""


def test_a_value_in_a_shell_command_is_never_parsed_as_shell(tmp_path: Path) -> None:
    schedule = tmp_path / "schedule.yaml"
    schedule.write_text(command_job("echo ${NAME} > out.txt", "    shell: true\n"))
    pwned = tmp_path / "pwned"
    result = run_cli("run", "task", "-c", str(schedule), cwd=tmp_path, env={"NAME": f"x; touch {pwned}"})
    assert result.returncode == 0, result.stdout + result.stderr
    assert not pwned.exists()
    assert (tmp_path / "out.txt").read_text() == f"x; touch {pwned}\n"


def test_a_value_arrives_intact_wherever_it_stands_in_a_shell_script(write_schedule: Write, tmp_path: Path) -> None:
    h = Harness.load(
        write_schedule(command_job(CONTEXTS, f"    shell: true\n    cwd: '{tmp_path}'\n")),
        env={"V": NASTY, "N": "6", "EMPTY": ""},
    )
    outcome = h.run("task")
    assert outcome.status == "ok", (outcome, output(h))
    assert not (tmp_path / "pwned").exists()
    written = {path.stem: path.read_text() for path in tmp_path.glob("*.txt")}
    assert written == {
        "plain": NASTY,
        "double": f"<{NASTY}>",
        "single": f"<{NASTY}>",
        "substitution": NASTY,
        "words": "<two><words><--flag>",  # the words written in the schedule are script, and nothing is nothing
        "here": f"<{NASTY}> {os.environ['HOME']}\n",  # the shell expands its own $HOME in a here-document
        "quoted-here": f"<{NASTY}> $HOME\n",  # and not in a quoted one
        "arithmetic": "42\n",
        "escaped": f"{NASTY}6",
    }


def test_several_words_are_the_shells_own_variable(write_schedule: Write) -> None:
    h = Harness.load(
        write_schedule(command_job("printf '<%s>' ${ARGS} $$ARGS", "    shell: true\n    env: {ARGS: one two}\n")),
        env={"ARGS": "one two"},
    )
    assert h.run("task").status == "ok"
    assert output(h) == ["<one two><one><two>"]


def test_a_value_that_would_end_a_quoted_here_document_is_refused_by_check(tmp_path: Path) -> None:
    schedule = tmp_path / "schedule.yaml"
    schedule.write_text(command_job("cat <<'EOF'\n${V}\nEOF\n", "    shell: true\n"))
    result = run_cli("check", "-c", str(schedule), env={"V": "harmless\nEOF\ntouch pwned"})
    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr.splitlines() == [
        f"{schedule}:5: jobs.task.command: expected ${{V}} inside the here-document <<'EOF' to have no line "
        "'EOF' (it would end the document there), got a value that has one"
    ]
    assert run_cli("check", "-c", str(schedule), env={"V": "EOF inside a line is fine"}).returncode == 0


# ---- output -------------------------------------------------------------------------------------


def test_a_huge_line_is_cut_and_the_run_still_succeeds(write_schedule: Write) -> None:
    # 200 MB without a newline, then a short line; and one on stderr.
    script = "printf start; head -c 200000000 /dev/zero | tr '\\000' x; printf '\\nafter\\n'; echo err >&2"
    h = Harness.load(write_schedule(command_job(script, "    shell: true\n")))
    outcome = h.run("task")
    assert (outcome.status, outcome.detail) == ("ok", "exit=0")
    first, after = output(h, "stdout")
    assert first == "start" + "x" * (MAX_LINE - 5) + f" [line cut: {200_000_005 - MAX_LINE} more bytes]"
    assert after == "after"
    assert output(h, "stderr") == ["err"]


def test_a_line_is_cut_between_characters(write_schedule: Write) -> None:
    script = f"import sys; sys.stdout.write('x' + 'é' * {MAX_LINE}); sys.exit(1)"
    h = Harness.load(write_schedule(command_job([PYTHON, "-c", script])))
    outcome = h.run("task")
    kept = "x" + "é" * ((MAX_LINE - 1) // 2)
    line = f"{kept} [line cut: {2 * MAX_LINE + 1 - len(kept.encode())} more bytes]"
    assert output(h) == [line]
    assert (outcome.status, outcome.error) == ("failed", f"exit=1: {line}")


def test_output_beyond_the_line_budget_is_counted(write_schedule: Write) -> None:
    h = Harness.load(write_schedule(command_job(["seq", "1", "1500"])))
    assert h.run("task").status == "ok"
    lines = output(h)
    assert lines[:MAX_LINES] == [str(n) for n in range(1, MAX_LINES + 1)]
    assert lines[MAX_LINES:] == ["[500 more output lines not logged]"]


# ---- processes left behind ----------------------------------------------------------------------


def live_members(group: int) -> list[str]:
    """The processes of process group ``group`` still alive (zombies do not count), as "pid name"."""
    found = []
    for entry in filter(str.isdigit, os.listdir("/proc")):
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        name, fields = stat[stat.index("(") + 1 : stat.rindex(")")], stat[stat.rindex(")") + 2 :].split()
        if int(fields[2]) == group and fields[0] != "Z":  # fields: state, ppid, pgrp, ...
            found.append(f"{entry} {name}")
    return found


def test_background_children_holding_the_pipes_leak_nothing(write_schedule: Write) -> None:
    leaver = json.dumps("sleep 300 & echo $$$$; echo on-stderr >&2")
    h = Harness.load(
        write_schedule(f"{command_job(['true'])}  leaver:\n    every: 1h\n    shell: true\n    command: {leaver}\n")
    )
    assert h.run("task").status == "ok"  # the runner's own threads are up
    threads, fds = threading.active_count(), len(os.listdir("/proc/self/fd"))
    for _ in range(5):
        assert h.run("leaver").status == "ok"
    assert threading.active_count() <= threads
    assert len(os.listdir("/proc/self/fd")) <= fds
    assert output(h, "stderr", job="leaver") == ["on-stderr"] * 5
    groups = [int(line) for line in output(h, "stdout", job="leaver")]  # the shell's pid is its group's id

    def left() -> list[str]:
        return [member for group in groups for member in live_members(group)]

    wait_until(lambda: not left(), "the commands' process groups to be gone", details=lambda: str(left()))
