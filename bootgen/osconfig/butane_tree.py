"""Read Butane-shaped layers into trees that remember where each value came from, and merge them.

A parsed layer is a tree of `Obj`, `Seq` and `Val` nodes. Every node carries an
`Origin` (source document and field path), so a problem found after merging
(a missing local file, a path defined twice) is still reported at the line of
the layer that supplied the offending value.
"""
from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from typing import Any

from ..errors import Location, Problem
from ..source import SourceDoc, format_path
from .butane_checks import CHECKS
from .butane_schema import BUTANE_VERSIONS, TYPES, Field, version_tuple


@dataclass(frozen=True)
class Origin:
    """Where a value came from: a source document and the field path inside it."""

    doc: SourceDoc
    path: tuple
    layer: int = 0  # which layer of the merge (0 = least specific) supplied the value

    def child(self, part: str | int) -> "Origin":
        return Origin(self.doc, self.path + (part,), self.layer)

    def location(self, *, key: bool = False) -> Location:
        return self.doc.locate(self.path, key=key)

    def problem(self, message: str, hint: str = "", *, key: bool = False) -> Problem:
        return Problem(self.location(key=key), message, format_path(self.path), hint)


@dataclass(frozen=True)
class Val:
    value: Any
    origin: Origin


@dataclass(frozen=True)
class Seq:
    items: list
    origin: Origin


@dataclass(frozen=True)
class Obj:
    type: str
    fields: dict
    origin: Origin

    def value(self, name: str, default: Any = None) -> Any:
        node = self.fields.get(name)
        return node.value if isinstance(node, Val) else default


@dataclass
class Context:
    """What parsing needs to know about the target, and where problems go."""

    version: str
    variant: str
    problems: list[Problem] = field(default_factory=list)

    @property
    def version_tuple(self) -> tuple:
        return version_tuple(self.version)

    def report(self, origin: Origin, message: str, hint: str = "", *, key: bool = False) -> None:
        self.problems.append(origin.problem(message, hint, key=key))

    def reported_under(self, origin: Origin) -> bool:
        """Whether a problem was already reported inside this value (to avoid follow-on noise)."""
        prefix = format_path(origin.path)
        return any(p.location.file == origin.doc.file
                   and (p.path == prefix or p.path.startswith((prefix + ".", prefix + "[")))
                   for p in self.problems)


# --- parsing -------------------------------------------------------------------

_PY_TYPES = {"str": (str,), "int": (int,), "bool": (bool,), "mode": (int,)}
_TYPE_NAMES = {"str": "a string", "int": "an integer", "bool": "true or false", "mode": "an octal mode like 0644"}


def parse_layer(data: Any, origin: Origin, ctx: Context) -> Obj | None:
    """Check one layer against the schema; return its tree (problems go to ctx)."""
    return parse_obj("root", data, origin, ctx)


def parse_obj(type_name: str, raw: Any, origin: Origin, ctx: Context) -> Obj | None:
    if not isinstance(raw, dict):
        ctx.report(origin, f"expected a mapping, got {_describe(raw)}")
        return None
    spec = TYPES[type_name]
    fields = {}
    for key, value in raw.items():
        child = origin.child(key)
        if key not in spec:
            _unknown_key(key, spec, child, ctx)
            continue
        node = _parse_field(key, spec[key], value, child, ctx)
        if node is not None:
            fields[key] = node
    for key, fspec in spec.items():
        if fspec.required and key not in raw:
            ctx.report(origin, f"'{key}' is required here")
    return Obj(type_name, fields, origin)


def _unknown_key(key: str, spec: dict[str, Field], origin: Origin, ctx: Context) -> None:
    snake = "".join("_" + ch.lower() if ch.isupper() else ch for ch in key)  # sshAuthorizedKeys -> ssh_authorized_keys
    candidates = [name for name, f in spec.items() if f.kind not in ("drop",)]
    guess = difflib.get_close_matches(snake, candidates, n=1, cutoff=0.6)
    hint = f"did you mean '{guess[0]}'?" if guess else "known keys here: " + ", ".join(sorted(candidates))
    ctx.report(origin, f"unknown key '{key}'", hint, key=True)


def _parse_field(key: str, fspec: Field, value: Any, origin: Origin, ctx: Context) -> Any:
    if not _available(key, fspec, origin, ctx):
        return None
    if fspec.kind == "drop":
        _run_check(fspec, value, origin, ctx)
        return None
    if fspec.kind == "obj":
        return parse_obj(fspec.obj, value, origin, ctx)
    if fspec.kind == "list":
        return _parse_list(key, fspec, value, origin, ctx)
    return _parse_scalar(fspec.kind, fspec, value, origin, ctx)


def _available(key: str, fspec: Field, origin: Origin, ctx: Context) -> bool:
    """Refuse keys bootgen does not translate, forbids, or the target cannot express."""
    if fspec.kind == "unsupported":
        ctx.report(origin, f"'{key}' is not supported by bootgen", fspec.note, key=True)
    elif fspec.kind == "forbidden":
        ctx.report(origin, f"'{key}' is not allowed: it would put a plaintext secret in the served config",
                   fspec.note, key=True)
    elif ctx.variant not in fspec.variants:
        ctx.report(origin, f"'{key}' is not supported on the {ctx.variant} variant",
                   f"only {', '.join(fspec.variants)} can set it", key=True)
    elif ctx.version_tuple < version_tuple(fspec.since) and fspec.butane:
        first = next((b for b, i in BUTANE_VERSIONS[ctx.variant].items()
                      if version_tuple(i) >= version_tuple(fspec.since)), None)
        ctx.report(origin, f"'{key}' needs Butane {ctx.variant} {first} or newer (Ignition {fspec.since}), "
                   f"but this config is Ignition {ctx.version}",
                   "raise the profile's ignition_version or remove the field", key=True)
    elif ctx.version_tuple < version_tuple(fspec.since):
        ctx.report(origin, f"'{key}' needs Ignition {fspec.since} or newer, but this config is Ignition {ctx.version}",
                   "raise the node's Ignition version or remove the field", key=True)
    else:
        return True
    return False


def _parse_scalar(kind: str, fspec: Field, value: Any, origin: Origin, ctx: Context) -> Val | None:
    if not isinstance(value, _PY_TYPES[kind]) or (kind != "bool" and isinstance(value, bool)):
        hint = "quote the value to make it a string" if kind == "str" and value is not None else ""
        ctx.report(origin, f"expected {_TYPE_NAMES[kind]}, got {_describe(value)}", hint)
        return None
    if not _run_check(fspec, value, origin, ctx):
        return None
    return Val(value, origin)


def _run_check(fspec: Field, value: Any, origin: Origin, ctx: Context) -> bool:
    if not fspec.check:
        return True
    findings = CHECKS[fspec.check](value, ctx.version_tuple)
    for message, hint in findings:
        ctx.report(origin, message, hint)
    return not findings


def _parse_list(key: str, fspec: Field, value: Any, origin: Origin, ctx: Context) -> Seq | None:
    if not isinstance(value, list):
        ctx.report(origin, f"expected a list, got {_describe(value)}")
        return None
    items = []
    for i, raw in enumerate(value):
        child = origin.child(i)
        if fspec.item == "obj":
            node = parse_obj(fspec.obj, raw, child, ctx)
        else:
            node = _parse_scalar("str", fspec, raw, child, ctx)
        if node is not None:
            items.append(node)
    if fspec.key:
        items = _drop_duplicates(fspec, items, ctx)
    elif fspec.unique:
        items = _drop_repeated_values(key, items, ctx)
    return Seq(items, origin)


def _drop_duplicates(fspec: Field, items: list, ctx: Context) -> list:
    """Within one layer two entries with the same key are a mistake, not an override."""
    seen: dict[Any, Obj] = {}
    kept = []
    for item in items:
        ident = entry_key(fspec, item)
        if ident is None:
            continue  # the missing key was reported as required
        if ident in seen:
            first = seen[ident].origin.location()
            ctx.report(item.fields[fspec.key].origin,
                       f"duplicate entry for {fspec.key} '{ident}' (first defined on line {first.line})",
                       "merge the two entries into one")
            continue
        seen[ident] = item
        kept.append(item)
    return kept


def _drop_repeated_values(key: str, items: list, ctx: Context) -> list:
    """Ignition refuses a list with the same value twice (SSH keys, groups, kernel arguments)."""
    seen: dict[Any, Val] = {}
    kept = []
    for item in items:
        if item.value in seen:
            first = seen[item.value].origin.location()
            ctx.report(item.origin, f"{_shown(item.value)} is listed twice in {key} (first on line {first.line})",
                       "keep it once")
            continue
        seen[item.value] = item
        kept.append(item)
    return kept


def _shown(value: str) -> str:
    from ..sshkeys import redact
    return redact(value, 50)


def entry_key(fspec: Field, item: Obj) -> Any:
    """The identity of a list entry across layers; None when it was missing or refused."""
    return item.value(fspec.key)


def _describe(value: Any) -> str:
    if value is None:
        return "nothing (null)"
    if isinstance(value, bool):
        return f"{str(value).lower()} (a boolean)"
    names = {dict: "a mapping", list: "a list", str: "a string", int: "an integer", float: "a number"}
    shown = "" if isinstance(value, (dict, list)) else f" {value!r}"
    return names.get(type(value), type(value).__name__) + shown


# --- merging ---------------------------------------------------------------------


def merge(base: Obj | None, top: Obj | None) -> Obj | None:
    """Merge a more specific layer (top) over a less specific one (base); either may be None."""
    return _merge_optional(base, top, None)


def _merge_node(base: Any, top: Any, fspec: Field | None) -> Any:
    if isinstance(base, Obj) and isinstance(top, Obj):
        return _merge_obj(base, top)
    if isinstance(base, Seq) and isinstance(top, Seq):
        return _merge_seq(base, top, fspec)
    return top


def _merge_obj(base: Obj, top: Obj) -> Obj:
    spec = TYPES[top.type]
    fields = dict(base.fields)
    for name, node in top.fields.items():
        fields[name] = _merge_node(fields[name], node, spec[name]) if name in fields else node
    return Obj(top.type, fields, top.origin)


def _merge_seq(base: Seq, top: Seq, fspec: Field) -> Seq:
    if fspec.key:
        return Seq(_merge_keyed(base.items, top.items, fspec), top.origin)
    values = [item.value for item in base.items if isinstance(item, Val)]
    extra = [item for item in top.items if not (isinstance(item, Val) and item.value in values)]
    return Seq(base.items + extra, top.origin)


def _merge_keyed(base: list, top: list, fspec: Field) -> list:
    """Entries keep the position of their first appearance; the more specific one decides the content."""
    items = list(base)
    index = {entry_key(fspec, item): i for i, item in enumerate(items)}
    for item in top:
        ident = entry_key(fspec, item)
        if ident in index:
            i = index[ident]
            items[i] = _combine(items[i], item, fspec.merge)
        else:
            index[ident] = len(items)
            items.append(item)
    return items


def _combine(base: Obj, top: Obj, how: str) -> Obj:
    if how == "deep":
        return _merge_obj(base, top)
    if how == "unit":  # the unit is replaced whole, but drop-ins from both layers survive
        fields = dict(top.fields)
        dropins = _merge_optional(base.fields.get("dropins"), top.fields.get("dropins"), TYPES["unit"]["dropins"])
        if dropins is not None:
            fields["dropins"] = dropins
        return Obj(top.type, fields, top.origin)
    return top


def _merge_optional(base: Any, top: Any, fspec: Field | None) -> Any:
    if base is None or top is None:
        return top if base is None else base
    return _merge_node(base, top, fspec)
