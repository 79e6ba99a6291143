"""Write: put a build on disk as a new tree and switch to it atomically.

The output path (`build/`) is a symlink to `.bootgen/builds/<build id>/`. A
build fills a staging directory beside the live tree, syncs it, renames it to
its build id and replaces the symlink with one rename, so a server pointed at
`build/` sees the old tree or the new one, never a mix and never nothing
(Cobbler's `sync` deletes the tree while rewriting it). Files unchanged since
the live tree are hard-linked from it instead of written again, once their
size matches the listing and their mtime shows no write since that tree was
finished (a file changed by hand in the live tree is made again instead of
carried into the next one); a build whose id is already live is discarded
without touching anything.

Files the build names by a source on disk (images from the cache or the
site, boot loaders) are never hard-linked: the tree gets its own copy
(a reflink where the file system has them), hashed on the way and compared
with the digest that was verified, so the served tree shares no inode with a
file outside `.bootgen/builds` and holds no byte that was not verified.

Several processes may fill one staging directory (the build renders nodes on
every core); only the process holding the lock commits it.
"""
from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import hashlib
import json
import os
import re
import secrets
import shutil
import stat
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from .errors import Location, OutputError, Problem
from .plan import (CHECKSUMS, FORMAT, INDEX, MANIFEST, PRIVATE, SECRET_PATHS, Artifact, IndexDamaged, Listing,
                   checksummed_paths, listing_dir, page_name, private_dir, root_document)

KEEP_BUILDS = 3  # releases: the live tree plus two to roll back to (and for requests still in flight)
# One more old tree is kept beyond the releases, for the next build to recycle as its staging
# tree: a build that fails after taking it then costs no rollback point.
KEPT_TREES = KEEP_BUILDS + 1
SPARE_PREFIX = ".spare-"  # .spare-<build id>.<n>: a hard-linked copy of that tree, for a later build to recycle
SPARE_MIN_FILES = 20_000  # smaller trees are linked anew in well under a second: no copy in the background
SPARE_WAIT = 300  # seconds wait_for_spare (benchmarks, tests) waits for the copies being made; builds never wait
SPARE_CHUNK = 1000  # links per thread a background copy makes between looks at whether a build is running
SPARE_SYNC_EVERY = 20_000  # links a background copy leaves unflushed at most (see _link_tree)
_SPARE_LOCK = ".sparework.lock"
DURABLE_PREFIX = ".durable-"  # builds/.durable-<build id>: that kept tree is wholly on disk
BUSY_NAME = "busy"  # <repository state>/busy: held exclusively by a build, probed by background copies
RELINK_THREADS = 4  # link(2) and mkdir(2) release the GIL; the kernel work overlaps


@dataclass(frozen=True)
class WriteResult:
    build_id: str
    tree: Path
    changed: bool  # False when the same build was already live
    written: int  # files written from bytes or copied (images, boot loaders)
    linked: int  # files hard-linked from the previous build
    index_bytes: int = 0  # bytes of index shards written (unchanged shards are linked)


class LiveTreeChanged(OutputError):
    """A file of the live tree is not what was written there: its tree cannot be reused."""


_HELD: dict[str, int] = {}  # build locks this process holds: lock path -> depth


@contextlib.contextmanager
def build_lock(state_dir: Path, waiting=None, *, wait: bool = True):
    """One build of a repository at a time, from reading the saved state to the switch.

    A second build waits (calling `waiting()` once, so the user knows why)
    instead of interleaving with the first: a build that read the state
    before another one switched would otherwise commit a tree made for a live
    tree that is gone. Re-entrant within a process. Yields True; with
    `wait=False`, yields False at once instead of waiting (for work that can
    as well be done later, such as watch saving its state)."""
    path = str((state_dir / "lock").absolute())
    if path in _HELD:
        _HELD[path] += 1
        try:
            yield True
        finally:
            _HELD[path] -= 1
        return
    try:
        state_dir.mkdir(parents=True, exist_ok=True)
        handle = open(path, "a")
    except OSError as exc:
        raise OutputError(Problem(Location(str(state_dir)), f"cannot use the build state directory: "
                                  f"{exc.strerror or exc}", hint="it must be a writable directory")) from None
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if not wait:
                yield False
                return
            if waiting is not None:
                waiting()
            fcntl.flock(handle, fcntl.LOCK_EX)
        _HELD[path] = 1
        try:
            with _busy(state_dir):
                yield True
        finally:
            del _HELD[path]


@contextlib.contextmanager
def _busy(state_dir: Path):
    """Tell background copies that a build is running: they pause until it ends (see
    _BuildWatch). A copy holds this lock shared only for the instant of a look, so taking it
    costs a build nothing; it is a lock of its own so that the look never makes the build
    lock look taken (which would print "waiting for another build")."""
    with open(state_dir / BUSY_NAME, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


PIN_PREFIX = ".pin-"  # .pin-<build id>: shared-locked by a publish reading that tree


@contextlib.contextmanager
def pinned_tree(tree: Path):
    """Keep the kept tree `tree` (a directory under `<state>/builds/`) in place while it is read,
    as `bootgen publish` does: builds neither recycle nor prune a pinned tree, they make a new
    staging tree instead (a build never waits for a publish). Yields False if the tree is gone."""
    pin = tree.parent / f"{PIN_PREFIX}{tree.name}"
    with open(pin, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_SH)  # waits only for a build renaming this very tree away
        yield tree.is_dir()


@contextlib.contextmanager
def _unpinned(tree: Path):
    """Yields whether `tree` may be moved away: no publish has it pinned. Held while it is moved,
    so a publish that pins it meanwhile finds it gone instead of reading it half recycled."""
    pin = tree.parent / f"{PIN_PREFIX}{tree.name}"
    try:
        handle = open(pin, "a")
    except OSError:
        yield True
        return
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        yield True
        pin.unlink(missing_ok=True)


def check_out_path(out: Path) -> None:
    if out.exists() and not out.is_symlink():
        raise OutputError(Problem(Location(str(out)), "exists and is not a bootgen output link",
                                  hint="bootgen never deletes a tree it did not make: move it away, then build again"))


def live_build_id(out: Path, state_dir: Path | None = None) -> str | None:
    """Id of the complete bootgen tree behind `out` (its directory is named by it), if any; with
    `state_dir`, only a tree of that state's own `builds/` counts (an output link pointed at
    another output's tree, e.g. `--out build-lab` without `--env lab`, is not this output's)."""
    if not out.is_symlink():
        return None
    tree = out.resolve()
    if state_dir is not None and tree.parent != (state_dir / "builds").resolve():
        return None
    return tree.name if (tree / MANIFEST).is_file() else None


class Staging:
    """A tree under construction in `.bootgen/builds/.partial-*`.

    Either empty at first, or a recycled old tree that differs from the live
    one in `drift` paths (known from the build history)."""

    def __init__(self, path: Path, live: Path | None, drift: set[str] | None = None):
        self.path = path
        self.root = str(path)
        self.live = str(live) if live is not None else None
        self.written = 0
        self.linked = 0
        self.live_hashes: dict[str, str] = {}  # path -> sha256 of live files known to the caller
        self.recycled = drift is not None
        self.drift = drift or set()
        self._dirs: set[str] = set()  # directories (relative) this build put entries in
        # What this build changed on disk, for a flush of just that (see flush_changes): files
        # written, directories whose entries changed. Only known when every write is made by
        # this process (forked render workers write too: then `tracked` is False).
        self.base_durable = False  # the tree it started from is on disk (a finished copy, a durable tree)
        self.tracked = True
        self._written_files: list[str] = []
        self.written_shards: list[str] = []  # of the tree's index (see write_listing)
        self._emptied: set[str] = set()
        self._live_done: int | None = None  # mtime_ns of the live tree's manifest, written after every file
        self._live_sizes: dict[str, int] | None = None  # path -> size, from the live tree's manifest
        self._copies: dict[tuple[str, str], str] = {}  # (source, sha256) -> where this tree has a verified copy

    def put(self, artifact: Artifact) -> None:
        """Place one file: link it from the live tree or its source, else write its bytes."""
        try:
            self._put(artifact)
        except OSError as exc:
            raise OutputError(Problem(Location(str(exc.filename or artifact.path)),
                                      f"cannot write the new tree: {exc.strerror}",
                                      hint="the previous tree is untouched and still served")) from None

    def _put(self, artifact: Artifact) -> None:
        target = self._target(artifact.path)
        if self._link_unchanged(artifact, target):
            self.linked += 1
        elif artifact.source is not None:
            key = (str(artifact.source), artifact.sha256)
            first = self._copies.get(key)  # an installer is served under its version and `current`
            if first is not None and _link(first, target):
                self.linked += 1
                return
            try:
                copy_verified(artifact.source, target, artifact.sha256, artifact.size)
            except FileNotFoundError:
                raise OutputError(Problem(Location(str(artifact.source)), "the file to copy disappeared during "
                                          "the build", hint="build again; the previous tree is untouched")) from None
            self._copies[key] = target
            self._written_files.append(target)
            self.written += 1
        elif artifact.data is not None:
            write_bytes(target, artifact.data)
            self._written_files.append(target)
            self.written += 1
        else:
            raise OutputError(Problem(Location(artifact.path), "the file to copy disappeared during the build",
                                      hint="build again; the previous tree is untouched"))

    def _link_unchanged(self, artifact: Artifact, target: str) -> bool:
        return self.live is not None and self.live_hashes.get(artifact.path) == artifact.sha256 and \
            self.live_intact(artifact.path, artifact.size) and _link(os.path.join(self.live, artifact.path), target)

    def live_intact(self, path: str, size: int | None) -> bool:
        """Whether the live tree's file at `path` is still as that tree was written: a regular
        file of the listed size (`size`; the live manifest's when None) not written to since
        the tree's manifest was (every file of a tree is in place before its manifest).

        A same-size rewrite whose mtime was set back is not seen; anything else done by
        hand to a live file is, and the file is made again instead of carried forward."""
        if self._live_done is None:
            try:
                self._live_done = os.stat(os.path.join(self.live, MANIFEST)).st_mtime_ns
            except OSError:
                self._live_done = -1  # no manifest: nothing in that tree can be vouched for
        if size is None:
            size = self.live_sizes().get(path)
        try:
            st = os.lstat(os.path.join(self.live, path))
        except OSError:
            return False
        return stat.S_ISREG(st.st_mode) and st.st_size == size and st.st_mtime_ns <= self._live_done

    def live_sizes(self) -> dict[str, int]:
        """Path -> size of every file of the live tree, as its manifest lists them (read once)."""
        if self._live_sizes is None:
            try:
                self._live_sizes = tree_sizes(Path(self.live))
            except (OSError, IndexDamaged):
                self._live_sizes = {}  # nothing is linked from that tree: every file is made again
        return self._live_sizes

    def link_live(self, path: str, size: int | None = None) -> bool:
        """Hard-link `path` from the live tree (its bytes are unchanged); False if it is gone
        there or no longer as that tree was written (see live_intact).

        Safe to call from several threads once live_sizes() was read; the caller counts the links."""
        return self.live_intact(path, size) and _link(os.path.join(self.live, path), self._target(path))

    def link_all_live(self, paths: list[str]) -> list[str]:
        """Hard-link every path from the live tree, on a few threads when there are many;
        returns those missing there or changed since it was written. Counts the links."""
        from concurrent.futures import ThreadPoolExecutor  # only here: it imports logging

        self.live_intact("", 0)  # read the manifest's time and sizes before the threads start
        self.live_sizes()
        parts = [paths[i::RELINK_THREADS] for i in range(RELINK_THREADS)] if len(paths) > 2000 else [paths]
        with ThreadPoolExecutor(len(parts)) as pool:
            missing = [path for part in pool.map(lambda part: [p for p in part if not self.link_live(p)], parts)
                       for path in part]
        self.linked += len(paths) - len(missing)
        return missing

    def _target(self, path: str) -> str:
        """Absolute staging path for `path`, creating its directory once.

        In a recycled tree the old file is unlinked first: its inode may be
        shared with a kept tree, so it is never written in place."""
        parent = os.path.dirname(path)
        if parent not in self._dirs:
            os.makedirs(os.path.join(self.root, parent), exist_ok=True)
            self._dirs.add(parent)
        target = os.path.join(self.root, path)
        if self.recycled:
            try:
                os.unlink(target)
            except FileNotFoundError:
                pass
        return target

    def settle(self, listing: Listing, changed: set[str], placed: set[str]) -> None:
        """Bring a recycled tree level with `listing`: every path it may hold with other bytes
        (`drift`) and every path this build changed, except those just `placed`, is
        linked from the live tree if it is still listed, or removed."""
        if not self.recycled:
            return
        todo = (self.drift | changed) - placed
        sizes = listed_sizes(listing, todo)
        gone = []
        for path in todo:
            if path not in sizes:
                gone.append(path)
            elif not self.link_live(path, sizes[path]):
                raise LiveTreeChanged(Problem(Location(os.path.join(self.live, path)),
                                          "missing from the live tree, or changed there since it was built",
                                          hint="delete .bootgen/stamp and build again (every file is then made anew)"))
            else:
                self.linked += 1
        self._remove(gone)

    def _remove(self, paths) -> None:
        """Delete files (and the directories they leave empty)."""
        parents = set()
        for path in paths:
            try:
                os.unlink(os.path.join(self.root, path))
            except FileNotFoundError:
                pass
            parents.add(os.path.dirname(path))
        self._emptied |= parents
        for parent in sorted(parents, key=len, reverse=True):
            while parent:
                try:
                    os.rmdir(os.path.join(self.root, parent))
                except OSError:
                    break  # not empty (or gone): its ancestors are not empty either
                parent = os.path.dirname(parent)
                self._emptied.add(parent)

    def flush_changes(self, restricted=()) -> None:
        """Make what this build changed durable: the files it wrote, then every directory
        whose entries it changed and their ancestors (a new directory is an entry of its
        parent). Enough when the tree it started from and every file it linked are on disk
        already (see TreeWriter.commit); an fsync each, instead of flushing the whole file
        system, which also waits for every other process's unwritten data."""
        for path in self._written_files + self.written_shards:
            fsync_path(path)
        for path in restricted:  # their mode and group were just set (bootgen.secrets_tree.restrict)
            fsync_path(os.path.join(self.root, path))
        fsync_path(os.path.join(self.root, MANIFEST))
        directories = {INDEX}
        for relative in self._dirs | self._emptied:
            while relative and relative not in directories:
                directories.add(relative)
                relative = os.path.dirname(relative)
        for relative in sorted(directories, key=len, reverse=True):
            if os.path.isdir(os.path.join(self.root, relative)):
                fsync_path(os.path.join(self.root, relative))
        fsync_path(self.root)


_SIZE_OF_ENTRY = re.compile(rb'"path": ("(?:[^"\\]|\\.)*"), "sha256": "[0-9a-f]{64}", "size": (\d+)')


def manifest_sizes(manifest: bytes) -> dict[str, int]:
    """Path -> size from a manifest's entries: a pattern over the bytes, since a large tree's
    manifest has hundreds of thousands of entries and parsing it whole costs far more."""
    return {(literal[1:-1].decode() if b"\\" not in literal else json.loads(literal)): int(size)
            for literal, size in _SIZE_OF_ENTRY.findall(manifest)}


_SIZE_ONLY = re.compile(rb'"size": (\d+), "target": ')


def tree_sizes(tree: Path) -> dict[str, int]:
    """Path -> size of every file a tree's index lists. A shard's entries are in the order of
    its SHA256SUMS lines, one size each, so the sizes alone are matched (several times faster
    than the paths too)."""
    listing = Listing.read(tree)
    if listing is None:
        raise FileNotFoundError(errno.ENOENT, f"no index of format {FORMAT}", str(tree / MANIFEST))
    sizes: dict[str, int] = {}
    for chunk in listing.chunks:
        paths, found = checksummed_paths(chunk.sums), _SIZE_ONLY.findall(chunk.entries)
        if len(paths) == len(found):
            sizes.update(zip(paths, map(int, found)))
        else:  # a path that holds the pattern itself: match whole entries
            sizes.update(manifest_sizes(chunk.entries))
    return sizes


def listed_sizes(listing: Listing, paths) -> dict[str, int]:
    """Path -> size of those of `paths` that `listing` holds (each chunk concerned split once)."""
    sizes: dict[str, int] = {}
    for index, group in listing._by_chunk(paths).items():
        entries, _ = listing.chunks[index].lines()
        held = manifest_sizes(b"\n".join(entries))
        sizes.update((p, held[p]) for p in group if p in held)
    return sizes


FICLONE = 0x40049409  # ioctl(2): share the source's extents (btrfs, XFS, bcachefs); copy-on-write after
COPY_CHUNK = 1 << 20


def copy_verified(source: Path, target: str, sha256: str, size: int) -> None:
    """Give the tree its own copy of `source`, hashed on the way and compared with `sha256`.

    A reflink where the file system has them (the copy is then hashed from
    the tree), else a plain copy hashed as it is read. If the bytes are not
    the verified ones (the source was changed since it was checked), the copy
    is removed and the build stops: the previous tree stays."""
    src = os.open(os.path.realpath(source), os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    try:
        st = os.fstat(src)
        if not stat.S_ISREG(st.st_mode):
            raise OSError(errno.EINVAL, "not a regular file", str(source))
        with contextlib.suppress(FileNotFoundError):
            os.unlink(target)  # a node re-rendered after its files were partly placed
        dst = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
        try:
            digest, count = None, st.st_size
            if st.st_size == size:
                digest, count = _reflink_hashed(src, dst, target)
                if digest is None:
                    digest, count = _copy_hashed(src, dst)
        finally:
            os.close(dst)
    finally:
        os.close(src)
    if count != size or digest != sha256:
        os.unlink(target)
        raise OutputError(Problem(Location(str(source)), f"changed since it was verified (expected {size} bytes "
                                  f"with sha256 {sha256}); not copied into the tree",
                                  hint="build again: it is checked (and fetched) anew; the previous tree is untouched"))


def _reflink_hashed(src: int, dst: int, target: str) -> tuple[str | None, int]:
    """(sha256, size) of the tree's copy after a reflink, or (None, -1) where there are none."""
    try:
        fcntl.ioctl(dst, FICLONE, src)
    except OSError:
        return None, -1
    digest, count = hashlib.sha256(), 0
    with open(target, "rb", buffering=0) as copy:
        buffer = bytearray(COPY_CHUNK)
        view = memoryview(buffer)
        while n := copy.readinto(buffer):
            digest.update(view[:n])
            count += n
    return digest.hexdigest(), count


def _copy_hashed(src: int, dst: int) -> tuple[str, int]:
    """Copy and hash the very bytes written: (sha256, size)."""
    digest, count = hashlib.sha256(), 0
    buffer = bytearray(COPY_CHUNK)
    view = memoryview(buffer)
    while n := os.readv(src, [buffer]):
        digest.update(view[:n])
        count += n
        done = 0
        while done < n:
            done += os.write(dst, view[done:n])
    return digest.hexdigest(), count


def _flush_private(keep: Path) -> None:
    """The full index kept in .bootgen/private/<build id>/: its files written (not linked)
    by this build, then its directories."""
    for directory in (keep / INDEX, keep):
        for entry in os.scandir(directory):
            if entry.is_file(follow_symlinks=False) and entry.stat().st_nlink == 1:
                fsync_path(entry.path)
        fsync_path(str(directory))
    fsync_path(str(keep.parent))


def write_bytes(target: str, data: bytes) -> None:
    """Write a new file (staging files are never rewritten, so no temp-and-rename is needed)."""
    with open(target, "wb") as handle:
        handle.write(data)


class TreeWriter:
    """Owns the output link: one writer at a time, staging, commit, prune."""

    def __init__(self, out: Path, state_dir: Path, drift=None):
        """`drift(tree id)` says which paths an old tree holds with other bytes than the live
        one (None if unknown): such a tree can be recycled as the staging tree."""
        check_out_path(out)
        self.out = out
        self.builds = state_dir / "builds"
        self.builds.mkdir(parents=True, exist_ok=True)
        self._lock = contextlib.ExitStack()
        self._lock.enter_context(build_lock(state_dir))  # held already by a build; taken here otherwise
        self._discard(self.builds.glob(".partial-*"))  # left by a build that was killed midway
        self.live = live_build_id(out, state_dir)
        staging_path = self.builds / f".partial-{os.getpid()}"
        self._base_durable = False
        drift = self._recycle(staging_path, drift) if self.live and drift else None
        if drift is None:
            staging_path.mkdir()
        self.staging = Staging(staging_path, out.resolve() if self.live else None, drift)
        self.staging.base_durable = self._base_durable and is_durable(self.builds, self.live)

    def _recycle(self, staging_path: Path, drift) -> set[str] | None:
        """Reuse the oldest kept tree, the one beyond the releases, as the staging tree.

        Only files that differ from it are then replaced, instead of making
        every entry of a new tree again. It has not been served since two
        builds ago, and a reader that still has one of its files open keeps
        reading the old bytes: files are replaced by new directory entries,
        never rewritten in place. It is never one of the releases (the live
        tree and the KEEP_BUILDS - 1 before it), so a build that fails after
        taking it leaves every rollback point in place. Returns the paths where it differs from the
        live tree, or None."""
        trees = self._trees()
        if len(trees) < KEPT_TREES - 1:  # only the tree beyond the releases may be taken
            return self._take_spare(staging_path, drift)
        oldest = trees[-1]
        paths = drift(oldest.name)
        if paths is None:
            return None
        with _unpinned(oldest) as free:
            if not free:  # a publish is reading it: a new tree, rather than waiting
                return None
            self._base_durable = is_durable(self.builds, oldest.name)
            _forget_durable(self.builds, oldest.name)  # the tree of that id is changed from here on
            os.rename(oldest, staging_path)
        for name in (MANIFEST, CHECKSUMS):  # the index is written anew; SHA256SUMS: a tree of index format 1
            (staging_path / name).unlink(missing_ok=True)
        return paths

    def _take_spare(self, staging_path: Path, drift) -> set[str] | None:
        """Take a finished copy made in the background (see make_spares) as the staging tree:
        one of the live tree, else of an older kept tree whose drift is known. A copy still
        being made is never waited for: without a finished one the build makes a new tree."""
        spares = sorted(_finished_spares(self.builds), key=lambda p: _spared_id(p) != self.live)
        for spare in spares:
            paths = drift(_spared_id(spare))
            if paths is None:  # a copy of a tree no longer reachable in the build history
                self._discard([spare])
                continue
            os.rename(spare, staging_path)
            self._base_durable = True  # a copy is flushed before it gets its finished name
            return paths
        return None

    def _trees(self) -> list[Path]:
        return _old_trees(self.out, self.builds)

    def close(self) -> None:
        """Release the lock; a staging directory not committed is removed (in the background)."""
        if self.staging.path.exists():
            self._discard([self.staging.path])
        self._lock.close()

    def __enter__(self) -> "TreeWriter":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def commit(self, listing: Listing, changed: set[str] = frozenset(), placed: set[str] = frozenset(),
               written: int = 0, linked: int = 0, *, durable: bool = True, private: set[str] = frozenset()
               ) -> WriteResult:
        """Finish the staging tree for `listing` and point the output at it.

        `changed` holds the paths whose bytes differ from the live tree and
        `placed` the ones this build put in staging (a recycled tree needs both).
        `durable` flushes the tree to disk before the switch, so that not even a
        power cut can leave the output pointing at a tree with missing bytes: just
        what this build changed when it started from a tree on disk and linked only
        from a live tree on disk, else the whole file system.
        `private` holds the secret-bearing paths: the tree's own manifest.json and
        SHA256SUMS leave them out, and the full pair is kept in `.bootgen/private/`."""
        build_id = listing.build_id()
        final = self.builds / build_id
        staging = self.staging
        if self.live == build_id:
            return WriteResult(build_id, final, False, 0, 0)
        existed = _complete(final)  # a kept tree with these very bytes: switched to, not written
        index_bytes = 0
        try:
            if not existed:
                before = staging.linked
                staging.settle(listing, changed, placed)
                linked += staging.linked - before
                live = self.out.resolve() if self.live else None
                index_bytes = write_listing(staging.path, listing, build_id, private, self.builds.parent, live,
                                            made=staging.written_shards)
                if private:
                    from .secrets_tree import restrict

                    restrict(staging.path, private)
                if durable:  # on disk before any server is switched to it
                    if staging.base_durable and staging.tracked:
                        staging.flush_changes(private)
                        if private:
                            _flush_private(self.builds.parent / PRIVATE / build_id)
                    else:
                        sync_filesystem(staging.path)
                shutil.rmtree(final, ignore_errors=True)  # an incomplete leftover of the same id
                os.rename(staging.path, final)
                if durable:
                    fsync_path(self.builds)
                    mark_durable(self.builds, build_id)
            os.utime(final)  # newest, so pruning keeps it
            listing.kept_in(listing_dir(final))
            self._switch(final)
        except OSError as exc:
            raise OutputError(Problem(Location(str(exc.filename or final)), f"cannot write the new tree: {exc.strerror}",
                                      hint="the previous tree is untouched and still served")) from None
        self._prune(keep=final)
        return WriteResult(build_id, final, True, 0 if existed else written, 0 if existed else linked, index_bytes)

    def _switch(self, final: Path) -> None:
        switch_link(self.out, final)

    def _prune(self, keep: Path) -> None:
        """Keep the releases and one tree to recycle, never the live one."""
        trees = sorted((p for p in self.builds.iterdir() if p.is_dir() and not p.name.startswith(".")),
                       key=lambda p: p.stat().st_mtime, reverse=True)
        for old in trees[KEPT_TREES:]:
            if old.resolve() != keep.resolve():
                with _unpinned(old) as free:
                    if free:  # a tree a publish is reading is pruned by a later build
                        self._discard([old])
        self._discard(p for p in _finished_spares(self.builds) if not (self.builds / _spared_id(p)).is_dir())
        for marker in self.builds.glob(f"{DURABLE_PREFIX}*"):  # of trees that are gone
            if not (self.builds / marker.name[len(DURABLE_PREFIX):]).is_dir():
                marker.unlink(missing_ok=True)
        kept = self.builds.parent / "private"
        if kept.is_dir():  # full listings of trees that are gone
            for old in kept.iterdir():
                if not (self.builds / old.name).is_dir():
                    shutil.rmtree(old, ignore_errors=True)

    def _discard(self, directories) -> None:
        discard(self.builds, directories)


def discard(builds: Path, directories) -> None:
    """Delete trees in the background: removing 100,000 files takes longer than building them.

    They are renamed out of the way at once; one detached process removes
    them and whatever trash appears while it runs. A build starts it only
    when none is running, and the next build retries any it did not finish."""
    for directory in list(directories):  # a glob of `builds` is read whole before renaming in it
        os.rename(directory, builds / f".trash-{directory.name.lstrip('.')}-{secrets.token_hex(4)}")
    if not any(builds.glob(".trash-*")):
        return
    lock = builds / ".trash.lock"
    with open(lock, "w") as probe:
        try:
            fcntl.flock(probe, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return  # a remover is at work; it looks for new trash before it exits
    subprocess.Popen([sys.executable, "-c", _REMOVER, str(lock), str(builds / ".trash-*")],
                     start_new_session=True, stdin=subprocess.DEVNULL,
                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


# Holds the lock while trash remains; stops when a pass removes nothing more.
_REMOVER = """
import fcntl, glob, shutil, sys
lock = open(sys.argv[1], "w")
try:
    fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
except BlockingIOError:
    sys.exit()
before = None
while True:
    trash = sorted(glob.glob(sys.argv[2]))
    if not trash or trash == before:
        break
    for path in trash:
        shutil.rmtree(path, True)
    before = trash
"""


def is_durable(builds: Path, build_id: str | None) -> bool:
    """Whether tree `build_id` was flushed to disk whole when it was finished (see mark_durable)."""
    return bool(build_id) and os.path.exists(builds / f"{DURABLE_PREFIX}{build_id}")


def mark_durable(builds: Path, build_id: str) -> None:
    """Record that kept tree `build_id` is on disk, every byte and entry of it. Made only after
    the flush: lost in a crash, the next build merely flushes the whole file system again."""
    with open(builds / f"{DURABLE_PREFIX}{build_id}", "wb"):
        pass


def _forget_durable(builds: Path, build_id: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(builds / f"{DURABLE_PREFIX}{build_id}")


def make_live_durable(out: Path, state_dir: Path) -> None:
    """Flush the live tree (switched to without a flush, by watch) and record it as on disk,
    so that the next build flushes only what it changes. Under the build lock."""
    live = live_build_id(out, state_dir)
    builds = state_dir / "builds"
    if live and not is_durable(builds, live):
        sync_filesystem(builds / live)
        mark_durable(builds, live)


def fsync_path(path: Path | str) -> None:
    """Make a file's bytes, or a directory's entries (a rename, a new link), durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def switch_link(out: Path, final: Path) -> None:
    """Point the output link at tree `final` with one rename: servers never see a missing tree."""
    temp = out.with_name(f".{out.name}.switch-{os.getpid()}")
    if temp.is_symlink() or temp.exists():
        temp.unlink()
    out.absolute().parent.mkdir(parents=True, exist_ok=True)
    os.symlink(os.path.relpath(final.absolute().resolve(), out.absolute().parent.resolve()), temp)
    os.replace(temp, out)


def write_listing(tree: Path, listing: Listing, build_id: str, private: set[str], state_dir: Path,
                  live: Path | None = None, made: list[str] | None = None) -> int:
    """The tree's index: its shards and pages (index/), then its root (manifest.json) last. With
    secret-bearing `private` paths, the full index (and the list of those paths) goes to
    .bootgen/private/<build id>/, readable by its owner only, and the tree gets the public
    index without them. Shards the tree holds already (a recycled tree), or the live tree
    holds, are kept or linked; shards no longer listed are removed. Returns the bytes written.

    With no live tree (a first build), no other listing shares a chunk of this one: each
    chunk forgets its lines once its shard is on disk (a million nodes' lines are gigabytes).
    `made` gets the path of every shard and page of the tree written (not linked)."""
    sources = [live / INDEX, private_dir(live) / INDEX] if live is not None else []
    public = listing.without(private)
    written = _write_shards(tree, public, sources, release=live is None, made=made)
    if private:
        keep = state_dir / PRIVATE / build_id
        keep.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(keep.parent, 0o700)
        written += _write_shards(keep, listing, sources, fresh=tree / INDEX, release=live is None)
        (keep / SECRET_PATHS).write_text(json.dumps(sorted(private), indent=1) + "\n")
        written += _write_root(keep, listing, build_id)
    return written + _write_root(tree, public, build_id)


def _write_shards(directory: Path, listing: Listing, sources: list[Path], fresh: Path | None = None,
                  release: bool = False, made: list[str] | None = None) -> int:
    """Bring directory/index/ level with `listing`'s shards and pages, linking shards a source index holds
    as it was written (see _linkable) or the `fresh` index just written; returns the bytes written.
    With `release`, a chunk whose shard this writes keeps only its name (see _Chunk.release)."""
    index = directory / INDEX
    index.mkdir(exist_ok=True)
    present = set(os.listdir(index))
    finished: dict[Path, int] = {}
    wanted, written = set(), 0
    for chunk in listing.chunks:
        for suffix in (".json", ".sha256"):
            name = f"{chunk.id}{suffix}"
            wanted.add(name)
            if name in present:  # a recycled tree's: most of them, so nothing more is made for those
                continue
            target = os.path.join(index, name)
            held = [chunk.source / INDEX] if chunk.source is not None else []
            if (fresh is not None and _link(str(fresh / name), target)) or \
                    any(_linkable(source / name, finished) and _link(str(source / name), target)
                        for source in held + sources):
                continue
            data = chunk.shard_bytes() if suffix == ".json" else chunk.sums
            write_bytes(target, data)
            if made is not None:
                made.append(target)
            written += len(data)
        if release and chunk.source is None:
            chunk.release(directory)
    for page in listing.pages():  # a few kilobytes each: written, never linked
        name = page_name(page.id)
        wanted.add(os.path.basename(name))
        if os.path.basename(name) not in present:
            data = page.page_bytes()
            write_bytes(str(directory / name), data)
            if made is not None:
                made.append(str(directory / name))
            written += len(data)
    for stale in present - wanted:  # shards of the recycled tree this one does not list
        os.unlink(index / stale)
    return written


def _linkable(shard: Path, finished: dict[Path, int]) -> bool:
    """Whether a shard of a kept index is as it was written: not written to since that index's
    root was (a shard changed by hand is written anew, as live_intact does for files)."""
    root = shard.parent.parent / MANIFEST
    if root not in finished:
        try:
            finished[root] = os.stat(root).st_mtime_ns
        except OSError:
            finished[root] = -1
    try:
        return os.stat(shard).st_mtime_ns <= finished[root]
    except OSError:
        return False


def _write_root(directory: Path, listing: Listing, build_id: str) -> int:
    root = listing.root_bytes(build_id)
    target = directory / MANIFEST
    target.unlink(missing_ok=True)  # its inode may be shared with a kept tree's
    write_bytes(str(target), root)
    return len(root)


def _complete(tree: Path) -> bool:
    """Whether `tree` holds a finished index of the current format (its root is written last)."""
    try:
        root_document((tree / MANIFEST).read_bytes())
        return True
    except (OSError, ValueError):
        return False


def _old_trees(out: Path, builds: Path) -> list[Path]:
    """Complete trees other than the live one, newest first."""
    live = out.resolve() if live_build_id(out) else None
    trees = [p for p in builds.iterdir() if p.is_dir() and not p.name.startswith(".")
             and p.resolve() != live and (p / MANIFEST).is_file()]
    return sorted(trees, key=lambda p: p.stat().st_mtime, reverse=True)


def prepare_next(out: Path, state_dir: Path, live: str, files: int, busy: Path | None = None) -> None:
    """After the switch to tree `live` of `files` files: if the next builds would have to make
    whole new trees (too few old trees to recycle), start copying the live tree in the
    background. `busy` is the state directory whose build lock the copies yield to
    (`state_dir` by default)."""
    builds = state_dir / "builds"
    if files >= SPARE_MIN_FILES and _spares_wanted(out, builds) > 0:
        start_spare(out, state_dir, busy or state_dir)


def _spares_wanted(out: Path, builds: Path) -> int:
    """Copies still to make so that each of the next builds finds a tree to recycle: until
    KEPT_TREES - 1 old trees exist, every build takes a copy (see TreeWriter._recycle)."""
    kept = {p.name for p in _old_trees(out, builds)} | {out.resolve().name}
    usable = [p for p in _finished_spares(builds) if _spared_id(p) in kept]
    return KEPT_TREES - 1 - len(kept - {out.resolve().name}) - len(usable)


def _finished_spares(builds: Path) -> list[Path]:
    return [p for p in builds.glob(f"{SPARE_PREFIX}*") if p.is_dir()]


def _spared_id(spare: Path) -> str:
    """The build id of the tree a copy was made of (.spare-<build id>.<n>)."""
    return spare.name[len(SPARE_PREFIX):].split(".")[0]


def start_spare(out: Path, state_dir: Path, busy: Path) -> subprocess.Popen | None:
    """Make the copies the next builds want in a detached process (see make_spares); the
    process, or None if one is at work already.

    The copies' lock is taken here and handed to the process, so a benchmark
    or test that looks right after this returns already sees it held."""
    builds = state_dir / "builds"
    lock = open(builds / _SPARE_LOCK, "a")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock.close()
        return None  # copies are being made already; that process looks again for what is wanted
    package_root = str(Path(__file__).resolve().parent.parent)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [package_root, os.environ.get("PYTHONPATH")]))}
    with lock:  # the child keeps the lock through its copy of the descriptor
        return subprocess.Popen([sys.executable, "-c", "import sys, pathlib\nfrom bootgen.write import make_spares\n"
                          "make_spares(*map(pathlib.Path, sys.argv[1:4]), int(sys.argv[4]))",
                          str(out.absolute()), str(state_dir.absolute()), str(busy.absolute()), str(lock.fileno())],
                         pass_fds=(lock.fileno(),), start_new_session=True, stdin=subprocess.DEVNULL,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)


def make_spares(out: Path, state_dir: Path, busy: Path, locked_fd: int) -> int:
    """Copy the live tree until the next builds each have a tree to recycle; the number made.

    After a build from scratch there is no old tree to recycle, and until
    KEPT_TREES - 1 old trees exist every edit would make a whole new tree: one
    link per file, seconds at 10,000 nodes. So the copies for all of those
    edits are made at once, in the background, at low priority, pausing
    whenever a build runs: a build never waits for a copy (it takes a finished
    one, or makes its tree itself), and an edit made at once after another
    finds the copy made for it after the build from scratch."""
    builds = state_dir / "builds"
    with os.fdopen(locked_fd, "a"), _BuildWatch(busy) as watch:
        os.nice(10)
        with contextlib.suppress(OSError):
            discard(builds, builds.glob(".sparework-*"))  # left by a copy that was killed
        made = 0
        while _spares_wanted(out, builds) > 0:
            watch.pause()  # the live tree is read after any build that was running
            live = live_build_id(out, state_dir)
            if live is None or not _copy_tree(builds, live, watch):
                break
            made += 1
        return made


def make_spare(state_dir: Path, build_id: str) -> bool:
    """Make one copy of the kept tree `build_id` now, in this process (see make_spares);
    False if copies are being made already, or the tree is gone or changed."""
    builds = state_dir / "builds"
    with open(builds / _SPARE_LOCK, "a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        return _copy_tree(builds, build_id, None)


def _copy_tree(builds: Path, build_id: str, watch: "_BuildWatch | None") -> bool:
    """Hard-link a copy of the kept tree `build_id` as .spare-<build id>.<n>; True if made.

    Kept trees are never written to, so this needs no build lock: the copy
    gets its final name only when complete, and a build only ever takes a
    complete one."""
    try:
        listing = Listing.read(builds / build_id)
        paths = listing.paths() if listing is not None else None
    except IndexDamaged:
        paths = None
    if paths is None:
        return False
    name = f"{build_id}.{secrets.token_hex(4)}"
    work = builds / f".sparework-{name}"
    if _link_tree(Staging(work, builds / build_id), paths, watch) and _link_index(builds / build_id, work):
        # Flushed here, in the background: 100,000 new links left dirty would make the
        # next build's flush take a second.
        sync_filesystem(work)
        os.rename(work, builds / f"{SPARE_PREFIX}{name}")
        return True
    with contextlib.suppress(OSError):
        discard(builds, [work])
    return False


def _link_index(tree: Path, copy: Path) -> bool:
    """Link the shards of the tree's index into its copy, so the build that takes the copy
    finds them in place as in any recycled tree (only its root is written anew). A shard
    changed since its root was written is left out: that build writes it afresh."""
    finished: dict[Path, int] = {}
    try:
        names = os.listdir(tree / INDEX)
        (copy / INDEX).mkdir()
        for name in names:
            if _linkable(tree / INDEX / name, finished):
                _link(str(tree / INDEX / name), str(copy / INDEX / name))
        return True
    except OSError:
        return False


def _link_tree(staging: Staging, paths: list[str], watch: "_BuildWatch | None") -> bool:
    """Link every path of the source tree into the new directory `staging`, a chunk at a time,
    pausing while a build runs; False if any is missing."""
    batch = SPARE_CHUNK * RELINK_THREADS
    try:
        staging.path.mkdir()
        for start in range(0, len(paths), batch):
            if watch is not None:
                watch.pause()
                if start and start % SPARE_SYNC_EVERY < batch:
                    # A build flushes the whole file system before it switches: what the copy
                    # left unwritten would be flushed (and waited for) by that build.
                    sync_filesystem(staging.path)
            if staging.link_all_live(paths[start:start + batch]):
                return False
        return True
    except OSError:
        return False  # the tree was pruned by another build, or the disk is full: no copy this time


class _BuildWatch:
    """Pauses background work while a build of the repository runs (it holds `busy` exclusively)."""

    def __init__(self, state_dir: Path):
        self._path = state_dir / BUSY_NAME

    def __enter__(self) -> "_BuildWatch":
        self._handle = open(self._path, "a")
        return self

    def __exit__(self, *exc_info) -> None:
        self._handle.close()

    def pause(self) -> None:
        """Return at once if no build is running, else when it has finished."""
        fcntl.flock(self._handle, fcntl.LOCK_SH)
        fcntl.flock(self._handle, fcntl.LOCK_UN)


def wait_for_spare(builds: Path, timeout: float | None = None) -> None:
    """Return once no copy is being made (or after `timeout`, SPARE_WAIT by default)."""
    try:
        lock = open(builds / _SPARE_LOCK, "a")
    except OSError:
        return
    deadline = time.monotonic() + (SPARE_WAIT if timeout is None else timeout)
    with lock:
        while True:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                if time.monotonic() > deadline:
                    return
                time.sleep(0.02)


def sync_filesystem(path: Path) -> None:
    """Flush the file system holding `path` (syncfs(2)); all file systems where that is unavailable."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        fd = os.open(path, os.O_RDONLY)
        try:
            if libc.syncfs(fd) == 0:
                return
        finally:
            os.close(fd)
    except (OSError, AttributeError):
        pass
    os.sync()


def _link(source: str, target: str) -> bool:
    """Hard-link; copy when across file systems. False if the source is gone.

    link(2) links a symlink itself: callers resolve sources that may be links
    (Debian ships ipxe.efi as one), because trees hold no symlinks."""
    try:
        os.link(source, target)
    except FileNotFoundError:
        return False
    except FileExistsError:  # a node re-rendered after its files were partly linked
        os.unlink(target)
        os.link(source, target)
    except OSError as exc:
        if exc.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK):
            raise
        shutil.copyfile(source, target)
    return True
