"""A build's index as publish sees it: a root naming shards, each shard a run of file entries.

Publish compares two indexes shard by shard: a shard id present in both means
the same entries (shards are content-addressed), so only the shards that differ
are read. A format-1 tree (one manifest.json listing every file) is one shard
whose id is the hash of the whole manifest.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

from bootgen.errors import Location, Problem, PublishError
from bootgen.plan import FORMAT, shard_name
from bootgen.publish.manifest import (MANIFEST, SUMS, FileEntry, index_format, parse_manifest, parse_root,
                                      parse_shard, read_root_bytes, verify_sums)

ShardReader = Callable[[str], "bytes | None"]  # shard id -> its bytes, None if not found


@dataclass
class Index:
    """The root of one build and a way to read the entries of each shard it names."""

    build_id: str
    root: bytes  # the root manifest.json, exact bytes
    file_count: int
    shard_ids: tuple[str, ...]  # in path order
    private: bool  # the full listing of a tree whose public one leaves out secret-bearing files
    directory: Path | None  # local listings: where the index files are
    load: Callable[[str], tuple[FileEntry, ...]]  # shard id -> its entries, checked
    shard_paths: Callable[[str], tuple[str, ...]]  # shard id -> its index files, relative paths
    _cache: dict[str, tuple[FileEntry, ...]] = field(default_factory=dict, repr=False)

    # -- building ------------------------------------------------------------------
    @classmethod
    def from_root(cls, raw: bytes, origin: str, read_shard: ShardReader, *, private: bool = False,
                  directory: Path | None = None) -> "Index":
        """Parse a root (index format 2, or a whole format-1 manifest); shards are read through
        `read_shard` only when their entries are asked for, and checked against their ids."""
        if index_format(raw) != FORMAT:
            return cls._format1(raw, origin, private, directory)
        root = parse_root(raw, origin)
        refs = {shard.id: shard for shard in root.shards}

        def load(shard_id: str) -> tuple[FileEntry, ...]:
            where = str(directory / shard_name(shard_id)) if directory else f"{origin}: {shard_name(shard_id)}"
            body = read_shard(shard_id)
            if body is None:
                raise PublishError(Problem(Location(where), "manifest.json names this shard but it is missing",
                                           hint="rebuild the tree"))
            return parse_shard(body, refs[shard_id], where)

        return cls(root.build_id, raw, root.file_count, tuple(refs), private, directory, load,
                   lambda shard_id: (shard_name(shard_id), shard_name(shard_id, ".sha256")))

    @classmethod
    def _format1(cls, raw: bytes, origin: str, private: bool, directory: Path | None) -> "Index":
        """A format-1 manifest is one shard named by its hash (with SHA256SUMS as its index file)."""
        manifest = parse_manifest(raw, origin)
        return cls(manifest.build_id, raw, len(manifest.files), (hashlib.sha256(raw).hexdigest(),), private,
                   directory, lambda _id: manifest.files, lambda _id: () if private else (SUMS,))

    @classmethod
    def local(cls, directory: Path, *, private: bool = False) -> "Index":
        """The listing of a tree (or of its private listing directory) on this machine: only its root
        is read until shards are asked for."""
        root = read_root_bytes(directory)
        return cls.from_root(root, str(directory / MANIFEST), lambda shard_id: _read(directory / shard_name(shard_id)),
                             private=private, directory=directory)

    # -- reading -------------------------------------------------------------------
    def entries(self, shard_id: str) -> tuple[FileEntry, ...]:
        if shard_id not in self._cache:
            self._cache[shard_id] = self.load(shard_id)
        return self._cache[shard_id]

    def files(self) -> Iterator[FileEntry]:
        for shard_id in self.shard_ids:
            yield from self.entries(shard_id)

    def index_paths(self) -> set[str]:
        """Every index file of this build, the root included."""
        return {p for s in self.shard_ids for p in self.shard_paths(s)} | {MANIFEST}

    def all_paths(self) -> set[str]:
        return {f.path for f in self.files()} | self.index_paths()

    # -- comparing -----------------------------------------------------------------
    def diff(self, base: "Index | None") -> "Diff":
        """What differs from `base` (None: a destination with nothing on it)."""
        base_ids = set(base.shard_ids) if base else set()
        own_ids = set(self.shard_ids)
        added = [s for s in self.shard_ids if s not in base_ids]
        old = {e.path: e for s in (base.shard_ids if base else ()) if s not in own_ids for e in base.entries(s)}
        changed, same = [], []
        for shard_id in added:
            for entry in self.entries(shard_id):
                before = old.get(entry.path)
                (same if before is not None and before.sha256 == entry.sha256 else changed).append(entry)
        kept = [s for s in self.shard_ids if s in base_ids]
        return Diff(self, added, kept, changed, same)

    def dropped_entry_points(self, old: "Index") -> set[str]:
        """Entry points `old` lists that this build does not."""
        own_ids = set(self.shard_ids)
        candidates = {e.path for s in old.shard_ids if s not in own_ids for e in old.entries(s) if not e.immutable}
        if not candidates:
            return set()
        old_ids = set(old.shard_ids)
        listed = {e.path for s in self.shard_ids if s not in old_ids for e in self.entries(s)}
        return candidates - listed

    def objects_not_in(self, other: "Index") -> list[FileEntry]:
        """Content-addressed objects of this build that `other` does not list."""
        other_ids = set(other.shard_ids)
        mine = [e for s in self.shard_ids if s not in other_ids for e in self.entries(s) if e.immutable]
        if not mine:
            return []
        theirs = {e.path for s in other.shard_ids if s not in set(self.shard_ids) for e in other.entries(s)}
        return [e for e in mine if e.path not in theirs]

    def new_index_files(self, base: "Index | None", exclude: tuple[str, ...] = ()) -> list[tuple[str, Path]]:
        """Index files of the shards `base` does not have (and not in `exclude`), with their local source,
        each shard checked first (present, hashing to its id, its SHA256SUMS lines matching its entries)."""
        base_ids = set(base.shard_ids) if base else set()
        assert self.directory is not None, "only a local listing has index files to send"
        shards = [s for s in self.shard_ids if s not in base_ids and s not in exclude]
        problems = [p for s in shards for p in self._check_shard(s)]
        if problems:
            raise PublishError(problems)
        return [(path, self.directory / path) for s in shards for path in self.shard_paths(s)]

    def _check_shard(self, shard_id: str) -> list[Problem]:
        try:
            entries = self.entries(shard_id)
        except PublishError as exc:
            return exc.problems
        sums = (p for p in self.shard_paths(shard_id) if p.endswith(".sha256") or p == SUMS)
        found = (verify_sums(self.directory, p, entries) for p in sums)
        return [p for p in found if p is not None]


@dataclass
class Diff:
    listing: Index
    added: list[str]  # shard ids new to the destination
    kept: list[str]  # shard ids it already has
    changed: list[FileEntry]  # entries the destination lacks or has with other content
    same_in_added: list[FileEntry]  # entries of new shards the destination has unchanged

    def unchanged(self) -> list[FileEntry]:
        return [e for s in self.kept for e in self.listing.entries(s)] + self.same_in_added


def _read(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except OSError:
        return None


def shard_finder(directories: list[Path]) -> ShardReader:
    """Read shards from the index directories of trees on this machine (kept trees, private
    listings): content-addressed, so a file with the right name and hash is the shard."""
    def find(shard_id: str) -> bytes | None:
        for directory in directories:
            raw = _read(directory / shard_name(shard_id))
            if raw is not None and hashlib.sha256(raw).hexdigest() == shard_id:
                return raw
        return None
    return find

