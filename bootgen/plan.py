"""The build plan: every file the tree will hold, before anything is written.

Render steps add `Artifact`s to a `Plan`; the plan refuses two artifacts that
claim one path (naming both producers), and yields the manifest that publish
and the writer rely on.
"""
from __future__ import annotations

import bisect
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from . import __version__
from .errors import Location, Problem, RenderError

MANIFEST = "manifest.json"
CHECKSUMS = "SHA256SUMS"


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

    def listing_lines(self) -> tuple[str, str]:
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
                Location(artifact.path), f"two outputs claim this path: {_producer(existing)} and {_producer(artifact)}",
                hint="file names come from MACs, addresses and node names; make them unique"))

    def check(self) -> None:
        if self.problems:
            raise RenderError(self.problems)

    def listing(self) -> "Listing":
        return Listing.of(self.artifacts.values())


def _producer(artifact: Artifact) -> str:
    return f"{artifact.target} for node '{artifact.node}'" if artifact.node else artifact.target


_ENTRY_ENCODER = json.JSONEncoder(sort_keys=True)  # one encoder: json.dumps builds a new one per call
_FILES_OPEN = '  "files": [\n    '
_ENTRY_SEPARATOR = ",\n    "
_SUM_PATH = 66  # a SHA256SUMS line is 64 hex digits, two spaces, the path and a newline


def listing_lines(path: str, sha256: str, size: int, immutable: bool, node: str | None,
                  target: str) -> tuple[str, str]:
    """A file's manifest entry (JSON, sorted keys) and its SHA256SUMS line."""
    entry = _ENTRY_ENCODER.encode({"path": path, "size": size, "sha256": sha256, "immutable": immutable,
                                   "node": node, "target": target})
    return entry, f"{sha256}  {path}\n"


def _sum_key(line: str) -> str:
    return line[_SUM_PATH:-1]


class Listing:
    """Every file of a tree as text, sorted by path: manifest entries and SHA256SUMS lines.

    Index i of both lists describes the same file. A build that changes a few
    nodes patches a few lines of the live tree's listing (found by bisection)
    instead of encoding 100,000 entries again; manifest.json and SHA256SUMS
    are then joins of these lines."""

    __slots__ = ("entries", "sums", "_checksums")

    def __init__(self, entries: list[str], sums: list[str]):
        self.entries = entries
        self.sums = sums
        self._checksums: bytes | None = None

    @classmethod
    def of(cls, artifacts) -> "Listing":
        lines = [a.listing_lines() for a in sorted(artifacts, key=lambda a: a.path)]
        return cls([entry for entry, _ in lines], [line for _, line in lines])

    @classmethod
    def of_lines(cls, lines: dict[str, tuple[str, str]]) -> "Listing":
        """From path -> (manifest entry, SHA256SUMS line)."""
        ordered = sorted(lines)
        return cls([lines[p][0] for p in ordered], [lines[p][1] for p in ordered])

    @classmethod
    def read(cls, tree: Path) -> "Listing | None":
        """The listing of a tree bootgen wrote (None if its files are not in that shape)."""
        try:
            manifest = (tree / MANIFEST).read_text()
            sums = (tree / CHECKSUMS).read_text().splitlines(keepends=True)
        except (OSError, UnicodeDecodeError):
            return None
        start, end = manifest.find(_FILES_OPEN), manifest.rfind("\n  ]\n}")
        entries = manifest[start + len(_FILES_OPEN):end].split(_ENTRY_SEPARATOR) if start >= 0 and end > start else []
        if len(entries) != len(sums):
            return None
        return cls(entries, sums)

    def __len__(self) -> int:
        return len(self.sums)

    def find(self, path: str) -> int | None:
        """Index of `path`, or None."""
        i = bisect.bisect_left(self.sums, path, key=_sum_key)
        return i if i < len(self.sums) and _sum_key(self.sums[i]) == path else None

    def sha256(self, path: str) -> str | None:
        i = self.find(path)
        return None if i is None else self.sums[i][:64]

    def node(self, path: str) -> str | None:
        """The node that owns `path` (None for shared files or a path not listed)."""
        i = self.find(path)
        return None if i is None else json.loads(self.entries[i])["node"]

    def paths(self) -> list[str]:
        return [line[_SUM_PATH:-1] for line in self.sums]

    def patched(self, upserts: dict[str, tuple[str, str]], removals) -> "Listing":
        """A new listing with `upserts` (path -> (entry, sum line)) set and `removals` gone."""
        if len(upserts) + len(removals) > max(64, len(self.sums) // 64):  # many changes: one merge
            merged = {path: pair for path, pair in zip(self.paths(), zip(self.entries, self.sums))}
            for path in removals:
                merged.pop(path, None)
            merged.update(upserts)
            ordered = sorted(merged)
            return Listing([merged[p][0] for p in ordered], [merged[p][1] for p in ordered])
        entries, sums = self.entries.copy(), self.sums.copy()
        for path in removals:
            i = bisect.bisect_left(sums, path, key=_sum_key)
            if i < len(sums) and _sum_key(sums[i]) == path:
                del entries[i], sums[i]
        for path, (entry, line) in upserts.items():
            i = bisect.bisect_left(sums, path, key=_sum_key)
            if i < len(sums) and _sum_key(sums[i]) == path:
                entries[i], sums[i] = entry, line
            else:
                entries.insert(i, entry)
                sums.insert(i, line)
        return Listing(entries, sums)

    def checksums_bytes(self) -> bytes:
        if self._checksums is None:
            self._checksums = "".join(self.sums).encode()
        return self._checksums

    def build_id(self) -> str:
        """A tree's id is the digest of its SHA256SUMS: same files and bytes, same id."""
        return hashlib.sha256(self.checksums_bytes()).hexdigest()

    def manifest_bytes(self, build_id: str) -> bytes:
        """manifest.json: sorted keys, one file per line (json's indent= is 20x slower on 80,000 files)."""
        head = f'{{\n  "bootgen_version": {json.dumps(__version__)},\n  "build_id": {json.dumps(build_id)},\n'
        if not self.entries:
            return (head + '  "files": []\n}\n').encode()
        return (head + _FILES_OPEN + _ENTRY_SEPARATOR.join(self.entries) + "\n  ]\n}\n").encode()
