"""YAML that expands without bound is refused before it is built: alias bombs, recursive
aliases, deep nesting; explicit tags that cannot be read are problems, never crashes."""
from __future__ import annotations

import time
import tracemalloc

import pytest

from bootgen import source
from bootgen.errors import InputError
from bootgen.source import load_yaml_text

pytestmark = pytest.mark.timeout(20)


def _bomb(levels: int = 9, width: int = 9) -> str:
    lines = ['a: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    previous = "a"
    for name in "bcdefghijklmnop"[: levels - 1]:
        lines.append(f"{name}: &{name} [" + ", ".join([f"*{previous}"] * width) + "]")
        previous = name
    return "\n".join(lines) + "\n"


def _problems(text: str, name: str = "n.yaml") -> list[str]:
    with pytest.raises(InputError) as err:
        load_yaml_text(text, name)
    return [p.format() for p in err.value.problems]


def _timed(text: str) -> tuple[list[str], float, int]:
    tracemalloc.start()
    started = time.perf_counter()
    try:
        problems = _problems(text)
    finally:
        elapsed = time.perf_counter() - started
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return problems, elapsed, peak


def test_billion_laughs_is_refused_at_once_at_the_alias(capsys):
    text = _bomb()
    assert len(text) < 1024
    problems, elapsed, peak = _timed(text)
    assert problems == ["n.yaml:6:8: error at $.f[0]: YAML aliases expand to too much data "
                        "(more than 100000 values repeated through aliases)\n"
                        "  hint: write the repeated data out, or repeat less"]
    assert elapsed < 2
    assert peak < 20 * 1024 * 1024


def test_a_deeper_bomb_costs_no_more():
    problems, elapsed, peak = _timed(_bomb(levels=15, width=30))
    assert problems[0].startswith("n.yaml:4:48: error at $.d[10]: YAML aliases expand to too much data")
    assert elapsed < 2 and peak < 20 * 1024 * 1024


def test_a_large_scalar_repeated_through_aliases_is_refused():
    text = "a: &a '" + "x" * 1_000_000 + "'\nb: [" + ", ".join(["*a"] * 20) + "]\n"
    problems, elapsed, _ = _timed(text)
    assert problems[0].startswith(
        "n.yaml:2:69: error at $.b[16]: YAML aliases expand to too much data "
        "(more than 16777216 characters repeated through aliases)")
    assert elapsed < 2


def test_bomb_in_mapping_values_is_located_by_key():
    text = "base: &x {a: 1, b: 2, c: 3}\n" + "".join(f"k{i}: *x\n" for i in range(20))
    original = source.MAX_ALIASED
    source.MAX_ALIASED = 50
    try:
        problems = _problems(text)
    finally:
        source.MAX_ALIASED = original
    # *x expands to 7 values (the mapping, three keys, three values): the 8th alias passes 50.
    assert problems[0].startswith("n.yaml:9:5: error at $.k7: YAML aliases expand to too much data "
                                  "(more than 50 values repeated through aliases)")


@pytest.mark.parametrize("text,expected", [
    ("a: &a [*a]\n", "n.yaml:1:8: error at $.a[0]: recursive YAML alias *a: it is inside the value it names"),
    ("&a {x: *a}\n", "n.yaml:1:8: error at $.x: recursive YAML alias *a: it is inside the value it names"),
    ("top:\n  loop: &loop\n    inner: [1, {again: *loop}]\n",
     "n.yaml:3:24: error at $.top.loop.inner[1].again: recursive YAML alias *loop: it is inside the value it names"),
])
def test_recursive_alias_is_a_problem_not_a_recursion_error(text, expected):
    assert _problems(text) == [expected + "\n  hint: a value cannot contain itself; write out the part you need instead"]


@pytest.mark.parametrize("text,column", [
    ("[" * 100_000 + "]" * 100_000, 65),  # would crash libyaml's composer (C recursion)
    ("{a: " * 100_000 + "}" * 100_000, 257),
    ("- " * 100_000 + "x", 129),
    ("[" * 300 + "]" * 300, 65),  # short: caught while building, before Python's recursion limit
])
def test_deep_nesting_is_refused(text, column):
    assert _problems(text) == [f"n.yaml:1:{column}: error: YAML nesting is deeper than 64 levels\n"
                               "  hint: flatten the data"]


def test_nesting_within_the_limit_and_ordinary_aliases_load():
    assert load_yaml_text("[" * 63 + "]" * 63, "n").data is not None
    doc = load_yaml_text("a: &x [1, {k: v}]\nb: *x\nc: *x\n", "n")
    assert doc.data == {"a": [1, {"k": "v"}], "b": [1, {"k": "v"}], "c": [1, {"k": "v"}]}
    assert doc.data["b"] is not doc.data["c"]
    assert str(doc.locate(("c", 1, "k"))) == "n:1:15"  # an aliased value is located at its anchor


def test_too_many_values_without_aliases():
    text = "[" + ",".join(["1"] * 1_000_001) + "]"
    assert _problems(text)[0].startswith(
        "n.yaml:1:2000000: error at $[999999]: the document expands to too much data (more than 1000000 values)")


def test_duplicate_anchor_names_its_first_line():
    assert _problems("a: &x 1\nb: &x 2\nc: *x\n") == [
        "n.yaml:2:4: error: invalid YAML: duplicate anchor (first defined on line 1)"]


@pytest.mark.parametrize("text,expected", [
    ("a: !!int x\n", "n.yaml:1:4: error at $.a: cannot read 'x' as an integer"),
    ("a: !!float x\n", "n.yaml:1:4: error at $.a: cannot read 'x' as a number"),
    ("a: !!bool maybe\n", "n.yaml:1:4: error at $.a: cannot read 'maybe' as true or false"),
    ("a: " + "1" * 5000 + "\n", "n.yaml:1:4: error at $.a: cannot read a value of 5000 characters as an integer"),
])
def test_unreadable_tagged_scalars_are_problems(text, expected):
    assert _problems(text) == [expected + "\n  hint: quote it to keep it as text"]


def test_dates_that_are_not_dates_stay_text():
    assert load_yaml_text("a: 2020-13-45\nb: !!timestamp 2020-99-99\n", "n").data == {
        "a": "2020-13-45", "b": "2020-99-99"}
