"""The fast YAML dumper writes exactly what PyYAML's SafeDumper writes."""
from __future__ import annotations

import yaml
from hypothesis import given, settings, strategies as st

from bootgen.render.yamldump import BlockDumper, Dumper

_SAFE = getattr(yaml, "CSafeDumper", yaml.SafeDumper)


class _BlockReference(_SAFE):
    """What the Tinkerbell export used before: SafeDumper with `|` blocks for multi-line strings."""


_BlockReference.add_representer(str, lambda dumper, value: dumper.represent_scalar(
    "tag:yaml.org,2002:str", value, style="|" if "\n" in value else None))

# Strings PyYAML's resolver reads as something else when plain, and ones its emitter must quote.
_TRICKY = ["", "yes", "No", "null", "~", "1.0", "0x1F", "0o17", "1_000", "12:30:00", "2026-12-01", ".inf",
           "-", "- a", "a: b", "a #b", "#x", "'q'", '"q"', "multi\nline\n", "trailing ", " lead", "*ref",
           "&anchor", "!tag", "%dir", "@at", "`tick", "{a}", "[a]", "a,b", "?", "|", ">", "tab\there",
           "ünïcode", "\u2028sep", "\x1bescape", "=", "<<", "true", "False", "NULL", "0", "-1", "+1"]
_SCALARS = st.one_of(st.sampled_from(_TRICKY), st.text(max_size=12), st.integers(), st.booleans(), st.none())
_KEYS = st.one_of(st.sampled_from(_TRICKY), st.text(max_size=8))
_DATA = st.recursive(_SCALARS, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                       st.dictionaries(_KEYS, inner, max_size=4)), max_leaves=20)
_OPTIONS = st.fixed_dictionaries({"sort_keys": st.booleans(), "allow_unicode": st.booleans(),
                                  "default_flow_style": st.sampled_from([False, None, True]),
                                  "width": st.sampled_from([80, 1 << 30])})


@settings(max_examples=400, deadline=None)
@given(_DATA, _OPTIONS)
def test_same_text_as_safe_dumper(data, options):
    assert yaml.dump(data, Dumper=Dumper, **options) == yaml.dump(data, Dumper=_SAFE, **options)


@settings(max_examples=300, deadline=None)
@given(_DATA, _OPTIONS)
def test_block_strings_same_text_as_before(data, options):
    assert yaml.dump(data, Dumper=BlockDumper, **options) == yaml.dump(data, Dumper=_BlockReference, **options)


def test_shared_containers_and_other_types_go_the_slow_way():
    shared = {"a": 1}
    data = {"x": shared, "y": shared, "f": 1.5, "t": (1, 2)[0]}
    assert yaml.dump(data, Dumper=Dumper) == yaml.dump(data, Dumper=_SAFE)
    assert "&id001" in yaml.dump(data, Dumper=Dumper)  # the alias PyYAML writes


def test_resolver_cache_answers_as_the_resolver():
    dumper_text = yaml.dump(["yes", "yes", "1.0", "1.0"], Dumper=Dumper)
    assert dumper_text == "- 'yes'\n- 'yes'\n- '1.0'\n- '1.0'\n"
