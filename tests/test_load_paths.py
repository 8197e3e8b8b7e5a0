"""The shortcuts of the schedule load give what the long way gives: libyaml's events and PyYAML's own parser
compose the same tree; values read once and reused (tags, crons, durations, zones, defaults) never carry one
job's settings into another's."""

from __future__ import annotations

from textwrap import dedent

import pytest
import yaml

from dynoclock.config import source
from dynoclock.config.source import load

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
