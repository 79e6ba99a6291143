"""The build plan: every file the tree will hold, before anything is written.

Render steps add `Artifact`s to a `Plan`; the plan refuses two artifacts that
claim one path (naming both producers), and yields the manifest that publish
and the writer rely on.
"""
from __future__ import annotations

import bisect
import hashlib
import heapq
import json
import operator
import os
import re
import zlib
from dataclasses import dataclass
from pathlib import Path

from . import __version__
from .content import content_type
from .errors import Location, OutputError, Problem, RenderError

MANIFEST = "manifest.json"  # the root of a tree's index, written last
INDEX = "index"  # the shards of the index (index/<id>.json and .sha256) and its pages (index/<id>.page.json)
CHECKSUMS = "SHA256SUMS"  # the lines of index/*.sha256 in path order, as `bootgen sums` prints them
PRIVATE = "private"  # .bootgen/private/<build id>/: the full listing of a tree with secret-bearing files
SECRET_PATHS = "secret-paths.json"  # beside that listing: the paths left out of the public one
FENCE = "server/nginx-secrets.conf"  # the nginx rules for secret-bearing files (bootgen.render.fence)


def is_index_path(path: str) -> bool:
    """Whether `path` belongs to a tree's index (never an entry of its listing)."""
    return path == MANIFEST or path.startswith(INDEX + "/") or path == CHECKSUMS


def private_dir(tree: Path) -> Path:
    """Where the full listing of the tree `.bootgen/builds/<id>` is kept when its public one
    leaves out secret-bearing files: outside every served tree."""
    tree = tree.resolve()
    return tree.parent.parent / PRIVATE / tree.name


def listing_dir(tree: Path) -> Path:
    """The directory holding the full index (manifest.json and index/) of a tree."""
    private = private_dir(tree)
    return private if (private / MANIFEST).is_file() else tree


@dataclass(frozen=True)
class Artifact:
    """One file of the output tree: bytes to write, or a file to hard-link."""

    path: str
    sha256: str
    size: int
    immutable: bool  # content-addressed: its path changes whenever its bytes do
    node: str | None
    target: str
    data: bytes | None = None
    source: Path | None = None

    @classmethod
    def from_bytes(cls, path: str, data: bytes, *, target: str, node: str | None = None,
                   immutable: bool = False) -> "Artifact":
        return cls(path, hashlib.sha256(data).hexdigest(), len(data), immutable, node, target, data=data)

    def listing_lines(self) -> tuple[bytes, bytes]:
        """Its manifest entry and SHA256SUMS line."""
        return listing_lines(self.path, self.sha256, self.size, self.immutable, self.node, self.target)


def content_path(prefix: str, files: dict[str, bytes]) -> str:
    """Directory path derived from the content of all files in it (16 hex digits)."""
    digest = hashlib.sha256()
    for name in sorted(files):
        digest.update(name.encode() + b"\0" + hashlib.sha256(files[name]).digest())
    return f"{prefix}/{digest.hexdigest()[:16]}"


class Plan:
    """Artifacts by path; a second claim on a path is an error, not an overwrite."""

    def __init__(self) -> None:
        self.artifacts: dict[str, Artifact] = {}
        self.problems: list[Problem] = []

    def add(self, artifact: Artifact) -> None:
        existing = self.artifacts.get(artifact.path)
        if is_index_path(artifact.path):
            self.problems.append(Problem(Location(artifact.path), f"{producer(artifact)} names a path the tree's "
                                         f"index uses ({MANIFEST} and {INDEX}/ are bootgen's own)",
                                         hint="choose another file name"))
        elif existing is None:
            self.artifacts[artifact.path] = artifact
        elif existing.sha256 != artifact.sha256 or artifact.source is None:
            # Identical image files may be placed by two image sets; rendered files never collide.
            self.problems.append(Problem(
                Location(artifact.path), f"two outputs claim this path: {producer(existing)} and {producer(artifact)}",
                hint="file names come from MACs, addresses and node names; make them unique"))

    def check(self) -> None:
        if self.problems:
            raise RenderError(self.problems)


def producer(artifact: Artifact) -> str:
    """Who makes a file, for problems: 'ipxe for node \'node-1\'', or a site-wide target."""
    return f"{artifact.target} for node '{artifact.node}'" if artifact.node else artifact.target


_ENTRY_ENCODER = json.JSONEncoder(sort_keys=True)  # one encoder: json.dumps builds a new one per call
_SEPARATOR = b",\n    "  # between manifest entries
_SHARD_OPEN = b'{"files": [\n    '  # a shard is these, its entries joined by _SEPARATOR, and _SHARD_CLOSE
_SHARD_CLOSE = b"\n]}\n"
_SUM_PATH = 66  # a SHA256SUMS line is 64 hex digits, two spaces, the path and a newline
CHUNK = 512  # files per chunk of a listing, on average: a floor, then a chance per path (see _ends_chunk)
CHUNK_SPREAD = 8  # the chance is 1 in CHUNK / CHUNK_SPREAD past a floor of the rest: 448 files, then 1 in 64
MAX_CHUNK_FACTOR = 8  # no chunk holds more than this many times CHUNK files
PAGE = 32  # shards per page of the index, on average: PAGE / 2 at least, then a 1-in-PAGE/2 chance a shard
MAX_PAGE_FACTOR = 4  # no page names more than this many times PAGE shards
FORMAT = 3  # of a tree's index: manifest.json is a root naming pages, each naming shards in index/
PAGE_SUFFIX = ".page"  # index/<id>.page.json: a page, named by the sha256 of its bytes
PACK_LEVEL = 1  # zlib level of packed chunks: a third of the bytes at ~150 MB/s on a loaded core


def listing_lines(path: str, sha256: str, size: int, immutable: bool, node: str | None,
                  target: str) -> tuple[bytes, bytes]:
    """A file's manifest entry (JSON, sorted keys) and its SHA256SUMS line. The entry
    carries the file's Content-Type, decided here once for every publisher."""
    entry = _ENTRY_ENCODER.encode({"path": path, "size": size, "sha256": sha256, "immutable": immutable,
                                   "node": node, "target": target, "content_type": content_type(path)})
    return entry.encode(), f"{sha256}  {path}\n".encode()


def checksummed_paths(sums: bytes) -> list[str]:
    """The paths a SHA256SUMS text lists, in its order."""
    return [line[_SUM_PATH:].decode() for line in sums.splitlines()]


def _sum_key(line: bytes) -> bytes:
    return line[_SUM_PATH:-1]


def _chunk_chance() -> int:
    return max(1, CHUNK // CHUNK_SPREAD)


def _chunk_floor() -> int:
    return max(1, CHUNK - _chunk_chance())


def _ends_chunk(key: bytes) -> bool:
    """Whether a chunk of at least _chunk_floor() files ends after this path. Decided by the path
    alone, so the cuts stay where they are when files around them come, go or change: an edit
    rewrites only its chunks. (A high floor and a small chance narrow the spread of chunk sizes:
    a node falls in a large chunk as often as a fleet of any size has them, so the bytes an edit
    rewrites would otherwise depend on the fleet.)"""
    return zlib.crc32(key) % _chunk_chance() == 0


def _ends_page(first: bytes) -> bool:
    """Whether a page of at least PAGE / 2 shards ends after the shard whose first path this is.
    The first path, not the shard id: an edit changes the ids of its shards but seldom their
    first paths, so it rewrites only the page holding them."""
    return zlib.crc32(first) % max(1, PAGE // 2) == 0


def shard_name(shard_id: str, suffix: str = ".json") -> str:
    """The tree path of a shard (`.json`) or of its SHA256SUMS lines (`.sha256`)."""
    return f"{INDEX}/{shard_id}{suffix}"


def page_name(page_id: str) -> str:
    """The tree path of a page of the index: index/<id>.page.json."""
    return shard_name(page_id + PAGE_SUFFIX)


def is_page_path(path: str) -> bool:
    return path.startswith(INDEX + "/") and path.endswith(PAGE_SUFFIX + ".json")


class IndexDamaged(OutputError):
    """A shard of a tree's index is missing or not what its name says."""


class _Chunk:
    """A run of consecutive files: their manifest entries and SHA256SUMS lines, joined.

    One chunk is one shard of the tree's index (`index/<id>.json` and
    `index/<id>.sha256`). A chunk of a listing read from a tree holds only
    its first path, count and id until its lines are first needed. A packed
    chunk holds its lines zlib-compressed (a third of the bytes), for the
    listings of very large builds. A chunk holds both its entries and its
    lines (plain or packed), or reads what it lacks from its shard."""

    __slots__ = ("first", "count", "_entries", "_sums", "_id", "source", "_packed")

    def __init__(self, first: bytes, entries: bytes | None, sums: bytes | None, count: int,
                 shard_id: str | None = None, source: Path | None = None, packed: bool = False):
        self.first = first  # its first path (UTF-8 sorts as the str paths do)
        self.count = count
        self._packed = packed and entries is not None
        if self._packed:
            entries, sums = zlib.compress(entries, PACK_LEVEL), zlib.compress(sums, PACK_LEVEL)
        self._entries, self._sums, self._id = entries, sums, shard_id
        self.source = source  # the directory whose index/ holds it (read from a tree), else None

    @classmethod
    def of(cls, entries: list[bytes], sums: list[bytes], packed: bool = False) -> "_Chunk":
        return cls(_sum_key(sums[0]), _SEPARATOR.join(entries), b"".join(sums), len(sums), packed=packed)

    @property
    def packed(self) -> bool:
        return self._packed

    @property
    def entries(self) -> bytes:
        if self._entries is None:
            shard = self._read(".json")
            if hashlib.sha256(shard).hexdigest() != self._id or not shard.startswith(_SHARD_OPEN) \
                    or not shard.endswith(_SHARD_CLOSE):
                raise self._damaged(".json", "its bytes do not hash to its name")
            self._entries = shard[len(_SHARD_OPEN):-len(_SHARD_CLOSE)]
        return zlib.decompress(self._entries) if self._packed else self._entries

    @property
    def sums(self) -> bytes:
        if self._sums is None:
            sums = self._read(".sha256")
            if sums.count(b"\n") != self.count or not sums.endswith(b"\n") \
                    or _sum_key(sums[:sums.find(b"\n") + 1]) != self.first:
                raise self._damaged(".sha256", f"it does not hold the {self.count} lines manifest.json says")
            self._sums = sums
        return zlib.decompress(self._sums) if self._packed else self._sums

    @property
    def id(self) -> str:
        """The shard's name: the sha256 of its bytes."""
        if self._id is None:
            self._id = hashlib.sha256(self.shard_bytes()).hexdigest()
        return self._id

    def shard_bytes(self) -> bytes:
        return _SHARD_OPEN + self.entries + _SHARD_CLOSE

    def lines(self) -> tuple[list[bytes], list[bytes]]:
        return self.entries.split(_SEPARATOR), self.sums.splitlines(keepends=True)

    def release(self, directory: Path) -> None:
        """Forget the lines, now that `directory`/index/ holds this chunk's shard (read again
        from there when needed)."""
        self.id  # noqa: B018  (named by its bytes, which are about to go)
        self._entries = self._sums = None
        self._packed = False
        self.source = directory

    def _read(self, suffix: str) -> bytes:
        try:
            return (self.source / shard_name(self._id, suffix)).read_bytes()
        except OSError as exc:
            raise self._damaged(suffix, f"cannot be read: {exc.strerror}") from None

    def _damaged(self, suffix: str, why: str) -> IndexDamaged:
        return IndexDamaged(Problem(Location(str(self.source / shard_name(self._id, suffix))),
                                    f"the live tree's index is damaged: {why}",
                                    hint="delete .bootgen/stamp and build again (every file is then made anew)"))


def _chunked(lines, packed: bool = False) -> tuple[list[_Chunk], list[bytes], list[bytes]]:
    """Cut (entry, SHA256SUMS line) pairs, in path order, into chunks: after a path that ends
    one (once it holds _chunk_floor() files), or at CHUNK * MAX_CHUNK_FACTOR files. Left to right,
    starting afresh after every cut. Returns the chunks and the lines of an unfinished last
    one (empty when the last chunk ended by rule)."""
    chunks, entries, sums = [], [], []
    floor, limit = _chunk_floor(), CHUNK * MAX_CHUNK_FACTOR
    for entry, line in lines:
        entries.append(entry)
        sums.append(line)
        if len(sums) >= limit or (len(sums) >= floor and _ends_chunk(_sum_key(line))):
            chunks.append(_Chunk.of(entries, sums, packed))
            entries, sums = [], []
    return chunks, entries, sums


def _all_chunked(lines, packed: bool = False) -> list[_Chunk]:
    chunks, entries, sums = _chunked(lines, packed)
    return chunks + [_Chunk.of(entries, sums, packed)] if sums else chunks


class Listing:
    """Every file of a tree, sorted by path: its manifest entries and SHA256SUMS lines.

    Kept as chunks of a few hundred files, each one bytes object and one shard
    of the tree's index: a build that changes a few nodes splits and rejoins
    only the chunks they fall in, and writes only those shards. Where chunks
    are cut depends on the paths alone (see _ends_chunk), so patching a
    listing gives the chunks a listing built anew from the same files has.
    The pages naming the shards are worked out from the chunks (see
    _ends_page), so they too are the same either way. A listing read from a
    tree reads its root and pages, and a shard only when one of its files is
    asked about (its id, from a page, names it)."""

    def __init__(self, chunks: list[_Chunk], build_id: str | None = None):
        self.chunks = chunks
        self._firsts = [chunk.first for chunk in chunks]
        self._build_id = build_id
        self._pages: list[_Page] | None = None

    @classmethod
    def of_lines(cls, lines: dict[str, tuple[bytes, bytes]], *, consume: bool = False,
                 packed: bool = False) -> "Listing":
        """From path -> (manifest entry, SHA256SUMS line); `consume` empties `lines` as it
        goes, so a million lines are not held twice; `packed` chunks hold them compressed."""
        return cls(_all_chunked((lines.pop(p) if consume else lines[p] for p in sorted(lines)), packed))

    @classmethod
    def merged(cls, runs: list["Listing"]) -> tuple["Listing", list[tuple[bytes, bytes]]]:
        """One listing from several (each sorted), and the entries of any path two of them hold.

        Each run's chunks are released as they are merged; the listing is packed if a run is."""
        packed = any(chunk.packed for run in runs for chunk in run.chunks[:1])

        def lines(run: Listing):
            chunks, run.chunks = run.chunks, []
            chunks.reverse()
            while chunks:
                entries, sums = chunks.pop().lines()
                yield from zip(map(_sum_key, sums), entries, sums)

        clashes = []

        def unique():
            last_key = last_entry = None
            for key, entry, line in heapq.merge(*map(lines, runs), key=operator.itemgetter(0)):
                if key == last_key:
                    clashes.append((last_entry, entry))
                    continue
                last_key, last_entry = key, entry
                yield entry, line

        return cls(_all_chunked(unique(), packed)), clashes

    @classmethod
    def read(cls, tree: Path) -> "Listing | None":
        """The listing of a tree bootgen wrote (None if its index is not in that shape, or is
        an older format). Reads the root, its pages and the names in index/; the shards are
        read when needed."""
        directory = listing_dir(tree)
        try:
            root = root_document((directory / MANIFEST).read_bytes())
            present = set(os.listdir(directory / INDEX)) if root["pages"] else set()
            refs = [shard for page in root["pages"]
                    for shard in page_document((directory / page_name(page["id"])).read_bytes(), page)]
        except (OSError, ValueError):
            return None
        chunks = []
        for shard in refs:
            if f"{shard['id']}.json" not in present or f"{shard['id']}.sha256" not in present:
                return None
            chunks.append(_Chunk(shard["first"].encode(), None, None, shard["count"], shard["id"], directory))
        return cls(chunks, root["build_id"])

    def __len__(self) -> int:
        return sum(chunk.count for chunk in self.chunks)

    def _chunk_of(self, key: bytes) -> int:
        return max(0, bisect.bisect_right(self._firsts, key) - 1)

    def lookup(self, path: str) -> tuple[bytes, bytes] | None:
        """(manifest entry, SHA256SUMS line) of `path`, or None."""
        if not self.chunks:
            return None
        key = path.encode()
        entries, sums = self.chunks[self._chunk_of(key)].lines()
        i = bisect.bisect_left(sums, key, key=_sum_key)
        return (entries[i], sums[i]) if i < len(sums) and _sum_key(sums[i]) == key else None

    def _by_chunk(self, paths) -> dict[int, list[str]]:
        grouped: dict[int, list[str]] = {}
        for path in paths:
            grouped.setdefault(self._chunk_of(path.encode()), []).append(path)
        return grouped if self.chunks else {}

    def differing(self, lines: dict[str, tuple[bytes, bytes]]) -> dict[str, tuple[bytes, bytes]]:
        """The items of `lines` (path -> lines) this listing does not hold as they are.

        Each chunk concerned is split once, however many paths fall in it."""
        if not self.chunks:
            return dict(lines)
        differ = {}
        for index, paths in self._by_chunk(lines).items():
            entries, sums = self.chunks[index].lines()
            held = dict(zip(map(_sum_key, sums), entries))
            differ.update((p, lines[p]) for p in paths if held.get(p.encode()) != lines[p][0])
        return differ

    def holding(self, paths) -> set[str]:
        """Those of `paths` this listing holds."""
        held = set()
        for index, group in self._by_chunk(paths).items():
            keys = {_sum_key(line) for line in self.chunks[index].sums.splitlines(keepends=True)}
            held.update(p for p in group if p.encode() in keys)
        return held

    def node(self, path: str) -> str | None:
        """The node that owns `path` (None for shared files or a path not listed)."""
        found = self.lookup(path)
        return None if found is None else json.loads(found[0])["node"]

    def target(self, path: str) -> str | None:
        found = self.lookup(path)
        return None if found is None else json.loads(found[0])["target"]

    def paths(self) -> list[str]:
        return [path for chunk in self.chunks for path in checksummed_paths(chunk.sums)]

    def patched(self, upserts: dict[str, tuple[bytes, bytes]], removals) -> "Listing":
        """A new listing with `upserts` (path -> lines) set and `removals` gone; chunks
        nothing touched are shared with this one."""
        touched: dict[int, dict[bytes, tuple[bytes, bytes] | None]] = {}
        for path in removals:
            key = path.encode()
            touched.setdefault(self._chunk_of(key), {})[key] = None
        for path, lines in upserts.items():
            key = path.encode()
            touched.setdefault(self._chunk_of(key), {})[key] = lines
        if not self.chunks:
            return Listing.of_lines({k.decode(): v for k, v in touched.get(0, {}).items() if v is not None})
        chunks, done = [], 0  # self.chunks[:done] are placed
        for index in sorted(touched):
            if index >= done:
                chunks += self.chunks[done:index]
                made, done = self._rechunked(index, touched)
                chunks += made
        return Listing(chunks + self.chunks[done:])

    def _rechunked(self, index: int, touched: dict) -> tuple[list[_Chunk], int]:
        """Chunks for self.chunks[index:] with their changes applied, up to the first old cut the
        new chunks share (from there on the old chunks stand); and the index of that old chunk."""
        made, entries, sums = [], [], []
        while True:
            more_entries, more_sums = self.chunks[index].lines()
            _apply(more_entries, more_sums, touched.get(index, {}))
            index += 1
            finished, entries, sums = _chunked(zip(entries + more_entries, sums + more_sums))
            made += finished
            if not sums or index == len(self.chunks):
                break
        return (made + [_Chunk.of(entries, sums)] if sums else made), index

    def kept_in(self, directory: Path) -> None:
        """Read the shards not read yet from `directory` (the new live tree's index, which holds
        every one): the tree they were read from may be recycled or removed by a later build."""
        for chunk in self.chunks:
            if chunk.source is not None:
                chunk.source = directory

    def without(self, paths) -> "Listing":
        """This listing less `paths` (the public listing of a tree with secret-bearing files)."""
        return self.patched({}, paths) if paths else self

    def checksums_bytes(self) -> bytes:
        """SHA256SUMS: every file's line, in path order."""
        return b"".join(chunk.sums for chunk in self.chunks)

    def build_id(self) -> str:
        """A tree's id is the digest of its shards' ids in path order: the same files with the
        same bytes (and the same entries) give the same id, and an edit computes it from the
        shards it rewrote and the names of the others, without reading them. (The format is in
        the digest: a tree of another index format never shares an id with this one's.)"""
        if self._build_id is None:
            digest = hashlib.sha256(f"bootgen index {FORMAT}\n".encode())
            for chunk in self.chunks:
                digest.update(chunk.id.encode() + b"\n")
            self._build_id = digest.hexdigest()
        return self._build_id

    def pages(self) -> list["_Page"]:
        """The pages of the index: runs of consecutive shards, cut where the shards' first
        paths say (see _ends_page), so an edit rewrites only the pages its shards are in."""
        if self._pages is None:
            self._pages = [_Page(run) for run in _paged(self.chunks)]
        return self._pages

    def root_bytes(self, build_id: str) -> bytes:
        """manifest.json: the tree's build id and its pages in path order, one per line."""
        pages = [_ENTRY_ENCODER.encode({"count": p.count, "first": p.first.decode(), "id": p.id, "shards": p.shards})
                 for p in self.pages()]
        body = "[\n    " + ",\n    ".join(pages) + "\n  ]" if pages else "[]"
        return (f'{{\n  "bootgen_version": {json.dumps(__version__)},\n  "build_id": {json.dumps(build_id)},\n'
                f'  "file_count": {len(self)},\n  "format": {FORMAT},\n  "pages": {body}\n}}\n').encode()

    def entries_bytes(self) -> bytes:
        """Every manifest entry, one per line (for tests and `bootgen explain`)."""
        return _SEPARATOR.join(chunk.entries for chunk in self.chunks)


class _Page:
    """A run of consecutive chunks: one page of the tree's index (`index/<id>.page.json`), the
    shard references the root would otherwise list, {count, first, id} each."""

    __slots__ = ("chunks", "_bytes", "_id")

    def __init__(self, chunks: list[_Chunk]):
        self.chunks = chunks
        self._bytes = self._id = None

    @property
    def first(self) -> bytes:
        return self.chunks[0].first

    @property
    def count(self) -> int:
        """Files in its shards."""
        return sum(chunk.count for chunk in self.chunks)

    @property
    def shards(self) -> int:
        return len(self.chunks)

    def page_bytes(self) -> bytes:
        if self._bytes is None:
            refs = [_ENTRY_ENCODER.encode({"count": c.count, "first": c.first.decode(), "id": c.id})
                    for c in self.chunks]
            self._bytes = ('{"shards": [\n    ' + ",\n    ".join(refs) + "\n]}\n").encode()
        return self._bytes

    @property
    def id(self) -> str:
        if self._id is None:
            self._id = hashlib.sha256(self.page_bytes()).hexdigest()
        return self._id


def _paged(chunks: list[_Chunk]) -> list[list[_Chunk]]:
    """Cut chunks, in path order, into pages: after a chunk whose first path ends one (once it
    holds PAGE / 2 chunks), or at PAGE * MAX_PAGE_FACTOR chunks."""
    pages, page = [], []
    floor, limit = max(1, PAGE // 2), PAGE * MAX_PAGE_FACTOR
    for chunk in chunks:
        page.append(chunk)
        if len(page) >= limit or (len(page) >= floor and _ends_page(chunk.first)):
            pages.append(page)
            page = []
    return pages + [page] if page else pages


def root_document(raw: bytes) -> dict:
    """manifest.json of a format-3 tree, checked for the shape readers rely on; ValueError
    (naming the field) otherwise."""
    doc = json.loads(raw)
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        found = doc.get("format", 1) if isinstance(doc, dict) else None
        raise ValueError(f"$.format: index format {found!r}, not {FORMAT}")
    if not isinstance(doc.get("build_id"), str) or not _HEX.match(doc["build_id"]):
        raise ValueError("$.build_id: must be lowercase hex")
    pages = doc.get("pages")
    if not isinstance(pages, list):
        raise ValueError("$.pages: must be a list")
    _check_refs(pages, "$.pages", "page")
    for i, page in enumerate(pages):
        shards = page.get("shards")
        if not isinstance(shards, int) or isinstance(shards, bool) or not 1 <= shards <= page["count"]:
            raise ValueError(f"$.pages[{i}].shards: must be a positive integer, at most the page's count")
    total = sum(page["count"] for page in pages)
    if doc.get("file_count") != total:
        raise ValueError(f"$.file_count: must be {total}, the sum of the pages' counts")
    return doc


def page_document(raw: bytes, page: dict) -> list[dict]:
    """The shard references of a page, checked against its name and against what the root says
    of it (`page`: {id, first, count, shards}); ValueError naming the field otherwise."""
    if hashlib.sha256(raw).hexdigest() != page["id"]:
        raise ValueError("$: the page's bytes do not hash to its name")
    doc = json.loads(raw)
    shards = doc.get("shards") if isinstance(doc, dict) else None
    if not isinstance(shards, list) or not shards:
        raise ValueError("$.shards: must be a list of shards")
    _check_refs(shards, "$.shards", "shard")
    if len(shards) != page["shards"] or sum(s["count"] for s in shards) != page["count"] \
            or shards[0]["first"] != page["first"]:
        raise ValueError(f"$.shards: must be {page['shards']} shards of {page['count']} files from "
                         f"{page['first']!r}, as manifest.json says")
    return shards


def _check_refs(refs: list, where: str, what: str) -> None:
    """{id, first, count} items: 64 hex digits, first paths in order, positive counts."""
    last = None
    for i, ref in enumerate(refs):
        if not isinstance(ref, dict) or not isinstance(ref.get("id"), str) or not _HEX.match(ref["id"]) \
                or len(ref["id"]) != 64:
            raise ValueError(f"{where}[{i}].id: must be 64 lowercase hex digits")
        if not isinstance(ref.get("first"), str) or (last is not None and ref["first"].encode() <= last):
            raise ValueError(f"{where}[{i}].first: must be a path after the previous {what}'s")
        count = ref.get("count")
        if not isinstance(count, int) or isinstance(count, bool) or count < 1:
            raise ValueError(f"{where}[{i}].count: must be a positive integer")
        last = ref["first"].encode()


_HEX = re.compile(r"[0-9a-f]{8,128}\Z")


def _apply(entries: list[bytes], sums: list[bytes], changes: dict[bytes, tuple[bytes, bytes] | None]) -> None:
    """Apply `changes` (key -> lines, or None to remove) to one chunk's lines, in place."""
    for key, lines in changes.items():
        i = bisect.bisect_left(sums, key, key=_sum_key)
        present = i < len(sums) and _sum_key(sums[i]) == key
        if lines is None:
            if present:
                del entries[i], sums[i]
        elif present:
            entries[i], sums[i] = lines
        else:
            entries.insert(i, lines[0])
            sums.insert(i, lines[1])
