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
  strings drop repeats from other layers, keeping the first occurrence; a
  repeat within one layer is an error, as Ignition refuses it).
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

Butane's `variant` and `version` are read as Butane reads them: a `.bu` file
must name both, and a layer that names them must fit the profile (its variant,
and a Butane version that writes the profile's Ignition version); fields arrive
with the Butane version that added them. The written config then goes through
Ignition's own validation (ignition_validate.py), so what Ignition would refuse
at first boot is refused here.

Every problem is reported at the file, line and column of the layer that
supplied the offending value, all problems at once, as a RenderError.
"""
from __future__ import annotations

import gzip
import hashlib
import re
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from .. import prettyjson
from ..confine import SiteFileError, read_site_file
from ..errors import Location, Problem, RenderError
from ..source import SourceDoc, format_path
from ..sshkeys import contains_private_key, describe_secret, looks_private, redact
from .butane_checks import PRIVATE_KEY_HINT, check_ssh_key
from .butane_encode import base64_url, data_url
from .butane_schema import BUTANE_VERSIONS, SUPPORTED_VERSIONS, TYPES, VARIANTS, butane_versions_for, ignition_key
from .butane_tree import Context, Obj, Origin, Seq, Val, merge, parse_layer
from .ignition_syntax import parse_url
from .ignition_validate import locate, validate


@dataclass(frozen=True)
class ButaneLayer:
    """One Butane-shaped mapping and where it sits in its source document."""

    data: dict
    doc: SourceDoc
    path: tuple = ()  # field path of `data` inside doc, e.g. ("ignition",); () for a .bu file
    document: bool | None = None  # a whole Butane file (.bu); None: a layer that is its document's root

    @property
    def is_document(self) -> bool:
        if self.document is not None:
            return self.document
        return self.path == () and (self.data is self.doc.data or not isinstance(self.doc.data, dict))


def build_ignition(layers: list[ButaneLayer], *, files_dir: Path, version: str = "3.3.0",
                   variant: str = "flatcar") -> dict:
    """Merge the layers (least specific first) and translate them to an Ignition config dict.

    Raises RenderError listing every problem, each located in the layer it came from.
    """
    _check_target(version, variant)
    ctx = Context(version, variant)
    merged = None
    for index, layer in enumerate(layers):
        origin = Origin(layer.doc, tuple(layer.path), index)
        _check_header(layer, origin, ctx)
        merged = merge(merged, parse_layer(layer.data, origin, ctx))
    config: dict[str, Any] = {"ignition": {"version": version}}
    if merged is not None:
        _check_duplicate_paths(merged, ctx)
        config.update(_Translator(ctx, Path(files_dir)).emit(merged))
        for path, message, hint in validate(config, ctx.version_tuple, ctx.variant):
            origin = locate(merged, path)
            if not ctx.reported_under(origin):
                ctx.report(origin, message, hint)
    if ctx.problems:
        raise RenderError(ctx.problems)
    return config


def serialize_ignition(config: dict) -> bytes:
    """The exact bytes bootgen writes for an Ignition config."""
    return (prettyjson.dumps(config) + "\n").encode("utf-8")


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


_SEMVER = re.compile(r"\d+\.\d+\.\d+(-experimental)?")


def _check_header(layer: ButaneLayer, origin: Origin, ctx: Context) -> None:
    """A layer's own `variant` and `version` must be what the profile builds, as Butane reads them.

    A .bu file must name both (Butane refuses a file without them); a fragment
    inside a node or profile may leave them out."""
    data = layer.data if isinstance(layer.data, dict) else {}
    fitting = butane_versions_for(ctx.variant, ctx.version)
    suggestion = f"variant: {ctx.variant} and version: {fitting[-1]}" if fitting else f"variant: {ctx.variant}"
    if layer.is_document:
        if not isinstance(layer.doc.data, dict):
            ctx.report(origin, "a Butane file must be a mapping", f"start it with {suggestion}")
            return
        if not data:
            ctx.report(origin, "the Butane file is empty", f"start it with {suggestion}")
            return
        missing = [name for name in ("variant", "version") if name not in data]
        if missing:
            ctx.report(origin, f"a Butane file needs {' and '.join(missing)}", f"add {suggestion}")
            return
    variant, version = data.get("variant"), data.get("version")
    if isinstance(variant, str) and variant not in VARIANTS:
        return  # refused while parsing
    if isinstance(variant, str) and variant != ctx.variant:
        ctx.report(origin.child("variant"),
                   f"this config is for variant {variant}, but the profile builds {ctx.variant}",
                   f"write variant: {ctx.variant}, or use it in a profile with variant: {variant}")
        return
    if not isinstance(version, str) or not _SEMVER.fullmatch(version):
        return  # missing, or refused as malformed while parsing
    table = BUTANE_VERSIONS[ctx.variant]
    if version.endswith("-experimental"):
        ctx.report(origin.child("version"), f"bootgen does not translate experimental Butane versions ({version})",
                   f"write a stable version: {', '.join(table)}")
    elif version not in table:
        ctx.report(origin.child("version"), f"Butane {ctx.variant} has no version {version}",
                   f"{ctx.variant} versions: {', '.join(table)}")
    elif table[version] != ctx.version:
        written = table[version]
        hint = f"write version: {fitting[-1]}" if fitting else \
            f"no Butane {ctx.variant} version writes Ignition {ctx.version}"
        if written in SUPPORTED_VERSIONS:
            hint += f", or set the profile's ignition_version: {written}"
        else:
            hint += f" (bootgen writes Ignition {SUPPORTED_VERSIONS[0]} to {SUPPORTED_VERSIONS[-1]})"
        ctx.report(origin.child("version"), f"Butane {ctx.variant} {version} is Ignition {written}, "
                   f"but the profile writes Ignition {ctx.version}", hint)


def _unquoted(value: str) -> str:
    """A file name for a message, shortened and never a pasted secret, without quotes."""
    shown = redact(value)
    return shown[1:-1] if shown[:1] in ("'", '"') else shown


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
        """Inline or local contents, embedded as a data: URL (bootgen picks the encoding)."""
        if "http_headers" in res.fields:
            self.ctx.report(res.fields["http_headers"].origin, "http_headers need an http:// or https:// source",
                            f"{kind} contents are embedded in the config; remove http_headers")
        compression = res.value("compression", "")
        if compression == "gzip" and kind == "inline":
            self.ctx.report(res.fields["compression"].origin, "compression: gzip cannot apply to inline contents",
                            "bootgen compresses inline contents itself when that is shorter; remove compression")
            return {}
        node = res.fields[kind]
        data = node.value.encode("utf-8") if kind == "inline" else self._read_local(node)
        if data is None:
            return {}
        text = data.decode("utf-8", "replace")
        if contains_private_key(text):
            what = f"local file {redact(node.value)} holds" if kind == "local" else "the inline contents hold"
            self.ctx.report(node.origin, f"{what} {describe_secret(text)}",
                            "a served config is readable by anyone on the boot network; "
                            "install private keys another way, and treat this one as leaked")
            return {}
        plain = data
        if compression == "gzip":  # a local file that is already gzip data: written as it is
            plain = self._gunzip(node, data)
            if plain is None:
                return {}
            out = {"source": base64_url(data), "compression": "gzip"}
        else:
            source, compression = data_url(data)
            out = {"source": source, "compression": compression}
        verification = res.fields.get("verification")
        expected = verification.value("hash") if isinstance(verification, Obj) else None
        if expected:
            function, _, digest = expected.partition("-")
            actual = hashlib.new(function, plain).hexdigest()
            if actual != digest.lower():
                self.ctx.report(verification.fields["hash"].origin, f"the {kind} contents do not match this hash",
                                f"Ignition would refuse the file at boot; their hash is {function}-{actual}")
                return {}
            out["verification"] = {"hash": expected}
        return out

    def _gunzip(self, node: Val, data: bytes) -> bytes | None:
        try:
            return gzip.decompress(data)
        except (OSError, EOFError, zlib.error):
            self.ctx.report(node.origin, f"local file {redact(node.value)} is not gzip data, "
                            "but compression: gzip says it is", "gzip the file, or remove compression")
            return None

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
            if _scheme(url) not in ("http", "https"):
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
        """Keys from all layers and key files, each once; within one layer a repeat is an error."""
        inline = obj.fields.get("ssh_authorized_keys")
        seen: dict[str, Origin] = {}
        keys = []
        for item in inline.items if isinstance(inline, Seq) else []:
            seen.setdefault(item.value, item.origin)
            keys.append(item.value)
        local = obj.fields.get("ssh_authorized_keys_local")
        for node in local.items if isinstance(local, Seq) else []:
            for key in self._keys_from_file(node):
                first = seen.get(key)
                if first is None:
                    seen[key] = node.origin
                    keys.append(key)
                elif first.layer == node.origin.layer:
                    where = first.location()
                    self.ctx.report(node.origin, f"{_unquoted(node.value)} repeats an SSH key already listed "
                                    f"on line {where.line}", "Ignition refuses a key listed twice; keep it once")
        if keys:
            out["sshAuthorizedKeys"] = keys

    def _keys_from_file(self, node: Val) -> list[str]:
        """One key per line; blank lines and # comments are skipped, each key is checked."""
        text = self._read_local_text(node) or ""
        if looks_private(text):
            # One problem for the file, not one per line of the key's base64 body.
            self.ctx.report(node.origin, f"local file {redact(node.value)} holds {describe_secret(text)}, "
                            "not public keys", PRIVATE_KEY_HINT)
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


def _scheme(url: str) -> str:
    try:
        return parse_url(url)[0]
    except ValueError:
        return ""
