"""`json.dumps(value, sort_keys=True, indent=2)`, about three times faster.

With `indent`, the json module encodes in Python, one generator step per
token; every Ignition config bootgen writes went through it. This walks the
same plain data (dicts with string keys, lists, strings, ints, booleans,
None) and leaves the strings to the C escaper json uses. Anything else is
handed to json.dumps itself, so the text is always json.dumps's
(tests/osconfig/test_prettyjson.py compares them).
"""
from __future__ import annotations

import json
from json.encoder import encode_basestring_ascii as _string


class _Slow(Exception):
    pass


def dumps(value) -> str:
    """The text `json.dumps(value, sort_keys=True, indent=2)` makes."""
    out: list[str] = []
    try:
        _walk(value, "\n", out)
    except _Slow:
        return json.dumps(value, sort_keys=True, indent=2)
    return "".join(out)


def _walk(value, newline: str, out: list[str]) -> None:
    kind = type(value)
    if kind is str:
        out.append(_string(value))
    elif kind is dict:
        if not value:
            out.append("{}")
            return
        inner = newline + "  "
        separator = "{" + inner
        for key in sorted(value):  # json.dumps sorts too, and fails the same way on mixed keys
            if type(key) is not str:
                raise _Slow  # json.dumps spells int, float, bool and None keys as strings
            out.append(separator + _string(key) + ": ")
            _walk(value[key], inner, out)
            separator = "," + inner
        out.append(newline + "}")
    elif kind is list:
        if not value:
            out.append("[]")
            return
        inner = newline + "  "
        separator = "[" + inner
        for item in value:
            out.append(separator)
            _walk(item, inner, out)
            separator = "," + inner
        out.append(newline + "]")
    elif kind is bool:
        out.append("true" if value else "false")
    elif kind is int:
        out.append(int.__repr__(value))
    elif value is None:
        out.append("null")
    else:
        raise _Slow  # floats, tuples, subclasses: json's own rules
