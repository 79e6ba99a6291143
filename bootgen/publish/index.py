"""A build's index as publish sees it: a root naming pages, each page naming shards, each
shard a run of file entries.

Publish compares two indexes page by page, then shard by shard: a page id present
in both means the same shards, a shard id present in both the same entries (all
are content-addressed), so only the pages that differ are read, and only the
shards that differ within them. A one-node change reads one page of the
destination's, whatever the fleet's size. A format-1 tree (one manifest.json
listing every file) is one page of one shard whose id is the hash of the whole
manifest.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

from bootgen.errors import Location, Problem, PublishError
from bootgen.plan import PAGE_SUFFIX, page_name, shard_name
from bootgen.publish.manifest import (MANIFEST, SUMS, FileEntry, PageRef, ShardRef, is_format1, parse_manifest,
                                      parse_page, parse_root, parse_shard, read_root_bytes, verify_sums)

ShardReader = Callable[[str], "bytes | None"]  # name -> the bytes of index/<name>.json, None if not found
# (a shard's name is its id; a page's is its id and PAGE_SUFFIX)


@dataclass
class Index:
    """The root of one build and a way to read its pages, and the entries of each shard they name."""

    build_id: str
    root: bytes  # the root manifest.json, exact bytes
    file_count: int
    pages: tuple[PageRef, ...]  # in path order
    private: bool  # the full listing of a tree whose public one leaves out secret-bearing files
    directory: Path | None  # local listings: where the index files are
    load_page: Callable[[PageRef], tuple[ShardRef, ...]]  # a page's shards, checked
    load: Callable[[ShardRef], tuple[FileEntry, ...]]  # a shard's entries, checked
    shard_paths: Callable[[str], tuple[str, ...]]  # shard id -> its index files, relative paths
    page_paths: Callable[[str], tuple[str, ...]]  # page id -> its index file (none for format 1)
    loose_paths: tuple[str, ...] = ()  # index files not named by their content (format 1's SHA256SUMS)
    _pages: dict[str, tuple[ShardRef, ...]] = field(default_factory=dict, repr=False)
    _refs: dict[str, ShardRef] = field(default_factory=dict, repr=False)
    _cache: dict[str, tuple[FileEntry, ...]] = field(default_factory=dict, repr=False)

    # -- building ------------------------------------------------------------------
    @classmethod
    def from_root(cls, raw: bytes, origin: str, read: ShardReader, *, private: bool = False,
                  directory: Path | None = None) -> "Index":
        """Parse a root (index format 3, or a whole format-1 manifest); pages and shards are read
        through `read` only when asked for, and checked against their ids."""
        if is_format1(raw):
            return cls._format1(raw, origin, private, directory)
        root = parse_root(raw, origin)

        def fetch(name: str, path: str) -> tuple[bytes, str]:
            where = str(directory / path) if directory else f"{origin}: {path}"
            body = read(name)
            if body is None:
                what = "page" if name.endswith(PAGE_SUFFIX) else "shard"
                raise PublishError(Problem(Location(where), f"the index names this {what} but it is missing",
                                           hint="rebuild the tree"))
            return body, where

        def load_page(page: PageRef) -> tuple[ShardRef, ...]:
            return parse_page(*fetch(page.id + PAGE_SUFFIX, page_name(page.id)), page)

        def load(shard: ShardRef) -> tuple[FileEntry, ...]:
            body, where = fetch(shard.id, shard_name(shard.id))
            return parse_shard(body, shard, where)

        return cls(root.build_id, raw, root.file_count, root.pages, private, directory, load_page, load,
                   lambda shard_id: (shard_name(shard_id), shard_name(shard_id, ".sha256")),
                   lambda page_id: (page_name(page_id),))

    @classmethod
    def _format1(cls, raw: bytes, origin: str, private: bool, directory: Path | None) -> "Index":
        """A format-1 manifest is one page of one shard named by its hash (with SHA256SUMS as its
        index file)."""
        manifest = parse_manifest(raw, origin)
        whole = hashlib.sha256(raw).hexdigest()
        first = manifest.files[0].path if manifest.files else ""
        shard = ShardRef(whole, first, len(manifest.files))
        loose = () if private else (SUMS,)
        return cls(manifest.build_id, raw, len(manifest.files), (PageRef(whole, first, len(manifest.files), 1),),
                   private, directory, lambda _page: (shard,), lambda _shard: manifest.files,
                   lambda _id: loose, lambda _id: (), loose)

    @classmethod
    def local(cls, directory: Path, *, private: bool = False) -> "Index":
        """The listing of a tree (or of its private listing directory) on this machine: only its root
        is read until pages and shards are asked for."""
        root = read_root_bytes(directory)
        return cls.from_root(root, str(directory / MANIFEST), lambda name: _read(directory / shard_name(name)),
                             private=private, directory=directory)

    # -- reading -------------------------------------------------------------------
    def page_shards(self, page: PageRef) -> tuple[ShardRef, ...]:
        if page.id not in self._pages:
            shards = self.load_page(page)
            self._refs.update((shard.id, shard) for shard in shards)
            self._pages[page.id] = shards
        return self._pages[page.id]

    @property
    def shard_ids(self) -> list[str]:
        """Every shard's id, in path order (reads every page)."""
        return [shard.id for page in self.pages for shard in self.page_shards(page)]

    def entries(self, shard_id: str) -> tuple[FileEntry, ...]:
        """The entries of a shard of a page read already."""
        if shard_id not in self._cache:
            self._cache[shard_id] = self.load(self._refs[shard_id])
        return self._cache[shard_id]

    def files(self) -> Iterator[FileEntry]:
        for shard_id in self.shard_ids:
            yield from self.entries(shard_id)

    def index_paths(self) -> set[str]:
        """Every index file of this build, the root included."""
        return {p for s in self.shard_ids for p in self.shard_paths(s)} | \
            {p for page in self.pages for p in self.page_paths(page.id)} | {MANIFEST}

    def all_paths(self) -> set[str]:
        return {f.path for f in self.files()} | self.index_paths()

    # -- comparing -----------------------------------------------------------------
    def unshared(self, other: "Index | None") -> list[str]:
        """Ids of the shards on this build's pages that `other` does not have (None: has no pages),
        in path order. The shards of a page both have are the same; a shard on the other pages
        is on no shared page of either (it would be listed twice), so comparing these with the
        other's unshared shards compares the whole indexes."""
        theirs = {page.id for page in other.pages} if other is not None else set()
        return [shard.id for page in self.pages if page.id not in theirs for shard in self.page_shards(page)]

    def diff(self, base: "Index | None") -> "Diff":
        """What differs from `base` (None: a destination with nothing on it)."""
        mine, theirs = self.unshared(base), base.unshared(self) if base else []
        base_ids, own_ids = set(theirs), set(mine)
        added = [s for s in mine if s not in base_ids]
        old = {e.path: e for s in theirs if s not in own_ids for e in base.entries(s)}
        changed, same = [], []
        for shard_id in added:
            for entry in self.entries(shard_id):
                before = old.get(entry.path)
                (same if before is not None and before.sha256 == entry.sha256 else changed).append(entry)
        fresh = set(added)
        kept = [s for s in self.shard_ids if s not in fresh]
        return Diff(self, added, kept, changed, same)

    def dropped_entry_points(self, old: "Index") -> set[str]:
        """Entry points `old` lists that this build does not."""
        mine, theirs = self.unshared(old), old.unshared(self)
        own_ids = set(mine)
        candidates = {e.path for s in theirs if s not in own_ids for e in old.entries(s) if not e.immutable}
        if not candidates:
            return set()
        old_ids = set(theirs)
        listed = {e.path for s in mine if s not in old_ids for e in self.entries(s)}
        return candidates - listed

    def objects_not_in(self, other: "Index") -> list[FileEntry]:
        """Content-addressed objects of this build that `other` does not list."""
        mine_ids, other_ids = self.unshared(other), other.unshared(self)
        theirs_set, mine_set = set(other_ids), set(mine_ids)
        mine = [e for s in mine_ids if s not in theirs_set for e in self.entries(s) if e.immutable]
        if not mine:
            return []
        theirs = {e.path for s in other_ids if s not in mine_set for e in other.entries(s)}
        return [e for e in mine if e.path not in theirs]

    def new_index_files(self, base: "Index | None", exclude: set[str] = frozenset()) -> list[tuple[str, Path]]:
        """Index files of the shards and pages `base` does not have (and not in `exclude`), with their
        local source, shards first (a page names them), each shard checked first (present, hashing
        to its id, its SHA256SUMS lines matching its entries)."""
        assert self.directory is not None, "only a local listing has index files to send"
        try:
            base_shards = set(base.unshared(self)) if base else set()
        except PublishError:  # a page of `base` is missing or damaged: send what it would have spared
            base, base_shards = None, set()
        base_pages = {page.id for page in base.pages} if base else set()
        shards = [s for s in self.unshared(base) if s not in base_shards]
        problems = [p for s in shards for p in self._check_shard(s)]
        if problems:
            raise PublishError(problems)
        paths = [path for s in shards for path in self.shard_paths(s)]
        paths += [path for page in self.pages if page.id not in base_pages for path in self.page_paths(page.id)]
        return [(path, self.directory / path) for path in paths if path not in exclude]

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
    """Read shards and pages from the index directories of trees on this machine (kept trees,
    private listings): content-addressed, so a file with the right name and hash is the one."""
    def find(name: str) -> bytes | None:
        for directory in directories:
            raw = _read(directory / shard_name(name))
            if raw is not None and hashlib.sha256(raw).hexdigest() == name.removesuffix(PAGE_SUFFIX):
                return raw
        return None
    return find

