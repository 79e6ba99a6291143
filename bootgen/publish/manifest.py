"""Read and check the index of a built tree.

The index is the contract between `bootgen build` and publish: every file of
the tree with its size, sha256 and whether it is content-addressed
(`immutable`). Its root, `manifest.json`, names pages `index/<id>.page.json`,
each naming a run of shards `index/<id>.json` (the entries of a run of
consecutive paths) and beside each one `index/<id>.sha256` (the same run's
SHA256SUMS lines); every `<id>` is the sha256 of the file's bytes. Publish
trusts nothing else, so a tree is verified against its index before a single
byte leaves the machine. A tree of index format 1 (one manifest.json listing
every file, and SHA256SUMS) is still read; one of format 2 (a root naming
every shard) is refused with a hint to rebuild it.
"""
from __future__ import annotations

import hashlib
import json
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path, PurePosixPath
from typing import Callable

from bootgen.errors import Location, Problem, PublishError
from bootgen.plan import CHECKSUMS as SUMS
from bootgen.plan import MANIFEST, is_index_path, page_document, page_name, root_document, shard_name
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
class ShardRef:
    """One shard as the root names it."""

    id: str
    first: str
    count: int


@dataclass(frozen=True)
class PageRef:
    """One page as the root names it: `count` files in `shards` shards from `first`."""

    id: str
    first: str
    count: int
    shards: int

    def as_dict(self) -> dict:
        return {"id": self.id, "first": self.first, "count": self.count, "shards": self.shards}


@dataclass(frozen=True)
class Root:
    """A tree's manifest.json: its build id and pages, and (once the pages are read, see
    with_shards) the shards they name; `raw` keeps the exact bytes."""

    build_id: str
    bootgen_version: str
    file_count: int
    pages: tuple[PageRef, ...]
    raw: bytes
    shards: tuple[ShardRef, ...] = ()

    def index_files(self) -> list[str]:
        """Tree paths of the index in publish order: each shard and its .sha256, then the pages
        naming them, the root last."""
        return [name for shard in self.shards for name in (shard_name(shard.id), shard_name(shard.id, ".sha256"))] \
            + [page_name(page.id) for page in self.pages] + [MANIFEST]

    def with_shards(self, fetch: Callable[[str], tuple[bytes, str]]) -> "Root":
        """This root with the shards its pages name, `fetch(tree path)` giving each page's bytes
        and where they come from (raising PublishError if it cannot). Every problem at once."""
        shards: list[ShardRef] = []
        problems: list[Problem] = []
        for page in self.pages:
            try:
                shards += parse_page(*fetch(page_name(page.id)), page)
            except PublishError as exc:
                problems += exc.problems
        if problems:
            raise PublishError(problems)
        return replace(self, shards=tuple(shards))


@dataclass(frozen=True)
class Manifest:
    """Every file of a tree; `raw` keeps the exact bytes of its manifest.json (the root) so
    they are published unchanged. `root` is None for a tree of index format 1."""

    build_id: str
    bootgen_version: str
    files: tuple[FileEntry, ...]
    raw: bytes
    root: Root | None = None

    def by_path(self) -> dict[str, FileEntry]:
        """Map each path to its entry."""
        return {f.path: f for f in self.files}

    def index_files(self) -> list[str]:
        """Tree paths of the index files in publish order (manifest.json last)."""
        return self.root.index_files() if self.root is not None else [SUMS, MANIFEST]

    def shard_files(self) -> list[tuple[ShardRef, tuple[FileEntry, ...]]]:
        """Each shard with its entries (none for index format 1)."""
        shards, start = [], 0
        for shard in self.root.shards if self.root is not None else ():
            shards.append((shard, self.files[start:start + shard.count]))
            start += shard.count
        return shards


def parse_root(raw: bytes, origin: str) -> Root:
    """A format-3 manifest.json (its pages not read); a PublishError naming the field otherwise."""
    try:
        doc = root_document(raw)
    except UnicodeDecodeError as exc:
        raise PublishError(Problem(Location(origin), f"manifest is not valid JSON: {exc}")) from None
    except ValueError as exc:
        field, _, message = str(exc).partition(": ") if str(exc).startswith("$") else ("", "", str(exc))
        if not field:
            message = f"manifest is not valid JSON: {exc}"
        raise PublishError(Problem(Location(origin), message, field,
                                   "rebuild the tree with this version of bootgen" if field == "$.format" else "")
                           ) from None
    pages = tuple(PageRef(p["id"], p["first"], p["count"], p["shards"]) for p in doc["pages"])
    return Root(doc["build_id"], str(doc.get("bootgen_version", "")), doc["file_count"], pages, raw)


def parse_page(raw: bytes, origin: str, page: PageRef) -> tuple[ShardRef, ...]:
    """The shards a page names, checked against its id and what the root says of it; a
    PublishError naming the page (`origin`) and the field otherwise."""
    try:
        shards = page_document(raw, page.as_dict())
    except (ValueError, UnicodeDecodeError) as exc:
        field, _, message = str(exc).partition(": ") if str(exc).startswith("$") else ("", "", str(exc))
        raise PublishError(Problem(Location(origin), f"page of the index is damaged: {message or exc}",
                                   field if field != "$" else "", "rebuild the tree")) from None
    return tuple(ShardRef(s["id"], s["first"], s["count"]) for s in shards)


def read_root(directory: Path) -> Root:
    """The root (manifest.json) of the tree or listing directory `directory`, its pages read."""
    root = parse_root(_read(directory / MANIFEST, directory), str(directory / MANIFEST))
    return root.with_shards(lambda rel: (_read(directory / rel, directory), str(directory / rel)))


def parse_shard(raw: bytes, shard: ShardRef | str, origin: str) -> tuple[FileEntry, ...]:
    """A shard's entries, checked against its id (and, given a ShardRef, its first path and count)."""
    shard_id = shard.id if isinstance(shard, ShardRef) else shard
    loc = Location(origin)
    if hashlib.sha256(raw).hexdigest() != shard_id:
        raise PublishError(Problem(loc, "the shard's bytes do not hash to its name", hint="rebuild the tree"))
    doc = _json(raw, loc)
    if not isinstance(doc, dict) or not isinstance(doc.get("files"), list):
        raise PublishError(Problem(loc, "shard has no 'files' list", "$.files"))
    problems: list[Problem] = []
    files = [_parse_entry(item, i, loc, problems) for i, item in enumerate(doc["files"])]
    if isinstance(shard, ShardRef) and not problems and (len(files) != shard.count or files[0].path != shard.first):
        problems.append(Problem(loc, f"holds {len(files)} files from {files[0].path if files else None!r}; "
                                     f"manifest.json says {shard.count} from {shard.first!r}",
                                hint="rebuild the tree"))
    if problems:
        raise PublishError(problems)
    return tuple(files)


def read_shard(directory: Path, shard: ShardRef | str) -> tuple[FileEntry, ...]:
    """The entries of one shard of `directory`'s index, verified against its id."""
    path = directory / shard_name(shard.id if isinstance(shard, ShardRef) else shard)
    return parse_shard(_read(path, directory), shard, str(path))


def _read(path: Path, directory: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        if path.name == MANIFEST:
            raise PublishError(Problem(Location(str(directory)), "no manifest.json in the tree",
                                       hint="name the output of `bootgen build` (e.g. the build/ directory)")
                               ) from None
        what = "page" if path.name.endswith(".page.json") else "shard"
        raise PublishError(Problem(Location(str(path)), f"the index names this {what} but it is missing",
                                   hint="rebuild the tree")) from None
    except OSError as exc:
        raise PublishError(Problem(Location(str(path)), f"cannot read the index: {exc.strerror}")) from None


def _json(raw: bytes, loc: Location):
    try:
        return json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise PublishError(Problem(loc, f"not valid JSON: {exc}")) from None


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
    return not is_index_path(path) and parts[0] != ".bootgen"


def _check_duplicates(files: list[FileEntry], loc: Location, problems: list[Problem]) -> None:
    seen: set[str] = set()
    for i, entry in enumerate(files):
        if entry.path and entry.path in seen:
            problems.append(Problem(loc, f"path {entry.path!r} is listed twice", f"$.files[{i}].path"))
        seen.add(entry.path)


def load_tree(tree: Path) -> Manifest:
    """Every entry of the tree (or listing directory) `tree`: its root and all its shards, or
    its format-1 manifest.json. Anything missing or damaged is a PublishError."""
    return parse_index(_read(tree / MANIFEST, tree), str(tree / MANIFEST),
                       lambda rel: (_read(tree / rel, tree), str(tree / rel)))


def parse_index(raw: bytes, origin: str, fetch: Callable[[str], tuple[bytes, str]]) -> Manifest:
    """A whole index from its manifest.json `raw`: a format-1 manifest, or a root and the
    pages and shards it names, `fetch(tree path)` giving each one's bytes and where they come
    from (raising PublishError if it cannot). Every problem is raised at once."""
    if is_format1(raw):
        return parse_manifest(raw, origin)
    root = parse_root(raw, origin).with_shards(fetch)
    files: list[FileEntry] = []
    problems: list[Problem] = []
    for shard in root.shards:
        try:
            body, where = fetch(shard_name(shard.id))
            files += parse_shard(body, shard, where)
        except PublishError as exc:
            problems += exc.problems
    if problems:
        raise PublishError(problems)
    _check_order(files, Location(origin))
    return Manifest(root.build_id, root.bootgen_version, tuple(files), raw, root)


def _format(raw: bytes) -> int | None:
    """The index format a manifest.json declares (1 when it says none), None if not JSON."""
    try:
        doc = json.loads(raw)
    except ValueError:
        return None
    return doc.get("format", 1) if isinstance(doc, dict) else None


def is_format1(raw: bytes) -> bool:
    """Whether a manifest.json is read as index format 1 (one manifest listing every file): it
    says so, or it is not a JSON object (whose errors format 1's reader names best). Any other
    format is read as a root, which refuses all but the current one."""
    return _format(raw) in (1, None)


def _check_order(files: list[FileEntry], loc: Location) -> None:
    """Shards list their paths in order and do not overlap: each path once."""
    for before, after in zip(files, files[1:]):
        if before.path.encode() >= after.path.encode():
            raise PublishError(Problem(loc, f"shards list {after.path!r} after {before.path!r}: out of order "
                                            "or twice", hint="rebuild the tree"))


def load_full(tree: Path) -> tuple[Manifest, Path] | None:
    """The full manifest of a tree whose public one leaves out secret-bearing files, and the
    directory (outside the tree) that holds it with its SHA256SUMS; None for other trees."""
    from bootgen.plan import listing_dir

    where = listing_dir(tree)
    if where == tree.resolve() or where == tree:
        return None
    return load_tree(where), where


def verify_tree(tree: Path, manifest: Manifest, jobs: int = 4, sums_dir: Path | None = None) -> None:
    """Check every listed file (size, then sha256, streamed) and the SHA256SUMS lines (each
    shard's .sha256, or format 1's SHA256SUMS) in `sums_dir`, the tree by default; raise all
    problems at once."""
    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        found = pool.map(lambda e: verify_file(tree, e), manifest.files)
        problems = [p for p in found if p is not None]
    if manifest.root is None:
        problems.append(_verify_sums(sums_dir or tree, SUMS, manifest.files))
    for shard, files in manifest.shard_files():
        problems.append(_verify_sums(sums_dir or tree, shard_name(shard.id, ".sha256"), files))
    problems = [p for p in problems if p is not None]
    if problems:
        raise PublishError(problems)


def verify_file(tree: Path, entry: FileEntry) -> Problem | None:
    """A problem if the tree's file is not the one its entry lists (size, then sha256, streamed)."""
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


def _verify_sums(tree: Path, name: str, files) -> Problem | None:
    """SHA256SUMS lines are published too, so they must agree with the entries they go with."""
    loc = Location(str(tree / name))
    try:
        text = (tree / name).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return Problem(loc, f"{name} is missing or unreadable", hint="rebuild the tree")
    if text != render_sums(files):
        return Problem(loc, f"{name} does not match the entries it goes with", hint="rebuild the tree")
    return None


def tree_sums(tree: Path) -> str:
    """The SHA256SUMS text of a tree (its own index's .sha256 lines in path order)."""
    raw = _read(tree / MANIFEST, tree)
    if is_format1(raw):
        return _read(tree / SUMS, tree).decode()
    root = read_root(tree)
    return "".join(_read(tree / shard_name(shard.id, ".sha256"), tree).decode() for shard in root.shards)


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


def read_root_bytes(directory: Path) -> bytes:
    """The exact bytes of `directory`'s manifest.json (a PublishError if there is none)."""
    return _read(directory / MANIFEST, directory)


def index_format(raw: bytes) -> int | None:
    """The index format a manifest.json declares (1 when it says none), None if not JSON."""
    return _format(raw)


def verify_sums(directory: Path, name: str, files) -> Problem | None:
    """`directory/name` holds the SHA256SUMS lines of these entries (a problem otherwise)."""
    return _verify_sums(directory, name, files)
