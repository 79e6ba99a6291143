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
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from . import __version__
from .content import content_type
from .errors import Location, Problem, RenderError

MANIFEST = "manifest.json"
CHECKSUMS = "SHA256SUMS"
PRIVATE = "private"  # .bootgen/private/<build id>/: the full listing of a tree with secret-bearing files
SECRET_PATHS = "secret-paths.json"  # beside that listing: the paths left out of the public one
FENCE = "server/nginx-secrets.conf"  # the nginx rules for secret-bearing files (bootgen.render.fence)


def private_dir(tree: Path) -> Path:
    """Where the full listing of the tree `.bootgen/builds/<id>` is kept when its public one
    leaves out secret-bearing files: outside every served tree."""
    tree = tree.resolve()
    return tree.parent.parent / PRIVATE / tree.name


def listing_dir(tree: Path) -> Path:
    """The directory holding the full manifest.json and SHA256SUMS of a tree."""
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
        if existing is None:
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
_FILES_OPEN = b'  "files": [\n    '
_FILES_CLOSE = b"\n  ]\n}\n"
_SEPARATOR = b",\n    "  # between manifest entries
_SUM_PATH = 66  # a SHA256SUMS line is 64 hex digits, two spaces, the path and a newline
CHUNK = 512  # files per chunk of a listing


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


class _Chunk(NamedTuple):
    """A run of consecutive files: their manifest entries and SHA256SUMS lines, joined."""

    first: bytes  # its first path (UTF-8 sorts as the str paths do)
    entries: bytes
    sums: bytes
    count: int

    @classmethod
    def of(cls, entries: list[bytes], sums: list[bytes]) -> "_Chunk":
        return cls(_sum_key(sums[0]), _SEPARATOR.join(entries), b"".join(sums), len(sums))

    def lines(self) -> tuple[list[bytes], list[bytes]]:
        return self.entries.split(_SEPARATOR), self.sums.splitlines(keepends=True)


class Listing:
    """Every file of a tree, sorted by path: its manifest entries and SHA256SUMS lines.

    Kept as chunks of a few hundred files, each one bytes object: a build that
    changes a few nodes splits and rejoins only the chunks they fall in, and
    manifest.json and SHA256SUMS are joins of the chunks. Reading a tree's
    listing cuts its files at chunk boundaries without splitting every line."""

    def __init__(self, chunks: list[_Chunk]):
        self.chunks = chunks
        self._firsts = [chunk.first for chunk in chunks]
        self._build_id: str | None = None

    @classmethod
    def of_lines(cls, lines: dict[str, tuple[bytes, bytes]], *, consume: bool = False) -> "Listing":
        """From path -> (manifest entry, SHA256SUMS line); `consume` empties `lines` as it
        goes, so a million lines are not held twice."""
        ordered = sorted(lines)
        chunks = []
        for i in range(0, len(ordered), CHUNK):
            part = [lines.pop(p) if consume else lines[p] for p in ordered[i:i + CHUNK]]
            chunks.append(_Chunk.of([e for e, _ in part], [s for _, s in part]))
        return cls(chunks)

    @classmethod
    def merged(cls, runs: list["Listing"]) -> tuple["Listing", list[tuple[bytes, bytes]]]:
        """One listing from several (each sorted), and the entries of any path two of them hold.

        Each run's chunks are released as they are merged."""
        def lines(run: Listing):
            chunks, run.chunks = run.chunks, []
            chunks.reverse()
            while chunks:
                entries, sums = chunks.pop().lines()
                yield from zip(map(_sum_key, sums), entries, sums)

        chunks, entries, sums, clashes = [], [], [], []
        last = None
        for key, entry, line in heapq.merge(*map(lines, runs), key=operator.itemgetter(0)):
            if key == last:
                clashes.append((entries[-1] if entries else chunks[-1].entries.rsplit(_SEPARATOR, 1)[-1], entry))
                continue
            last = key
            entries.append(entry)
            sums.append(line)
            if len(sums) == CHUNK:
                chunks.append(_Chunk.of(entries, sums))
                entries, sums = [], []
        if sums:
            chunks.append(_Chunk.of(entries, sums))
        return cls(chunks), clashes

    @classmethod
    def read(cls, tree: Path) -> "Listing | None":
        """The listing of a tree bootgen wrote (None if its files are not in that shape)."""
        tree = listing_dir(tree)
        try:
            manifest = (tree / MANIFEST).read_bytes()
            sums = (tree / CHECKSUMS).read_bytes()
        except OSError:
            return None
        start, end = manifest.find(_FILES_OPEN), manifest.rfind(_FILES_CLOSE)
        if not sums:
            return cls([]) if start < 0 else None
        if start < 0 or end < start or not sums.endswith(b"\n"):
            return None
        if manifest.find(f'"build_id": "{hashlib.sha256(sums).hexdigest()}"'.encode(), 0, start) < 0:
            return None  # SHA256SUMS is not the one this manifest was written with
        return cls._cut(manifest, start + len(_FILES_OPEN), end, sums)

    @classmethod
    def _cut(cls, manifest: bytes, start: int, end: int, sums: bytes) -> "Listing | None":
        """Chunks from the files' bytes: cut SHA256SUMS every ~CHUNK lines, and the manifest
        where the entry of each chunk's first path begins."""
        step = max(1, len(sums) // max(1, sums.count(b"\n") // CHUNK))
        chunks, sum_at, entry_at = [], 0, start
        while sum_at < len(sums):
            sum_end = sums.find(b"\n", min(sum_at + step, len(sums) - 1)) + 1
            next_entry = end
            if sum_end < len(sums):
                path = sums[sum_end + _SUM_PATH:sums.find(b"\n", sum_end)]
                found = manifest.find(b'"path": ' + json.dumps(path.decode()).encode(), entry_at, end)
                next_entry = manifest.rfind(b"{", entry_at, found) if found > 0 else -1
                if next_entry < entry_at + len(_SEPARATOR):
                    return None
            entries = manifest[entry_at:next_entry - len(_SEPARATOR) if next_entry < end else end]
            part = sums[sum_at:sum_end]
            count = part.count(b"\n")
            if entries.count(b"\n") != count - 1:  # one newline per separator
                return None
            chunks.append(_Chunk(part[_SUM_PATH:part.find(b"\n")], entries, part, count))
            sum_at, entry_at = sum_end, next_entry
        return cls(chunks)

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
        chunks = list(self.chunks)
        for index in sorted(touched, reverse=True):  # replacing one chunk by several keeps earlier indexes
            chunks[index:index + 1] = _patch_chunk(chunks[index], touched[index])
        return Listing(chunks)

    def without(self, paths) -> "Listing":
        """This listing less `paths` (the public listing of a tree with secret-bearing files)."""
        return self.patched({}, paths) if paths else self

    def checksums_parts(self) -> list[bytes]:
        """SHA256SUMS, in pieces to write with one writev(2) (joining them costs more)."""
        return [chunk.sums for chunk in self.chunks]

    def checksums_bytes(self) -> bytes:
        return b"".join(self.checksums_parts())

    def build_id(self) -> str:
        """A tree's id is the digest of its SHA256SUMS: same files and bytes, same id."""
        if self._build_id is None:
            digest = hashlib.sha256()
            for chunk in self.chunks:
                digest.update(chunk.sums)
            self._build_id = digest.hexdigest()
        return self._build_id

    def manifest_parts(self, build_id: str) -> list[bytes]:
        """manifest.json in pieces: sorted keys, one file per line (json's indent= is 20x
        slower on 80,000 files)."""
        head = f'{{\n  "bootgen_version": {json.dumps(__version__)},\n  "build_id": {json.dumps(build_id)},\n'.encode()
        if not self.chunks:
            return [head, b'  "files": []\n}\n']
        parts = [head, _FILES_OPEN]
        for chunk in self.chunks:
            parts += (chunk.entries, _SEPARATOR)
        parts[-1] = _FILES_CLOSE
        return parts

    def manifest_bytes(self, build_id: str) -> bytes:
        return b"".join(self.manifest_parts(build_id))


def _patch_chunk(chunk: _Chunk, changes: dict[bytes, tuple[bytes, bytes] | None]) -> list[_Chunk]:
    """One chunk with `changes` applied (key -> lines, or None to remove): zero, one or more chunks."""
    entries, sums = chunk.lines()
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
    return [_Chunk.of(entries[i:i + CHUNK], sums[i:i + CHUNK]) for i in range(0, len(sums), CHUNK)]
