"""Load YAML while keeping where every value came from.

PyYAML forgets line numbers once it builds Python objects and silently keeps the
last of two duplicate keys. We compose the node graph ourselves, build plain
Python values from it and keep a map from field path to source position, so
errors found much later (schema, cross-node checks, rendering) can still say
`nodes/node-1.yaml:12:9`.
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


@dataclass
class SourceDoc:
    """A parsed YAML document with the positions of its keys and values."""

    file: str  # as shown to the user, relative to the project when possible
    data: Any
    value_marks: dict[FieldPath, tuple[int, int]] = field(default_factory=dict)
    key_marks: dict[FieldPath, tuple[int, int]] = field(default_factory=dict)

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
        node = yaml.compose(text, Loader=_Loader)
    except yaml.reader.ReaderError as exc:  # a control character: PyYAML gives only the offset
        line, column = _position(text, exc.position)
        raise InputError(Problem(Location(display, line, column),
                                 f"invalid YAML: control character {_code(exc.character):#04x} is not allowed")) from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        loc = Location(display, mark.line + 1, mark.column + 1) if mark else Location(display)
        raise InputError(Problem(loc, f"invalid YAML: {exc.problem or exc.context}")) from None
    except yaml.YAMLError as exc:
        raise InputError(Problem(Location(display), f"invalid YAML: {exc}")) from None
    doc = SourceDoc(display, None)
    problems: list[Problem] = []
    doc.data = {} if node is None else _build(node, (), doc, problems)
    if problems:
        raise InputError(problems)
    return doc


def _mark(node: yaml.Node) -> tuple[int, int]:
    return node.start_mark.line + 1, node.start_mark.column + 1


def _build(node: yaml.Node, path: FieldPath, doc: SourceDoc, problems: list[Problem]) -> Any:
    doc.value_marks[path] = _mark(node)
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
    constructor = _CONSTRUCTOR.yaml_constructors.get(node.tag, type(_CONSTRUCTOR).construct_undefined)
    try:
        value = constructor(_CONSTRUCTOR, node)
    except yaml.constructor.ConstructorError as exc:
        problems.append(Problem(Location(doc.file, *_mark(node)), str(exc.problem), format_path(path)))
        return None
    # Dates and binary blobs have no use in a boot config; keep them as text.
    if not isinstance(value, (str, int, float, bool, type(None))):
        return node.value
    return value


_CONSTRUCTOR = yaml.SafeLoader("")
_INT_TAG = "tag:yaml.org,2002:int"
_FLOAT_TAG = "tag:yaml.org,2002:float"
