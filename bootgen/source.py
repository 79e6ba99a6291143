"""Load YAML while keeping where every value came from.

PyYAML forgets line numbers once it builds Python objects and silently keeps the
last of two duplicate keys. We compose the node graph ourselves, build plain
Python values from it and keep a map from field path to source position, so
errors found much later (schema, cross-node checks, rendering) can still say
`nodes/node-1.yaml:12:9`.

YAML aliases let a small file name a huge (or endless) value: nine lines of
`&a [*b, *b, ...]` expand to a billion strings. Before anything is built, a
document that uses aliases (or is long enough to nest deeply) is walked once
as parser events, counting what it expands to without expanding it; too many
values, an alias inside its own anchor, or nesting deeper than `MAX_DEPTH` is
a problem at the alias (or the collection) that crosses the line.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .errors import InputError, Location, Problem

try:  # libyaml is several times faster on large sites; fall back when absent.
    _Loader = yaml.CSafeLoader
except AttributeError:  # pragma: no cover - depends on how PyYAML was built
    _Loader = yaml.SafeLoader

FieldPath = tuple  # of str keys and int indexes

MAX_VALUES = 1_000_000  # values (scalars, keys, lists, mappings) one document may expand to
MAX_ALIASED = 100_000  # of which aliases may repeat at most this many
MAX_ALIASED_TEXT = 16 * 1024 * 1024  # and at most this many characters of scalars
MAX_DEPTH = 64  # lists and mappings inside each other; Ignition needs about 8
# Below this many characters a document cannot nest deeply enough to strain libyaml's
# composer, so only documents with aliases are walked before they are composed
# (PyYAML's own composer recurses in Python: every document is walked first).
_SHORT = 4096 if _Loader is not yaml.SafeLoader else 0


@dataclass
class SourceDoc:
    """A parsed YAML document with the positions of its keys and values."""

    file: str  # as shown to the user, relative to the project when possible
    data: Any
    value_marks: dict[FieldPath, tuple[int, int]] = field(default_factory=dict)
    key_marks: dict[FieldPath, tuple[int, int]] = field(default_factory=dict)
    secret_refs: dict[FieldPath, tuple] = field(default_factory=dict)  # path -> (kind, argument); see secrets.py

    def locate(self, path: FieldPath, *, key: bool = False) -> Location:
        """Position of the value (or key) at `path`, or of its nearest ancestor."""
        path = tuple(path)
        marks = self.key_marks if key else self.value_marks
        while True:
            if path in marks:
                line, col = marks[path]
                return Location(self.file, line, col)
            if key and path in self.value_marks:
                line, col = self.value_marks[path]
                return Location(self.file, line, col)
            if not path:
                return Location(self.file, 1, 1)
            path = path[:-1]


def format_path(path: FieldPath) -> str:
    """Render a field path as `$.interfaces[0].mac`."""
    out = "$"
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else f".{part}"
    return out


def load_yaml_file(path: Path, display: str) -> SourceDoc:
    """Parse one YAML file; raise InputError naming every problem found."""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(Problem(Location(display), f"not UTF-8 text: {exc.reason}")) from None
    except OSError as exc:
        raise InputError(Problem(Location(display), f"cannot read file: {exc.strerror}")) from None
    return load_yaml_text(text, display)


def load_yaml_bytes(data: bytes, display: str) -> SourceDoc:
    """Parse a YAML file's bytes; bytes that are not UTF-8 are a problem at their line and column."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line, column = _position(data, exc.start)
        raise InputError(Problem(Location(display, line, column),
                                 f"not UTF-8 text: {exc.reason} (byte 0x{data[exc.start]:02x})")) from None
    return load_yaml_text(text, display)


def _position(data, offset: int) -> tuple[int, int]:
    """1-based line and column of `offset` in `data` (bytes or str)."""
    newline = b"\n" if isinstance(data, bytes) else "\n"
    return data.count(newline, 0, offset) + 1, offset - (data.rfind(newline, 0, offset) + 1) + 1


def _code(character) -> int:
    return character if isinstance(character, int) else ord(character)


def load_yaml_text(text: str, display: str) -> SourceDoc:
    """Parse YAML text into a SourceDoc (an empty document becomes {})."""
    try:
        if len(text) > _SHORT or ("&" in text and "*" in text):
            _check_expansion(text, display)
        node = yaml.compose(text, Loader=_Loader)
    except yaml.reader.ReaderError as exc:  # a control character: PyYAML gives only the offset
        line, column = _position(text, exc.position)
        raise InputError(Problem(Location(display, line, column),
                                 f"invalid YAML: control character {_code(exc.character):#04x} is not allowed")) from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        loc = Location(display, mark.line + 1, mark.column + 1) if mark else Location(display)
        message = exc.problem or exc.context
        if exc.problem == "second occurrence" and exc.context_mark:  # PyYAML's words for a repeated &anchor
            message = f"duplicate anchor (first defined on line {exc.context_mark.line + 1})"
        raise InputError(Problem(loc, f"invalid YAML: {message}")) from None
    except yaml.YAMLError as exc:
        raise InputError(Problem(Location(display), f"invalid YAML: {exc}")) from None
    doc = SourceDoc(display, None)
    problems: list[Problem] = []
    doc.data = {} if node is None else _build(node, (), doc, problems)
    if problems:
        raise InputError(problems)
    return doc


_OPEN = (-1, -1)  # an anchor whose collection is still being read: an alias to it is recursive


class _Open:
    """A list or mapping being read by `_check_expansion`."""

    __slots__ = ("anchor", "values", "chars", "mapping", "children", "key")

    def __init__(self, anchor: str | None, mapping: bool):
        self.anchor, self.mapping = anchor, mapping
        self.values, self.chars = 1, 0  # what it expands to so far, itself included
        self.children = 0  # nodes read directly inside it (keys and values of a mapping)
        self.key = None  # a mapping's last key


def _check_expansion(text: str, display: str) -> None:
    """Raise InputError if the document expands to more than MAX_VALUES values, repeats more
    than MAX_ALIASED values or MAX_ALIASED_TEXT characters through aliases, has an alias
    inside the node it names, or nests deeper than MAX_DEPTH.

    Reads parser events only and counts: nothing is expanded, so a billion-value
    document is refused in the time it takes to read its few lines."""
    loader = _Loader(text)
    sizes: dict[str, tuple[int, int]] = {}  # anchor -> (values, characters) its node expands to
    stack: list[_Open] = []
    total = aliased = aliased_text = 0

    def refuse(event, message: str, hint: str, *, located: bool = True) -> None:
        mark = event.start_mark
        where = format_path(_event_path(stack)) if located else ""
        raise InputError(Problem(Location(display, mark.line + 1, mark.column + 1), message, where, hint))

    try:
        while True:
            event = loader.get_event()
            if event is None:
                return
            kind = type(event)
            if kind is yaml.SequenceEndEvent or kind is yaml.MappingEndEvent:
                done = stack.pop()
                if done.anchor is not None:
                    sizes[done.anchor] = (done.values, done.chars)
                if stack:  # counted in total when it started; its parent learns its size now
                    stack[-1].values += done.values
                    stack[-1].chars += done.chars
                continue
            if kind is not yaml.ScalarEvent and kind is not yaml.AliasEvent \
                    and kind is not yaml.SequenceStartEvent and kind is not yaml.MappingStartEvent:
                continue  # stream and document events
            parent = stack[-1] if stack else None
            if parent is not None:
                if parent.mapping and not parent.children % 2:
                    parent.key = event.value if kind is yaml.ScalarEvent else "?"
                parent.children += 1
            if kind is yaml.ScalarEvent:
                values, chars = 1, len(event.value)
                if event.anchor is not None:
                    sizes[event.anchor] = (values, chars)
            elif kind is yaml.AliasEvent:
                size = sizes.get(event.anchor)
                if size is None:
                    return  # an undefined alias: composing reports it
                if size is _OPEN:
                    refuse(event, f"recursive YAML alias *{_short(event.anchor)}: it is inside the value it names",
                           "a value cannot contain itself; write out the part you need instead")
                values, chars = size
                aliased += values
                aliased_text += chars
                if aliased > MAX_ALIASED or aliased_text > MAX_ALIASED_TEXT:
                    limit = (f"{MAX_ALIASED} values" if aliased > MAX_ALIASED
                             else f"{MAX_ALIASED_TEXT} characters")
                    refuse(event, f"YAML aliases expand to too much data (more than {limit} repeated through aliases)",
                           "write the repeated data out, or repeat less")
            else:
                if len(stack) >= MAX_DEPTH:
                    refuse(event, f"YAML nesting is deeper than {MAX_DEPTH} levels", "flatten the data", located=False)
                total += 1
                stack.append(_Open(event.anchor, kind is yaml.MappingStartEvent))
                if event.anchor is not None:
                    sizes[event.anchor] = _OPEN
                continue
            total += values
            if total > MAX_VALUES:
                what = "YAML aliases expand" if kind is yaml.AliasEvent else "the document expands"
                refuse(event, f"{what} to too much data (more than {MAX_VALUES} values)",
                       "split the data, or repeat less")
            if parent is not None:
                parent.values += values
                parent.chars += chars
    finally:
        loader.dispose()


def _event_path(stack: list[_Open]) -> FieldPath:
    """The field path of the node just read (or of the mapping whose key it is)."""
    path: list = []
    for entry in stack:
        index = entry.children - 1
        if entry.mapping:
            if index % 2 == 0:  # a key: the problem is the mapping's
                break
            path.append(str(entry.key))
        else:
            path.append(index)
    return tuple(path)


def _short(text: str, limit: int = 40) -> str:
    return text if len(text) <= limit else text[:limit] + "..."


def _mark(node: yaml.Node) -> tuple[int, int]:
    return node.start_mark.line + 1, node.start_mark.column + 1


def _build(node: yaml.Node, path: FieldPath, doc: SourceDoc, problems: list[Problem]) -> Any:
    doc.value_marks[path] = _mark(node)
    if len(path) >= MAX_DEPTH and not isinstance(node, yaml.ScalarNode):
        # Short documents skip _check_expansion; this also stops a recursive alias it did not see.
        problems.append(Problem(Location(doc.file, *_mark(node)), f"YAML nesting is deeper than {MAX_DEPTH} levels",
                                hint="flatten the data"))
        return None
    if isinstance(node, yaml.MappingNode):
        return _build_mapping(node, path, doc, problems)
    if isinstance(node, yaml.SequenceNode):
        return [_build(item, path + (i,), doc, problems) for i, item in enumerate(node.value)]
    return _scalar(node, path, doc, problems)


def _build_mapping(node: yaml.MappingNode, path: FieldPath, doc: SourceDoc, problems: list[Problem]) -> dict:
    result: dict = {}
    for key_node, value_node in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":
            problems.append(Problem(Location(doc.file, *_mark(key_node)), "YAML merge keys (<<) are not supported", format_path(path)))
            continue
        key = _scalar(key_node, path, doc, problems) if isinstance(key_node, yaml.ScalarNode) else None
        if not isinstance(key, (str, int)) or isinstance(key, bool):
            problems.append(Problem(Location(doc.file, *_mark(key_node)), "mapping keys must be plain strings", format_path(path)))
            continue
        key = str(key)
        child = path + (key,)
        if key in result:
            first_line = doc.key_marks[child][0]
            problems.append(Problem(
                Location(doc.file, *_mark(key_node)), f"duplicate key '{key}' (first defined on line {first_line})",
                format_path(child), hint="YAML keeps only the last value; remove one of them"))
            continue
        doc.key_marks[child] = _mark(key_node)
        result[key] = _build(value_node, child, doc, problems)
    return result


def _scalar(node: yaml.ScalarNode, path: FieldPath, doc: SourceDoc, problems: list[Problem]) -> Any:
    if ":" in node.value and node.tag in (_INT_TAG, _FLOAT_TAG):
        # YAML 1.1 reads 52:54:00:12:34:56 as a base-60 number; nobody means that.
        return node.value
    if node.tag in _KEPT_AS_TEXT:  # dates and binary blobs have no use in a boot config
        return node.value
    constructor = _CONSTRUCTOR.yaml_constructors.get(node.tag, type(_CONSTRUCTOR).construct_undefined)
    try:
        value = constructor(_CONSTRUCTOR, node)
    except yaml.constructor.ConstructorError as exc:
        problems.append(Problem(Location(doc.file, *_mark(node)), str(exc.problem), format_path(path)))
        return None
    except (ValueError, KeyError, TypeError, ArithmeticError):  # `!!int x`, `!!bool maybe`, 5000 digits
        from .sshkeys import redact

        kind = _KINDS.get(node.tag, node.tag)
        shown = redact(node.value) if len(node.value) <= 60 else f"a value of {len(node.value)} characters"
        problems.append(Problem(Location(doc.file, *_mark(node)), f"cannot read {shown} as {kind}",
                                format_path(path), "quote it to keep it as text"))
        return None
    if not isinstance(value, (str, int, float, bool, type(None))):
        return node.value
    if isinstance(value, int) and value.bit_length() > _MAX_INT_BITS:  # 0x.../0o.../0b... of any length
        problems.append(Problem(Location(doc.file, *_mark(node)),
                                f"cannot read a value of {len(node.value)} characters as an integer",
                                format_path(path), "quote it to keep it as text"))
        return None
    return value


_MAX_INT_BITS = 1024  # far beyond any number a boot config holds; Python refuses to print ~14,000


_CONSTRUCTOR = yaml.SafeLoader("")
_INT_TAG = "tag:yaml.org,2002:int"
_FLOAT_TAG = "tag:yaml.org,2002:float"
_KEPT_AS_TEXT = frozenset({"tag:yaml.org,2002:timestamp", "tag:yaml.org,2002:binary"})
_KINDS = {_INT_TAG: "an integer", _FLOAT_TAG: "a number", "tag:yaml.org,2002:bool": "true or false",
          "tag:yaml.org,2002:null": "null"}
