"""Digests of files on disk and the cache's digest index.

Images are large (an Ubuntu ISO is 2 GB), so a digest is computed once and
remembered by the file's identity on disk (device, inode, size, mtime_ns and
ctime_ns). A rebuild with unchanged images then reads no image bytes at all:
stat() is enough to know the digest. The ctime is what makes this safe: a
process can set a file's mtime back (`touch -r`) but not its ctime, so a
same-size rewrite of a cached file always changes its identity and is read
again.

Several processes may use one cache: the index is merged into the file on
disk under a lock when saved, so one process never drops what another
recorded.
"""
from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import os
import stat
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

CHUNK = 1 << 20  # 1 MiB: large enough that per-call overhead vanishes next to hashing
INDEX_NAME = "index.json"
_INDEX_VERSION = 2  # 2: identities include ctime; entries name their file


@dataclass(frozen=True)
class Digests:
    """Digests of one file; sha512 is None when it was not asked for."""

    sha256: str
    size: int
    sha512: str | None = None


class StreamHasher:
    """Feeds every chunk to sha256 (and sha512 when wanted) in one pass."""

    def __init__(self, sha512: bool = True):
        self._sha256 = hashlib.sha256()
        self._sha512 = hashlib.sha512() if sha512 else None
        self.count = 0

    def update(self, chunk: bytes | memoryview) -> None:
        self._sha256.update(chunk)
        if self._sha512 is not None:
            self._sha512.update(chunk)
        self.count += len(chunk)

    def result(self) -> Digests:
        sha512 = self._sha512.hexdigest() if self._sha512 is not None else None
        return Digests(self._sha256.hexdigest(), self.count, sha512)


class ChangedWhileReading(OSError):
    """A file's identity changed while it was being digested: someone wrote to it."""


def hash_file(path: Path, *, sha512: bool = False, hasher: StreamHasher | None = None) -> Digests:
    """Digest a file with one sequential read into a reused buffer.

    sha512 is opt-in: it runs at about a third of sha256's speed, so it is
    only computed when a sha512 pin must be checked.
    """
    hasher = hasher or StreamHasher(sha512=sha512)
    feed_file(path, hasher)
    return hasher.result()


def hash_identified(path: Path, *, sha512: bool = False) -> tuple[Digests, str]:
    """Digests of `path` and the identity they belong to.

    The file is stat()ed through the open descriptor before and after the
    read; if it changed in between (a write during the read), the digest
    belongs to no state of the file and ChangedWhileReading is raised."""
    hasher = StreamHasher(sha512=sha512)
    fd = _open_regular(path)
    with open(fd, "rb", buffering=0) as handle:
        before = identity_of(os.fstat(fd))
        _feed(handle, hasher)
        after = identity_of(os.fstat(fd))
    if before != after or hasher.count != int(before.split(":")[2]):
        raise ChangedWhileReading(errno.EAGAIN, "changed while it was being read", str(path))
    return hasher.result(), after


def feed_file(path: Path, hasher: StreamHasher) -> None:
    """Stream a file's bytes into `hasher`."""
    fd = _open_regular(path)
    with open(fd, "rb", buffering=0) as handle:
        _feed(handle, hasher)


def _open_regular(path: Path) -> int:
    # O_NONBLOCK: opening a FIFO put where a file was expected returns at once (and is refused
    # below) instead of blocking the build; regular files ignore the flag.
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise OSError(errno.EINVAL, "not a regular file", str(path))
    return fd


def _feed(handle, hasher: StreamHasher) -> None:
    buffer = bytearray(CHUNK)
    view = memoryview(buffer)
    while True:
        n = handle.readinto(buffer)
        if not n:
            return
        hasher.update(view[:n])


def identity_of(st: os.stat_result) -> str:
    """What must stay equal for a remembered digest to still hold (ctime: see the module doc)."""
    return f"{st.st_dev}:{st.st_ino}:{st.st_size}:{st.st_mtime_ns}:{st.st_ctime_ns}"


def file_identity(path: Path) -> str:
    return identity_of(os.stat(path))


@contextmanager
def locked(lock_path: Path, *, shared: bool = False) -> Iterator[None]:
    """Hold an flock(2) on `lock_path` (created if needed) for the duration."""
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_SH if shared else fcntl.LOCK_EX)
        yield


class DigestIndex:
    """A small JSON file in the cache: file identity -> digests, plus trust records.

    `verified` maps a cache key (one image as declared) to the sha256 and the
    verification policy it passed, so an unchanged image is not verified
    again. `derived` maps a file made from a verified one (a kernel taken out
    of an ISO) to the identity it had when it was made.
    """

    def __init__(self, cache_dir: Path):
        self.path = cache_dir / INDEX_NAME
        self.files: dict[str, dict] = {}
        self.verified: dict[str, dict] = {}
        self.derived: dict[str, dict] = {}
        self._changed: dict[str, dict[str, dict | None]] = {"files": {}, "verified": {}, "derived": {}}
        self.files, self.verified, self.derived = self._read()

    def _read(self) -> tuple[dict, dict, dict]:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}, {}, {}  # a missing or damaged index only costs a re-hash
        if not isinstance(data, dict) or data.get("version") != _INDEX_VERSION:
            return {}, {}, {}

        def table(name: str) -> dict:
            value = data.get(name)
            return {k: v for k, v in value.items() if isinstance(v, dict)} if isinstance(value, dict) else {}
        return table("files"), table("verified"), table("derived")

    def save(self) -> None:
        """Merge this process's changes into the index on disk, under its lock, atomically.

        Entries whose file no longer has the identity they were recorded
        for are dropped, so the index does not grow with every download."""
        if not any(self._changed.values()):
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with locked(self.path.with_name(INDEX_NAME + ".lock")):
            tables = dict(zip(("files", "verified", "derived"), self._read()))
            for name, changes in self._changed.items():
                for key, value in changes.items():
                    if value is None:
                        tables[name].pop(key, None)
                    else:
                        tables[name][key] = value
            tables["files"] = {k: v for k, v in tables["files"].items() if _still(k, v.get("path"))}
            tables["derived"] = {k: v for k, v in tables["derived"].items() if _still(v.get("identity"), v.get("path"))}
            tmp = self.path.with_name(f"{INDEX_NAME}.{os.getpid()}.tmp")
            data = {"version": _INDEX_VERSION, **tables}
            tmp.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n", encoding="utf-8")
            os.replace(tmp, self.path)
        self._changed = {"files": {}, "verified": {}, "derived": {}}

    def _set(self, table: str, key: str, value: dict | None) -> None:
        target = getattr(self, table)
        if value is None:
            target.pop(key, None)
        else:
            target[key] = value
        self._changed[table][key] = value

    def remember(self, path: Path, digests: Digests, identity: str | None = None) -> None:
        """Record `digests` for `path` as it is now (or as it was at `identity`)."""
        entry = {"sha256": digests.sha256, "size": digests.size, "path": str(path)}
        if digests.sha512:
            entry["sha512"] = digests.sha512
        self._set("files", identity or file_identity(path), entry)

    def digests(self, path: Path, *, sha512: bool = False) -> Digests:
        """Digests of `path`, from the index when the file is unchanged, else by reading it."""
        entry = self.files.get(file_identity(path))
        if entry and (entry.get("sha512") or not sha512):
            return Digests(entry["sha256"], entry["size"], entry.get("sha512"))
        digests, identity = hash_identified(path, sha512=sha512)
        self.remember(path, digests, identity)
        return digests

    def set_verified(self, key: str, record: dict) -> None:
        self._set("verified", key, record)

    def forget_verified(self, key: str) -> None:
        self._set("verified", key, None)

    def derived_ok(self, key: str, path: Path) -> bool:
        """Whether `path` is still the file recorded as made for `key`."""
        record = self.derived.get(key)
        try:
            return record is not None and record.get("identity") == file_identity(path)
        except OSError:
            return False

    def set_derived(self, key: str, path: Path, identity: str) -> None:
        self._set("derived", key, {"identity": identity, "path": str(path)})


def _still(identity: str | None, path: str | None) -> bool:
    """Whether the file recorded at `path` still has `identity` (entries without a path are dropped)."""
    try:
        return path is not None and file_identity(Path(path)) == identity
    except OSError:
        return False
