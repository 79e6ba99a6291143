"""Read and check the manifest of a built tree.

`manifest.json` is the contract between `bootgen build` and publish: every
file of the tree with its size, sha256 and whether it is content-addressed
(`immutable`). Publish trusts nothing else, so a tree is verified against its
manifest before a single byte leaves the machine.
"""
from __future__ import annotations

import hashlib
import json
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from bootgen.errors import Location, Problem, PublishError

MANIFEST = "manifest.json"
SUMS = "SHA256SUMS"
_HEX64 = re.compile(r"^[0-9a-f]{64}\Z")
_BUILD_ID = re.compile(r"^[0-9a-f]{8,128}\Z")
_CHUNK = 1 << 20


@dataclass(frozen=True)
class FileEntry:
    """One file of a tree as the manifest lists it."""

    path: str
    size: int
    sha256: str
    immutable: bool
    node: str | None = None
    target: str | None = None
    content_type: str = ""  # as the build decided it (bootgen.content); publishers send it unchanged


@dataclass(frozen=True)
class Manifest:
    """A parsed manifest; `raw` keeps the exact bytes so they are published unchanged."""

    build_id: str
    bootgen_version: str
    files: tuple[FileEntry, ...]
    raw: bytes

    def by_path(self) -> dict[str, FileEntry]:
        """Map each path to its entry."""
        return {f.path: f for f in self.files}


def parse_manifest(raw: bytes, origin: str) -> Manifest:
    """Parse manifest bytes, collecting every problem; `origin` names the file in messages."""
    loc = Location(origin)
    try:
        doc = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise PublishError(Problem(loc, f"manifest is not valid JSON: {exc}")) from None
    if not isinstance(doc, dict) or not isinstance(doc.get("files"), list):
        raise PublishError(Problem(loc, "manifest has no 'files' list", "$.files"))
    problems: list[Problem] = []
    build_id = doc.get("build_id")
    if not isinstance(build_id, str) or not _BUILD_ID.match(build_id):
        problems.append(Problem(loc, "build_id must be lowercase hex", "$.build_id"))
    files = [_parse_entry(item, i, loc, problems) for i, item in enumerate(doc["files"])]
    _check_duplicates(files, loc, problems)
    if problems:
        raise PublishError(problems)
    return Manifest(build_id, str(doc.get("bootgen_version", "")), tuple(files), raw)


def _parse_entry(item: object, index: int, loc: Location, problems: list[Problem]) -> FileEntry:
    """Turn one `files[]` item into a FileEntry, noting what is wrong with it."""
    where = f"$.files[{index}]"
    if not isinstance(item, dict):
        problems.append(Problem(loc, "file entry must be an object", where))
        return FileEntry("", 0, "", False)
    path, size, sha, immutable = item.get("path"), item.get("size"), item.get("sha256"), item.get("immutable")
    if not isinstance(path, str) or not _is_safe_path(path):
        problems.append(Problem(loc, f"unsafe or missing path {path!r}", f"{where}.path",
                                "paths must be relative, without '..' or empty parts"))
        path = ""
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        problems.append(Problem(loc, f"size must be a non-negative integer, not {size!r}", f"{where}.size"))
        size = 0
    if not isinstance(sha, str) or not _HEX64.match(sha):
        problems.append(Problem(loc, "sha256 must be 64 lowercase hex digits", f"{where}.sha256"))
        sha = ""
    if not isinstance(immutable, bool):
        problems.append(Problem(loc, "immutable must be true or false", f"{where}.immutable"))
        immutable = False
    mime = item.get("content_type")
    if not isinstance(mime, str) or not mime or any(c in mime for c in "\r\n"):
        problems.append(Problem(loc, f"content_type must be a media type, not {mime!r}", f"{where}.content_type",
                                "rebuild the tree with this version of bootgen"))
        mime = ""
    return FileEntry(path, size, sha, immutable, item.get("node"), item.get("target"), mime)


def _is_safe_path(path: str) -> bool:
    """Reject paths that could escape the tree or collide with publish's own files."""
    parts = PurePosixPath(path).parts
    if not path or path.startswith("/") or "\\" in path or not parts:
        return False
    if any(p in ("", ".", "..") for p in path.split("/")):
        return False
    return path not in (MANIFEST, SUMS) and parts[0] != ".bootgen"


def _check_duplicates(files: list[FileEntry], loc: Location, problems: list[Problem]) -> None:
    seen: set[str] = set()
    for i, entry in enumerate(files):
        if entry.path and entry.path in seen:
            problems.append(Problem(loc, f"path {entry.path!r} is listed twice", f"$.files[{i}].path"))
        seen.add(entry.path)


def load_tree(tree: Path) -> Manifest:
    """Read `tree/manifest.json`; a missing or unreadable one is a PublishError."""
    path = tree / MANIFEST
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise PublishError(Problem(Location(str(tree)), "no manifest.json in the tree",
                                   hint="publish the output of `bootgen build` (e.g. the build/ directory)")) from None
    except OSError as exc:
        raise PublishError(Problem(Location(str(path)), f"cannot read manifest: {exc.strerror}")) from None
    return parse_manifest(raw, str(path))


def load_full(tree: Path) -> tuple[Manifest, Path] | None:
    """The full manifest of a tree whose public one leaves out secret-bearing files, and the
    directory (outside the tree) that holds it with its SHA256SUMS; None for other trees."""
    from bootgen.plan import listing_dir

    where = listing_dir(tree)
    if where == tree.resolve() or where == tree:
        return None
    return parse_manifest((where / MANIFEST).read_bytes(), str(where / MANIFEST)), where


def verify_tree(tree: Path, manifest: Manifest, jobs: int = 4, sums_dir: Path | None = None) -> None:
    """Check every listed file (size, then sha256, streamed) and SHA256SUMS (in `sums_dir`, the
    tree by default); raise all problems at once."""
    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        found = pool.map(lambda e: _verify_file(tree, e), manifest.files)
        problems = [p for p in found if p is not None]
    sums = _verify_sums(sums_dir or tree, manifest)
    if sums:
        problems.append(sums)
    if problems:
        raise PublishError(problems)


def _verify_file(tree: Path, entry: FileEntry) -> Problem | None:
    loc = Location(str(tree / entry.path))
    try:
        size = (tree / entry.path).stat().st_size
        if size != entry.size:
            return Problem(loc, f"size is {size}, manifest says {entry.size}", hint="rebuild the tree")
        digest = sha256_file(tree / entry.path)
    except OSError as exc:
        return Problem(loc, f"listed in manifest.json but unreadable: {exc.strerror}", hint="rebuild the tree")
    if digest != entry.sha256:
        return Problem(loc, "sha256 does not match manifest.json", hint="the tree was modified after the build; rebuild it")
    return None


def _verify_sums(tree: Path, manifest: Manifest) -> Problem | None:
    """SHA256SUMS is published too, so it must agree with the manifest."""
    loc = Location(str(tree / SUMS))
    try:
        text = (tree / SUMS).read_text(encoding="utf-8")
    except OSError:
        return Problem(loc, "SHA256SUMS is missing or unreadable", hint="rebuild the tree")
    if text != render_sums(manifest.files):
        return Problem(loc, "SHA256SUMS does not match manifest.json", hint="rebuild the tree")
    return None


def render_sums(files: tuple[FileEntry, ...] | list[FileEntry]) -> str:
    """The SHA256SUMS text for these files, in the format `sha256sum -c` reads."""
    return "".join(f"{f.sha256}  {f.path}\n" for f in sorted(files, key=lambda f: f.path))


def sha256_file(path: Path) -> str:
    """Hash a file in chunks so images never sit in memory whole."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()
