"""A map kept on disk in shards, so that a build reads and writes only the shards it touches.

The build state holds one record per node and one entry per claimed MAC,
address and host name: at 100,000 nodes, tens of megabytes that a one-node
edit would otherwise read and write whole. Keys are spread over SHARDS files
by a hash; each file is written under a new name and the table naming the
current file of every shard is replaced last (by the caller, in the state's
root), so a build killed midway leaves the previous table and its files.

`Overlay` is a build's view of a map: the map with this build's changes,
applied to it only once the build succeeded.
"""
from __future__ import annotations

import marshal
import os
import secrets
import zlib
from collections.abc import Iterator, Mapping
from pathlib import Path

SHARDS = 1024  # a thousand nodes per shard at a million nodes; a few at a hundred


def shard_of(key: str) -> int:
    return zlib.crc32(key.encode()) & (SHARDS - 1)


def claim_shard(key: tuple) -> int:
    """Claims are keyed (kind, value)."""
    return shard_of("\0".join(map(str, key)))


class ShardedMap(Mapping):
    """key -> value (plain values marshal can write), loaded a shard at a time from `directory`.

    `table[i]` names shard i's file (None: empty); `counts[i]` its number of keys."""

    def __init__(self, directory: Path | None = None, table: list | None = None, counts: list | None = None,
                 shard=shard_of, decode=None, encode=None):
        self._directory = directory
        self._table = list(table) if table is not None else [None] * SHARDS
        self._counts = list(counts) if counts is not None else [0] * SHARDS
        self._loaded: dict[int, dict] = {}
        self._dirty: set[int] = set()
        self._shard = shard
        self._decode, self._encode = decode, encode  # value <-> what marshal writes

    # -- reading
    def _load(self, index: int) -> dict:
        shard = self._loaded.get(index)
        if shard is None:
            name = self._table[index]
            if name is None or self._directory is None:
                shard = {}
            else:
                with open(self._directory / name, "rb") as handle:
                    shard = marshal.loads(handle.read())
                if self._decode is not None:
                    shard = {key: self._decode(value) for key, value in shard.items()}
            self._loaded[index] = shard
        return shard

    def __getitem__(self, key):
        return self._load(self._shard(key))[key]

    def get(self, key, default=None):
        return self._load(self._shard(key)).get(key, default)

    def __contains__(self, key) -> bool:
        return key in self._load(self._shard(key))

    def __len__(self) -> int:
        return sum(self._counts)

    def __iter__(self) -> Iterator:
        for index in range(SHARDS):
            if self._counts[index]:
                yield from self._load(index)

    def items(self):
        for index in range(SHARDS):
            if self._counts[index]:
                yield from self._load(index).items()

    def shard_items(self, index: int) -> dict:
        return self._load(index)

    # -- changing
    def put(self, key, value) -> None:
        index = self._shard(key)
        shard = self._load(index)
        if key not in shard:
            self._counts[index] += 1
        elif shard[key] == value:
            return  # unchanged: the shard need not be written again
        shard[key] = value
        self._dirty.add(index)

    def remove(self, key) -> None:
        index = self._shard(key)
        shard = self._load(index)
        if key in shard:
            del shard[key]
            self._counts[index] -= 1
            self._dirty.add(index)

    def apply(self, changes: Mapping) -> None:
        """Put each key's new value; None removes it."""
        for key, value in changes.items():
            if value is None:
                self.remove(key)
            else:
                self.put(key, value)

    def backed_by(self, directory: Path) -> bool:
        """Whether this map was read from (or last written to) `directory`."""
        return self._directory is not None and Path(directory) == Path(self._directory)

    @property
    def dirty(self) -> set[int]:
        return set(self._dirty)

    # -- saving
    def write(self, directory: Path, prefix: str) -> tuple[list, list, list[str] | None]:
        """Write every changed shard (all of them when `directory` is not the one this map was
        read from) under a new name; returns (table, counts, files no longer named, or None
        when any file of `directory` not named by the table may be stale). The caller replaces
        the table that names them, then removes the old files."""
        moved = self._directory is None or Path(directory) != Path(self._directory)
        todo = range(SHARDS) if moved else sorted(self._dirty)
        if moved:
            for index in todo:
                self._load(index)  # everything, before this map's files are left behind
        table, stale = list(self._table), []
        token = secrets.token_hex(4)
        for index in todo:
            shard = self._loaded.get(index, {})
            old = table[index]
            if shard:
                name = f"{prefix}{index:04d}.{token}"
                data = shard if self._encode is None else {key: self._encode(v) for key, v in shard.items()}
                temp = directory / f".{name}.tmp"
                temp.write_bytes(marshal.dumps(data, 2))
                os.replace(temp, directory / name)
                table[index] = name
            else:
                table[index] = None
            if old is not None and old != table[index]:
                stale.append(old)
        self._directory, self._table, self._dirty = Path(directory), table, set()
        return table, list(self._counts), None if moved else stale


class Overlay(Mapping):
    """A map with changes on top (None removes a key): what a build sees before it succeeds."""

    def __init__(self, base: Mapping, changes: dict | None = None):
        self.base = base
        self.changes = changes if changes is not None else {}
        self._added = self._removed = 0

    def set(self, key, value) -> None:
        self._count(key, value)
        self.changes[key] = value

    def _count(self, key, value) -> None:
        before = self.get(key) is not None
        after = value is not None
        self._added += after and not before
        self._removed += before and not after

    def __getitem__(self, key):
        if key in self.changes:
            value = self.changes[key]
            if value is None:
                raise KeyError(key)
            return value
        return self.base[key]

    def get(self, key, default=None):
        if key in self.changes:
            value = self.changes[key]
            return default if value is None else value
        return self.base.get(key, default)

    def __contains__(self, key) -> bool:
        return self.get(key) is not None

    def __len__(self) -> int:
        return len(self.base) + self._added - self._removed

    def __iter__(self) -> Iterator:
        for key in self.base:
            if key not in self.changes:
                yield key
        for key, value in self.changes.items():
            if value is not None:
                yield key
