"""Typed model of the `keys:` and `images:` sections of site.yaml.

The lead's JSON Schema has already checked shapes and types; this module turns
the validated dicts into frozen dataclasses and checks what a schema cannot:
that key names exist, fingerprints are 40 hex digits (in any spacing and case
gpg prints them), that key files hold no private key, that every mirrored
image is either signed or explicitly `unsigned: true` with a pinned checksum
(for a URL), and that every file named here
(key files, image files and their signatures) is a regular file inside the site
directory (bootgen.confine: no absolute paths, no `..` out of the site, no
symlink pointing out of it, no FIFO or device). Key files are read here, once,
so nothing later opens a path the site named.

Site YAML accepted here::

    keys:                      # OpenPGP keys that may sign images
      <key name>:
        file: keys/x.asc       # armored public key, relative to the site dir
        fingerprint: F88C ...  # pinned PRIMARY key fingerprint (40 hex, any spacing)
    images:
      <set name>:
        mirror: true           # fetch, verify and serve from the tree (default false:
                               # boot configs point at the URL itself)
        version: 3975.2.0      # used by the installer mirror layout (required with installer)
        kernel:    <image>
        initrds:   [<image>, ...]
        installer: <image>     # flatcar_production_image.bin.bz2 for flatcar-install -b
        iso:       <image>     # with extract: {kernel: casper/vmlinuz, initrds: [casper/initrd]}
    <image>:
        url: http://...        # or file: path relative to the site dir (needs mirror: true)
        signature: auto        # detached signature URL/file; auto = url + ".sig"
        keys: [<key name>]     # which site keys may sign it
        sha256: <hex>          # pins, checked when given (one is required with unsigned: true)
        sha512: <hex>
        size: <bytes>          # optional exact size: the download stops at it
        unsigned: true         # accept without a signature (a URL then needs a pin)
        extract: {...}         # only for iso
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit

from ..confine import SiteFileError, read_site_file, site_file
from ..errors import InputError, Location, Problem
from ..source import SourceDoc, format_path

_FINGERPRINT = re.compile(r"^[0-9A-F]{40}$")
_PRIVATE_KEY = re.compile(rb"-----BEGIN PGP (?:PRIVATE|SECRET) KEY BLOCK-----")
MAX_KEY_FILE = 1024 * 1024  # an armored public key is a few KiB; a large file is not one


@dataclass(frozen=True)
class KeySpec:
    """One site key: an armored public key file and its pinned fingerprint."""

    name: str
    file: Path  # resolved, inside the site directory
    fingerprint: str  # 40 upper-case hex digits, no spaces
    location: Location
    data: bytes = field(default=b"", repr=False)  # the key file's bytes, read once through the site gate


@dataclass(frozen=True)
class ImageSource:
    """One file of an image set (kernel, an initrd, installer or ISO)."""

    role: str  # "images.<set>.kernel", "images.<set>.initrds[0]", ...
    url: str | None
    file: Path | None  # resolved real path inside the site dir, when the image lives there
    signature: str | None  # URL (for url sources) or resolved path inside the site dir (for file sources)
    keys: tuple[str, ...]
    sha256: str | None
    sha512: str | None
    unsigned: bool
    location: Location
    file_name: str | None = None  # the name as declared (a symlink's target may be named otherwise)
    size: int | None = None  # exact size in bytes, when declared
    # A site file not in place yet: `check` takes the set as declared (the operator puts the
    # file there before building); `fetch` and `build` report this problem at its `file` line.
    absent: Problem | None = None

    @property
    def name(self) -> str:
        """The original file name, kept in the tree path."""
        if self.file is not None:
            return self.file_name or self.file.name
        return PurePosixPath(urlsplit(self.url or "").path).name

    @property
    def origin(self) -> str:
        """URL or site file, as shown in error lines."""
        return self.url if self.url is not None else str(self.file)


@dataclass(frozen=True)
class IsoExtract:
    """Paths inside an ISO to serve as kernel and initrds."""

    kernel: str | None
    initrds: tuple[str, ...]


@dataclass(frozen=True)
class ImageSet:
    """One named image set that profiles refer to."""

    name: str
    mirror: bool
    version: str | None
    kernel: ImageSource | None
    initrds: tuple[ImageSource, ...]
    installer: ImageSource | None
    iso: ImageSource | None
    extract: IsoExtract | None
    location: Location
    arch: str = "x86_64"  # the CPU its kernel runs on
    firmware: tuple[ImageSource, ...] = ()  # Raspberry Pi boot firmware files


@dataclass(frozen=True)
class ImageConfig:
    """The keys and image sets a site declares."""

    keys: dict[str, KeySpec]
    images: dict[str, ImageSet]


def parse_image_config(site_data: dict, site_doc: SourceDoc, site_dir: Path) -> ImageConfig:
    """Build the typed image model from schema-validated site data.

    Raises InputError listing every problem: unknown key names, missing key
    files, malformed fingerprints, mirrored images without a signature or
    `unsigned: true`, file sources that are not mirrored, installers without
    a version.
    """
    problems: list[Problem] = []
    keys = {
        name: _parse_key(name, raw, site_doc, site_dir, problems)
        for name, raw in (site_data.get("keys") or {}).items()
    }
    images = {
        name: _parse_set(name, raw or {}, site_doc, site_dir, keys, problems)
        for name, raw in (site_data.get("images") or {}).items()
    }
    if problems:
        raise InputError(problems)
    return ImageConfig(keys=keys, images=images)


def _problem(doc: SourceDoc, path: tuple, message: str, hint: str = "") -> Problem:
    return Problem(doc.locate(path), message, format_path(path), hint)


def _parse_key(name: str, raw: dict, doc: SourceDoc, site_dir: Path, problems: list[Problem]) -> KeySpec:
    path = ("keys", name)
    fingerprint = "".join(str(raw.get("fingerprint", "")).split()).upper()  # gpg groups it in fours, with two spaces mid-way
    if not _FINGERPRINT.match(fingerprint):
        problems.append(_problem(doc, path + ("fingerprint",), "fingerprint must be 40 hex digits (spaces allowed)",
                                 "copy it from `gpg --show-keys --with-fingerprint <file>`"))
    relative, where, field_path = str(raw.get("file", "")), doc.locate(path + ("file",)), format_path(path + ("file",))
    file, data = site_dir / relative, b""
    try:
        data = read_site_file(site_dir, relative, where, field_path, MAX_KEY_FILE, what="key file")
        file = site_file(site_dir, relative, where, field_path, what="key file")
    except InputError as exc:
        problems.extend(exc.problems)
    if _PRIVATE_KEY.search(data):
        problems.append(Problem(where, f"key file {relative!r} holds a PRIVATE key block; a site key file must "
                                       "hold the public key only", field_path,
                                "export the public key with `gpg --armor --export <fingerprint>`, and keep the "
                                "private key off this machine"))
        data = b""  # never handed to gpg
    return KeySpec(name, file, fingerprint, doc.locate(path, key=True), data)


def _parse_set(name: str, raw: dict, doc: SourceDoc, site_dir: Path, keys: dict, problems: list[Problem]) -> ImageSet:
    path = ("images", name)
    mirror = bool(raw.get("mirror", False))

    def source(sub: tuple, data: dict | None) -> ImageSource | None:
        if data is None:
            return None
        return _parse_source(path + sub, data, doc, site_dir, keys, mirror, problems)

    initrds = tuple(source(("initrds", i), d) for i, d in enumerate(raw.get("initrds") or []))
    iso = source(("iso",), raw.get("iso"))
    image_set = ImageSet(
        name=name, mirror=mirror, version=_opt_str(raw.get("version")),
        kernel=source(("kernel",), raw.get("kernel")), initrds=initrds,
        installer=source(("installer",), raw.get("installer")), iso=iso,
        extract=_parse_extract((raw.get("iso") or {}).get("extract")), location=doc.locate(path, key=True),
        arch=raw.get("arch", "x86_64"),
        firmware=tuple(source(("firmware", i), d) for i, d in enumerate(raw.get("firmware") or [])),
    )
    _check_set(image_set, path, doc, problems)
    return image_set


def _check_set(image_set: ImageSet, path: tuple, doc: SourceDoc, problems: list[Problem]) -> None:
    """Cross-field rules the schema cannot express."""
    if image_set.installer is not None and image_set.mirror and not image_set.version:
        problems.append(_problem(doc, path, "a mirrored installer needs `version:` (the mirror directory name)"))
    if image_set.iso is not None and image_set.extract is not None and not image_set.mirror:
        problems.append(_problem(doc, path + ("iso", "extract"), "extracting from an ISO needs `mirror: true`",
                                 "bootgen must fetch the ISO to take the kernel and initrds out of it"))
    if image_set.firmware and not image_set.mirror:
        problems.append(_problem(doc, path + ("firmware",), "Raspberry Pi firmware needs `mirror: true`",
                                 "a Pi loads its firmware, kernel and initrd over TFTP from its directory in the tree"))
    if image_set.iso is not None and image_set.extract is not None and image_set.kernel is not None:
        problems.append(_problem(doc, path + ("kernel",), "give either `kernel:` or `iso.extract.kernel`, not both"))
    if image_set.firmware:
        _check_pi_names(image_set, path, doc, problems)


PI_WRITTEN = ("config.txt", "cmdline.txt")  # what bootgen writes into a Pi's directory itself


def _check_pi_names(image_set: ImageSet, path: tuple, doc: SourceDoc, problems: list[Problem]) -> None:
    """A Pi's directory, `<serial>/`, holds this set's firmware, kernel and initrds under their own
    names beside the config.txt and cmdline.txt bootgen writes: one name for two files would leave
    one of them unserved (the build would silently keep either)."""
    owners: dict[str, str] = {name: "bootgen writes it" for name in PI_WRITTEN}
    for sub, name in _pi_file_names(image_set):
        if name in owners:
            problems.append(_problem(doc, path + sub, f"{name!r} is a file name this Raspberry Pi set already uses "
                                                      f"in a Pi's directory ({owners[name]})",
                                     "give the file another name: the Pi asks for each file of its directory by name"))
        else:
            owners[name] = f"{format_path(path + sub)} has it too"


def _pi_file_names(image_set: ImageSet) -> list[tuple[tuple, str]]:
    """(field path, name in a Pi's directory) of the set's kernel, initrds and firmware."""
    named = [(("kernel",), image_set.kernel), *((("initrds", i), s) for i, s in enumerate(image_set.initrds))]
    names = [(sub, source.name) for sub, source in named if source is not None]
    if image_set.iso is not None and image_set.extract is not None:
        extract = image_set.extract
        names += [(("iso", "extract", "kernel"), PurePosixPath(extract.kernel).name)] if extract.kernel else []
        names += [(("iso", "extract", "initrds", i), PurePosixPath(member).name)
                  for i, member in enumerate(extract.initrds)]
    return names + [(("firmware", i), source.name) for i, source in enumerate(image_set.firmware)]


def _parse_extract(raw: dict | None) -> IsoExtract | None:
    if raw is None:
        return None
    return IsoExtract(kernel=_opt_str(raw.get("kernel")), initrds=tuple(str(p) for p in raw.get("initrds") or []))


def _parse_source(path: tuple, raw: dict, doc: SourceDoc, site_dir: Path, keys: dict, mirror: bool,
                  problems: list[Problem]) -> ImageSource:
    url = _opt_str(raw.get("url"))
    declared = str(raw["file"]) if raw.get("file") is not None else None
    file = site_dir / declared if declared is not None else None
    absent = None
    if declared is not None and mirror:
        gated, absent = _gated_image_file(site_dir, declared, doc, path + ("file",), problems)
        file = gated or file
    signature = _signature(raw.get("signature"), url, declared, site_dir, doc, path + ("signature",), mirror,
                           problems)
    key_names = tuple(str(k) for k in raw.get("keys") or [])
    unsigned = bool(raw.get("unsigned", False))
    for i, key_name in enumerate(key_names):
        if key_name not in keys:
            known = ", ".join(sorted(keys)) or "none declared"
            problems.append(_problem(doc, path + ("keys", i), f"unknown key {key_name!r} (site keys: {known})"))
    if url is not None and urlsplit(url).scheme not in ("http", "https"):
        problems.append(_problem(doc, path + ("url",), f"unsupported URL scheme in {url!r}; use http:// or https://"))
    elif url is not None and PurePosixPath(urlsplit(url).path).name in ("", ".."):
        problems.append(_problem(doc, path + ("url",), f"{url!r} does not end in a file name",
                                 "the file name is kept in the tree path and boot configs"))
    if file is not None and not mirror:
        problems.append(_problem(doc, path + ("file",), "an image from a site file needs `mirror: true`"))
    sha256, sha512 = _opt_str(raw.get("sha256")), _opt_str(raw.get("sha512"))
    if mirror:
        _check_trust(path, signature, key_names, unsigned, url is not None and not (sha256 or sha512), doc, problems)
    return ImageSource(
        role=".".join(_role_parts(path)), url=url, file=file, signature=signature, keys=key_names,
        sha256=sha256, sha512=sha512, unsigned=unsigned,
        location=doc.locate(path, key=True), file_name=PurePosixPath(declared).name if declared is not None else None,
        size=int(raw["size"]) if raw.get("size") is not None else None, absent=absent,
    )


def _gated_image_file(site_dir: Path, relative: str, doc: SourceDoc, path: tuple,
                      problems: list[Problem]) -> tuple[Path | None, Problem | None]:
    """(resolved site file, None), or (None, the problem) for a file that is not there yet: an
    image file may be put in place after the site is written (kernels are not kept in Git), so
    only reading its bytes needs it. Every other refusal, a dangling symlink among them, is added
    to `problems`."""
    try:
        return site_file(site_dir, relative, doc.locate(path), format_path(path), what="image file"), None
    except SiteFileError as exc:
        if exc.reason == "missing" and not os.path.lexists(site_dir / relative):
            return None, exc.problems[0]
        problems.extend(exc.problems)
        return None, None


def _gated(site_dir: Path, relative: str, doc: SourceDoc, path: tuple, what: str,
           problems: list[Problem]) -> Path | None:
    """The resolved site file `relative` names, or None with the refusal added to `problems`."""
    try:
        return site_file(site_dir, relative, doc.locate(path), format_path(path), what=what)
    except InputError as exc:
        problems.extend(exc.problems)
        return None


def _check_trust(path: tuple, signature: str | None, key_names: tuple, unsigned: bool, unpinned_url: bool,
                 doc: SourceDoc, problems: list[Problem]) -> None:
    """A mirrored image must be signed by named keys, or opt out explicitly (a URL then with a pin:
    a site file's bytes are part of the site, a URL's are whatever the server sends)."""
    role = ".".join(_role_parts(path))
    if signature is None and not unsigned:
        problems.append(_problem(doc, path, f"{role} has no signature and no `unsigned: true`",
                                 "add `signature: auto` and `keys: [...]`, or `unsigned: true` with a `sha256:` pin"))
    elif signature is None and unpinned_url:
        problems.append(_problem(doc, path, f"{role} is `unsigned: true` without a `sha256:` or `sha512:` pin",
                                 "an unsigned download is only checked against its pin: add `sha256: <hex>` "
                                 "(`sha256sum <file>` prints it)"))
    elif signature is not None and not key_names:
        problems.append(_problem(doc, path, f"{role} has a signature but no `keys:` allowed to sign it"))


def _signature(raw: Any, url: str | None, declared: str | None, site_dir: Path, doc: SourceDoc, path: tuple,
               mirror: bool, problems: list[Problem]) -> str | None:
    """Resolve `signature:`; `auto` means the image location plus `.sig`.

    For site files the signature is a site file too, relative to the site dir
    (`auto`: the image's path as declared plus `.sig`), checked by the site gate."""
    if raw is None:
        return None
    text = str(raw)
    if declared is None:
        return (url or "") + ".sig" if text == "auto" else text
    relative = declared + ".sig" if text == "auto" else text
    if not mirror:  # refused as a whole already: an image from a site file needs mirror: true
        return str(site_dir / relative)
    gated = _gated(site_dir, relative, doc, path, "signature file", problems)
    return str(gated) if gated is not None else str(site_dir / relative)


def _role_parts(path: tuple) -> list[str]:
    """("images", "x", "initrds", 0) -> ["images", "x", "initrds[0]"]."""
    parts: list[str] = []
    for part in path:
        if isinstance(part, int):
            parts[-1] += f"[{part}]"
        else:
            parts.append(str(part))
    return parts


def _opt_str(value: Any) -> str | None:
    return None if value is None else str(value)
