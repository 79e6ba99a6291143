"""Streaming digests and the cache's digest index.

Images are large (an Ubuntu ISO is 2 GB), so digests are computed while the
bytes stream past once, and remembered by the file's identity on disk
(device, inode, size, mtime_ns). A rebuild with unchanged images then reads
no image bytes at all: stat() is enough to know the digest.
"""
from __future__ import annotations

import errno
import hashlib
import json
import os
import stat
from dataclasses import dataclass
from pathlib import Path

CHUNK = 1 << 20  # 1 MiB: large enough that per-call overhead vanishes next to hashing
INDEX_NAME = "index.json"
_INDEX_VERSION = 1


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


def hash_file(path: Path, *, sha512: bool = False, hasher: StreamHasher | None = None) -> Digests:
    """Digest a file with one sequential read into a reused buffer.

    sha512 is opt-in: it runs at about a third of sha256's speed, so it is
    only computed when a sha512 pin must be checked.
    """
    hasher = hasher or StreamHasher(sha512=sha512)
    feed_file(path, hasher)
    return hasher.result()


def feed_file(path: Path, hasher: StreamHasher) -> None:
    """Stream a file's bytes into `hasher` (used to resume a partial download too)."""
    buffer = bytearray(CHUNK)
    view = memoryview(buffer)
    # O_NONBLOCK: opening a FIFO put where a file was expected returns at once (and is refused
    # below) instead of blocking the build; regular files ignore the flag.
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    with open(fd, "rb", buffering=0) as handle:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(errno.EINVAL, "not a regular file", str(path))
        while True:
            n = handle.readinto(buffer)
            if not n:
                return
            hasher.update(view[:n])


def file_identity(path: Path) -> str:
    """What must stay equal for a remembered digest to still hold."""
    st = os.stat(path)
    return f"{st.st_dev}:{st.st_ino}:{st.st_size}:{st.st_mtime_ns}"


class DigestIndex:
    """A small JSON file in the cache: file identity -> digests, plus verified records.

    `verified` maps a cache key (one image as declared) to the sha256 and the
    verification policy it passed, so an unchanged image is not verified again.
    """

    def __init__(self, cache_dir: Path):
        self.path = cache_dir / INDEX_NAME
        self.files: dict[str, dict] = {}
        self.verified: dict[str, dict] = {}
        self._load()

    def _load(self) -> None:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return  # a missing or damaged index only costs a re-hash
        if isinstance(data, dict) and data.get("version") == _INDEX_VERSION:
            self.files = dict(data.get("files") or {})
            self.verified = dict(data.get("verified") or {})

    def save(self) -> None:
        """Write atomically so a crash never leaves a half-written index."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + ".tmp")
        data = {"version": _INDEX_VERSION, "files": self.files, "verified": self.verified}
        tmp.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n", encoding="utf-8")
        os.replace(tmp, self.path)

    def remember(self, path: Path, digests: Digests) -> None:
        entry = {"sha256": digests.sha256, "size": digests.size}
        if digests.sha512:
            entry["sha512"] = digests.sha512
        self.files[file_identity(path)] = entry

    def digests(self, path: Path, *, sha512: bool = False) -> Digests:
        """Digests of `path`, from the index when the file is unchanged, else by reading it."""
        identity = file_identity(path)
        entry = self.files.get(identity)
        if entry and (entry.get("sha512") or not sha512):
            return Digests(entry["sha256"], entry["size"], entry.get("sha512"))
        digests = hash_file(path, sha512=sha512)
        self.remember(path, digests)
        return digests

    def forget_verified(self, key: str) -> None:
        self.verified.pop(key, None)
