"""Input files themselves: not UTF-8 or control characters give a line and column; a node that
is a directory or a FIFO is refused (never skipped, never blocking)."""
from __future__ import annotations

import os

import pytest

from bootgen.build import plan_build
from bootgen.errors import InputError


def _problems(example) -> list[str]:
    with pytest.raises(InputError) as err:
        plan_build(example, fetch=False)
    return [p.format().split("\n")[0] for p in err.value.problems]


def test_bytes_that_are_not_utf8_are_located(example):
    (example.nodes / "latin.yaml").write_bytes(b"interfaces:\n  - mac: 52:54:00:00:00:01\n# caf\xe9\n")
    assert _problems(example) == [
        "nodes/latin.yaml:3:6: error: not UTF-8 text: invalid continuation byte (byte 0xe9)"]


def test_a_control_character_is_located(example):
    (example.nodes / "ctl.yaml").write_text("interfaces:\n  - mac: 52:54:00:00:00:01\nhostname: a\x07b\n")
    assert _problems(example) == [
        "nodes/ctl.yaml:3:12: error: invalid YAML: control character 0x07 is not allowed"]


@pytest.mark.timeout(30)
def test_a_node_that_is_a_fifo_or_a_directory_is_refused(example):
    os.mkfifo(example.nodes / "pipe.yaml")
    (example.nodes / "dir.yaml").mkdir()
    problems = _problems(example)
    assert len(problems) == 2
    assert problems[0].startswith("nodes/dir.yaml: error: ")
    assert problems[1].startswith("nodes/pipe.yaml: error: ")
