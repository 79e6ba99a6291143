"""Translate Butane-shaped YAML layers into one Ignition config, without the Butane binary.

Nodes, profiles and the site carry OS configuration in the shape of a Butane
config (variants `flatcar` and `fcos`) under an `ignition:` key; `.bu` files are
accepted as layers too. `build_ignition` checks every layer, merges them and
writes Ignition JSON of the pinned spec version (3.0.0 to 3.4.0, default 3.3.0).
A field the pinned version cannot express is refused, never rendered forward.

Merge rules (layers go from least to most specific: site, profile, node, then
layers bootgen generates such as hostname, networkd and install units):

- `passwd.users` and `passwd.groups` merge by `name`: fields from the more
  specific layer win, lists append (`ssh_authorized_keys` and other lists of
  strings drop repeats, keeping the first occurrence).
- `storage.files`, `storage.directories` and `storage.links` are keyed by
  `path` (which must be absolute and in its simplest form: no `//`, `.`, `..`
  or trailing `/`); a more specific entry replaces the whole entry. `storage.disks` (by `device`) and
  `storage.filesystems` (by `device`) are replaced whole the same way.
- `systemd.units` are keyed by `name`; a more specific unit replaces the whole
  unit (a node that only adds a drop-in must repeat `enabled`/`contents`),
  except `dropins`, which merge by drop-in name.
- Any other scalar: the more specific layer wins. Any other list: appended.
- Inside one layer, two entries with the same key are an error, and so is one
  path used by two of files, directories and links after merging.

Translation notes: `contents.inline` and `contents.local` become `data:` URLs
in whichever of URL-escaped, base64 or gzip+base64 is shortest, always with an
explicit `compression`. `contents.remote.url` (the Container Linux Config
spelling) is read as `contents.source`, and `filesystem: root` on files,
directories and links (also from Container Linux Configs) is accepted and
dropped, because Ignition 3 has no named filesystems. `storage.raid`, `luks`,
`trees`, `filesystems[].with_mount_unit`, `boot_device`, `grub` and the
`ignition` section are refused as not supported yet.

Every problem is reported at the file, line and column of the layer that
supplied the offending value, all problems at once, as a RenderError.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from ..confine import SiteFileError, read_site_file
from ..errors import Location, Problem, RenderError
from ..source import SourceDoc, format_path
from ..sshkeys import looks_private, redact
from .butane_checks import PRIVATE_KEY_HINT, check_ssh_key
from .butane_encode import data_url
from .butane_schema import SUPPORTED_VERSIONS, TYPES, VARIANTS, ignition_key
from .butane_tree import Context, Obj, Origin, Seq, Val, merge, parse_layer


@dataclass(frozen=True)
class ButaneLayer:
    """One Butane-shaped mapping and where it sits in its source document."""

    data: dict
    doc: SourceDoc
    path: tuple = ()  # field path of `data` inside doc, e.g. ("ignition",); () for a .bu file


def build_ignition(layers: list[ButaneLayer], *, files_dir: Path, version: str = "3.3.0",
                   variant: str = "flatcar") -> dict:
    """Merge the layers (least specific first) and translate them to an Ignition config dict.

    Raises RenderError listing every problem, each located in the layer it came from.
    """
    _check_target(version, variant)
    ctx = Context(version, variant)
    merged = None
    for layer in layers:
        merged = merge(merged, parse_layer(layer.data, Origin(layer.doc, tuple(layer.path)), ctx))
    config: dict[str, Any] = {"ignition": {"version": version}}
    if merged is not None:
        _check_duplicate_paths(merged, ctx)
        config.update(_Translator(ctx, Path(files_dir)).emit(merged))
    if ctx.problems:
        raise RenderError(ctx.problems)
    return config


def serialize_ignition(config: dict) -> bytes:
    """The exact bytes bootgen writes for an Ignition config."""
    return (json.dumps(config, sort_keys=True, indent=2) + "\n").encode("utf-8")


def ignition_sha512(config: dict) -> str:
    """`sha512-<hex>` of the serialised config, as Ignition's verification.hash expects."""
    return "sha512-" + hashlib.sha512(serialize_ignition(config)).hexdigest()


def _check_target(version: str, variant: str) -> None:
    problems = []
    if version not in SUPPORTED_VERSIONS:
        problems.append(Problem(Location("bootgen"), f"Ignition version '{version}' is not supported",
                                hint="bootgen writes Ignition " + ", ".join(SUPPORTED_VERSIONS)))
    if variant not in VARIANTS:
        problems.append(Problem(Location("bootgen"), f"unknown Butane variant '{variant}'",
                                hint="bootgen translates " + " and ".join(VARIANTS)))
    if problems:
        raise RenderError(problems)


def _unquoted(value: str) -> str:
    """A file name for a message, shortened and never a pasted secret, without quotes."""
    shown = redact(value)
    return shown[1:-1] if shown[:1] in ("'", '"') else shown


def _has_install_settings(unit: str) -> bool:
    """Whether a unit file has a setting in [Install], which is what `enabled` acts on."""
    section = ""
    for line in unit.splitlines():
        line = line.strip()
        if line.startswith("["):
            section = line
        elif section == "[Install]" and "=" in line and not line.startswith(("#", ";")):
            return True
    return False


_NOUNS = {"files": "file", "directories": "directory", "links": "link"}


def _check_duplicate_paths(root: Obj, ctx: Context) -> None:
    """One path can be a file, a directory or a link, not two of them."""
    storage = root.fields.get("storage")
    seen: dict[str, tuple[str, Obj]] = {}
    for kind, noun in _NOUNS.items():
        seq = storage.fields.get(kind) if isinstance(storage, Obj) else None
        for item in seq.items if isinstance(seq, Seq) else []:
            path = item.value("path")
            if path is None:
                continue  # missing or refused; already reported
            if path in seen:
                other_noun, other = seen[path]
                where = other.fields["path"].origin.location()
                ctx.report(item.fields["path"].origin,
                           f"'{path}' is defined twice: as a {noun} here and as a {other_noun} at {where}",
                           "keep only one of them")
            else:
                seen[path] = (noun, item)


class _Translator:
    """Turns a merged tree into Ignition JSON, reading local files as it goes."""

    def __init__(self, ctx: Context, files_dir: Path):
        self.ctx = ctx
        self.files_dir = files_dir
        self.special: dict[str, Callable[[Obj, dict], None]] = {
            "file": self._file,
            "user": self._user,
            "unit": self._unit,
            "dropin": self._unit_contents,
            "partition": self._partition,
        }

    def emit(self, obj: Obj) -> dict:
        spec = TYPES[obj.type]
        out = {}
        for name, node in obj.fields.items():
            if spec[name].out is not None:
                out[ignition_key(name, spec[name])] = self._value(node)
        if obj.type in self.special:
            self.special[obj.type](obj, out)
        return out

    def _value(self, node: Any) -> Any:
        if isinstance(node, Obj):
            return self.emit(node)
        if isinstance(node, Seq):
            return [self._value(item) for item in node.items]
        return node.value

    # --- files ------------------------------------------------------------

    def _file(self, obj: Obj, out: dict) -> None:
        contents = obj.fields.get("contents")
        if isinstance(contents, Obj):
            out["contents"] = self._resource(contents)
        append = obj.fields.get("append")
        if isinstance(append, Seq):
            out["append"] = [self._resource(item) for item in append.items]
        failed = isinstance(contents, Obj) and self.ctx.reported_under(contents.origin)
        if out.get("overwrite") and not out.get("contents", {}).get("source") and not failed:
            self.ctx.report(obj.fields["overwrite"].origin, "overwrite: true needs contents to write",
                            "set contents (inline, local or source), or drop overwrite")

    def _partition(self, obj: Obj, out: dict) -> None:
        if not out.get("label") and out.get("number", 0) < 1 and not self.ctx.reported_under(obj.origin):
            self.ctx.report(obj.origin, "a partition needs a label or a number of 1 or more")

    def _resource(self, res: Obj) -> dict:
        sources = [name for name in ("inline", "local", "source", "remote") if name in res.fields]
        if len(sources) > 1:
            self.ctx.report(res.origin, "only one of inline, local, source and remote may be set",
                            f"this entry sets {', '.join(sources)}")
            return {}
        if not sources:
            if res.fields and not self.ctx.reported_under(res.origin):
                self.ctx.report(res.origin, "contents need one of inline, local or source")
            return {}
        if sources[0] in ("inline", "local"):
            return self._embedded(res, sources[0])
        return self._fetched(res, res.fields["remote"] if sources[0] == "remote" else res)

    def _embedded(self, res: Obj, kind: str) -> dict:
        for name in ("compression", "verification", "http_headers"):
            if name in res.fields:
                self.ctx.report(res.fields[name].origin, f"'{name}' applies only to contents fetched from a source",
                                f"bootgen encodes {kind} contents itself; remove '{name}'")
        node = res.fields[kind]
        data = node.value.encode("utf-8") if kind == "inline" else self._read_local(node)
        if data is None:
            return {}
        source, compression = data_url(data)
        return {"source": source, "compression": compression}

    def _fetched(self, res: Obj, where: Obj) -> dict:
        url = where.value("source") if where is res else where.value("url")
        if url is None:
            return {}  # the URL was refused while parsing; that problem is already reported
        out: dict[str, Any] = {"source": url}
        if "compression" in where.fields:
            out["compression"] = where.value("compression")
        verification = where.fields.get("verification")
        if isinstance(verification, Obj) and "hash" in verification.fields:
            out["verification"] = {"hash": verification.value("hash")}
        headers = res.fields.get("http_headers")
        if isinstance(headers, Seq):
            if not url.lower().startswith(("http://", "https://")):
                self.ctx.report(headers.origin, "http_headers need an http:// or https:// source")
            out["httpHeaders"] = self._value(headers)
        return out

    def _read_local(self, node: Val) -> bytes | None:
        """Read a file named relative to files_dir (the site directory) through the site gate.

        It must be a regular file that resolves (after symlinks) inside
        files_dir; it is opened without following symlinks and read with a
        size bound. Problems never quote the file's contents."""
        origin = node.origin
        try:
            return read_site_file(self.files_dir, node.value, origin.location(), format_path(origin.path),
                                  what="local file")
        except SiteFileError as exc:
            shown = redact(node.value)
            if exc.reason == "missing":
                self.ctx.report(origin, f"local file {shown} not found",
                                exc.problems[0].hint or f"local files are read relative to {self.files_dir}")
            elif exc.reason == "outside":
                self.ctx.report(origin, f"local file {shown} resolves outside the files directory",
                                "local files must stay inside the files directory (check for symlinks)")
            else:
                self.ctx.problems.extend(exc.problems)
        return None

    def _read_local_text(self, node: Val) -> str | None:
        data = self._read_local(node)
        if data is None:
            return None
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError:
            self.ctx.report(node.origin, f"local file {redact(node.value)} is not UTF-8 text")
            return None

    # --- users and units -----------------------------------------------------

    def _user(self, obj: Obj, out: dict) -> None:
        keys = list(out.get("sshAuthorizedKeys", []))
        local = obj.fields.get("ssh_authorized_keys_local")
        for node in local.items if isinstance(local, Seq) else []:
            keys.extend(self._keys_from_file(node))
        if keys:
            out["sshAuthorizedKeys"] = list(dict.fromkeys(keys))  # drop repeats, keep first

    def _keys_from_file(self, node: Val) -> list[str]:
        """One key per line; blank lines and # comments are skipped, each key is checked."""
        text = self._read_local_text(node) or ""
        if looks_private(text):
            # One problem for the file, not one per line of the key's base64 body.
            self.ctx.report(node.origin, f"local file {redact(node.value)} holds a private key, not public keys",
                            PRIVATE_KEY_HINT)
            return []
        keys = []
        for number, line in enumerate(text.splitlines(), start=1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            findings = check_ssh_key(line, self.ctx.version_tuple)
            for message, hint in findings:
                self.ctx.report(node.origin, f"{_unquoted(node.value)} line {number}: {message}", hint)
            if not findings:
                keys.append(line)
        return keys

    def _unit(self, obj: Obj, out: dict) -> None:
        self._unit_contents(obj, out)
        if out.get("enabled") and "contents" in out and not _has_install_settings(out["contents"]):
            self.ctx.report(obj.fields["enabled"].origin, "the unit is enabled but has no [Install] section, "
                            "so enabling it does nothing", "add [Install] with WantedBy=multi-user.target")

    def _unit_contents(self, obj: Obj, out: dict) -> None:
        node = obj.fields.get("contents_local")
        if not isinstance(node, Val):
            return
        if "contents" in obj.fields:
            self.ctx.report(node.origin, "only one of contents and contents_local may be set", key=True)
            return
        text = self._read_local_text(node)
        if text is not None:
            out["contents"] = text
