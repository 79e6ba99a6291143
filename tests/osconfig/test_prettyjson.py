"""bootgen.prettyjson writes exactly what json.dumps(sort_keys=True, indent=2) writes."""
from __future__ import annotations

import json

from hypothesis import given, settings, strategies as st

from bootgen import prettyjson

_SCALARS = st.one_of(st.text(max_size=10), st.sampled_from(["", "é", "\u2028", "\x00", '"\\/', "\U0001f600"]),
                     st.integers(), st.booleans(), st.none(), st.floats(allow_nan=False))
_KEYS = st.one_of(st.text(max_size=6), st.sampled_from(["a", "b", "ä", "\n"]))
_DATA = st.recursive(_SCALARS, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                       st.dictionaries(_KEYS, inner, max_size=4)), max_leaves=25)


@settings(max_examples=500, deadline=None)
@given(_DATA)
def test_same_text_as_json_dumps(value):
    assert prettyjson.dumps(value) == json.dumps(value, sort_keys=True, indent=2)


def test_other_keys_and_types_go_json_s_way():
    for value in ({1: "a", 2: [1.5]}, {"t": (1, 2)}, {None: True}, [float("inf")]):
        assert prettyjson.dumps(value) == json.dumps(value, sort_keys=True, indent=2)
