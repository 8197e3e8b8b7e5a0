"""Run ids (dynoclock/runid.py): uuid4's form, distinct, and not shared with a forked child or `random.seed`."""

from __future__ import annotations

import os
import random
import re

from dynoclock.runid import new_run_id


def test_a_run_id_is_32_hex_digits_and_ids_do_not_repeat() -> None:
    ids = [new_run_id() for _ in range(20_000)]
    assert all(re.fullmatch(r"[0-9a-f]{32}", run_id) for run_id in ids)
    assert len(set(ids)) == len(ids)
    assert any(run_id.startswith("0") for run_id in ids)  # leading zeros are kept: always 32 digits


def test_a_forked_child_draws_other_ids_than_its_parent() -> None:
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        os.write(write, ",".join(new_run_id() for _ in range(3)).encode())
        os._exit(0)
    os.close(write)
    os.waitpid(pid, 0)
    child = os.read(read, 4096).decode().split(",")
    os.close(read)
    parent = [new_run_id() for _ in range(3)]
    assert len(child) == 3
    assert not set(child) & set(parent)


def test_seeding_the_random_module_does_not_fix_the_ids() -> None:
    random.seed(0)
    first = new_run_id()
    random.seed(0)
    assert new_run_id() != first
