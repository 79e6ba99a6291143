"""Write: put a build on disk as a new tree and switch to it atomically.

The output path (`build/`) is a symlink to `.bootgen/builds/<build id>/`. A
build fills a staging directory beside the live tree, syncs it, renames it to
its build id and replaces the symlink with one rename, so a server pointed at
`build/` sees the old tree or the new one, never a mix and never nothing
(Cobbler's `sync` deletes the tree while rewriting it). Files unchanged since
the live tree are hard-linked from it instead of written again, and a build
whose id is already live is discarded without touching anything.

Several processes may fill one staging directory (the build renders nodes on
every core); only the process holding the lock commits it.
"""
from __future__ import annotations

import errno
import fcntl
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from .errors import Location, OutputError, Problem
from .plan import CHECKSUMS, MANIFEST, Artifact, checksums_bytes, manifest_bytes

KEEP_BUILDS = 3  # the live tree plus two to roll back to (and for requests still in flight)


@dataclass(frozen=True)
class WriteResult:
    build_id: str
    tree: Path
    changed: bool  # False when the same build was already live
    written: int  # files written from bytes
    linked: int  # files hard-linked (from the previous build or the image cache)


@dataclass(frozen=True)
class LiveTree:
    """The tree `build/` points at now, and the sha256 of each of its files."""

    path: Path
    build_id: str
    hashes: dict[str, str]


def check_out_path(out: Path) -> None:
    if out.exists() and not out.is_symlink():
        raise OutputError(Problem(Location(str(out)), "exists and is not a bootgen output link",
                                  hint="bootgen never deletes a tree it did not make: move it away, then build again"))


def live_tree(out: Path) -> LiveTree | None:
    """The current tree behind `out`, if it is a complete bootgen tree."""
    if not out.is_symlink():
        return None
    tree = out.resolve()
    try:
        manifest = json.loads((tree / MANIFEST).read_text())
        return LiveTree(tree, manifest["build_id"], {f["path"]: f["sha256"] for f in manifest["files"]})
    except (OSError, ValueError, KeyError, TypeError):
        return None


class Staging:
    """A tree under construction in `.bootgen/builds/.partial-*`."""

    def __init__(self, path: Path, live: LiveTree | None):
        self.path = path
        self.live = live
        self.written = 0
        self.linked = 0
        self._dirs: set[str] = set()

    def put(self, artifact: Artifact) -> None:
        """Place one file: link it from the live tree or its source, else write its bytes."""
        try:
            self._put(artifact)
        except OSError as exc:
            raise OutputError(Problem(Location(str(exc.filename or artifact.path)),
                                      f"cannot write the new tree: {exc.strerror}",
                                      hint="the previous tree is untouched and still served")) from None

    def _put(self, artifact: Artifact) -> None:
        target = self.path / artifact.path
        parent = os.path.dirname(artifact.path)
        if parent not in self._dirs:
            target.parent.mkdir(parents=True, exist_ok=True)
            self._dirs.add(parent)
        if self._link_unchanged(artifact, target) or (artifact.source and _link(artifact.source, target)):
            self.linked += 1
        elif artifact.data is not None:
            write_bytes(target, artifact.data)
            self.written += 1
        else:
            raise OutputError(Problem(Location(artifact.path), "the file to copy disappeared during the build",
                                      hint="build again; the previous tree is untouched"))

    def _link_unchanged(self, artifact: Artifact, target: Path) -> bool:
        live = self.live
        return live is not None and live.hashes.get(artifact.path) == artifact.sha256 and \
            _link(live.path / artifact.path, target)


def write_bytes(target: Path, data: bytes) -> None:
    """Write a new file (staging files are never rewritten, so no temp-and-rename is needed)."""
    with open(target, "wb") as handle:
        handle.write(data)


class TreeWriter:
    """Owns the output link: one writer at a time, staging, commit, prune."""

    def __init__(self, out: Path, state_dir: Path):
        check_out_path(out)
        self.out = out
        self.builds = state_dir / "builds"
        self.builds.mkdir(parents=True, exist_ok=True)
        self._lock = open(state_dir / "lock", "w")
        fcntl.flock(self._lock, fcntl.LOCK_EX)  # a second build waits instead of racing the switch
        self._remove_partial()
        self.live = live_tree(out)
        self.staging = Staging(self.builds / f".partial-{os.getpid()}", self.live)
        self.staging.path.mkdir()

    def close(self) -> None:
        """Release the lock; a staging directory not committed is removed."""
        if self.staging.path.exists():
            shutil.rmtree(self.staging.path, ignore_errors=True)
        self._lock.close()

    def __enter__(self) -> "TreeWriter":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def commit(self, manifest: dict, written: int = 0, linked: int = 0) -> WriteResult:
        """Finish the staging tree for `manifest` and point the output at it."""
        build_id = manifest["build_id"]
        final = self.builds / build_id
        staging = self.staging
        if self.live is not None and self.live.build_id == build_id and self.out.resolve() == final.resolve():
            return WriteResult(build_id, final, False, 0, 0)
        try:
            if not (final / MANIFEST).is_file():
                write_bytes(staging.path / MANIFEST, manifest_bytes(manifest))
                write_bytes(staging.path / CHECKSUMS, checksums_bytes(manifest))
                os.sync()  # the tree must be on disk before any server is switched to it
                shutil.rmtree(final, ignore_errors=True)  # an incomplete leftover of the same id
                os.rename(staging.path, final)
            os.utime(final)  # newest, so pruning keeps it
            self._switch(final)
        except OSError as exc:
            raise OutputError(Problem(Location(str(exc.filename or final)), f"cannot write the new tree: {exc.strerror}",
                                      hint="the previous tree is untouched and still served")) from None
        self._prune(keep=final)
        return WriteResult(build_id, final, True, written, linked)

    def _switch(self, final: Path) -> None:
        """Point the output at `final` with one rename: servers never see a missing tree."""
        temp = self.out.with_name(f".{self.out.name}.switch-{os.getpid()}")
        if temp.is_symlink() or temp.exists():
            temp.unlink()
        os.symlink(os.path.relpath(final, self.out.absolute().parent.resolve()), temp)
        os.replace(temp, self.out)

    def _remove_partial(self) -> None:
        """Staging directories left by a build that was killed midway (we hold the lock)."""
        for leftover in self.builds.glob(".partial-*"):
            shutil.rmtree(leftover, ignore_errors=True)

    def _prune(self, keep: Path) -> None:
        """Keep the newest few trees; never the live one."""
        trees = sorted((p for p in self.builds.iterdir() if p.is_dir() and not p.name.startswith(".")),
                       key=lambda p: p.stat().st_mtime, reverse=True)
        for old in trees[KEEP_BUILDS:]:
            if old.resolve() != keep.resolve():
                shutil.rmtree(old, ignore_errors=True)


def _link(source: Path, target: Path) -> bool:
    """Hard-link; copy when across file systems. False if the source is gone."""
    source = os.path.realpath(source)  # link(2) would link a symlink itself, and trees hold no symlinks
    try:
        os.link(source, target)
    except FileNotFoundError:
        return False
    except OSError as exc:
        if exc.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK):
            raise
        shutil.copyfile(source, target)
    return True


def write_tree(artifacts: dict[str, Artifact], manifest: dict, out: Path, state_dir: Path) -> WriteResult:
    """Write every artifact of a plan and switch `out` to the result."""
    with TreeWriter(out, state_dir) as writer:
        if writer.live is not None and writer.live.build_id == manifest["build_id"]:
            return writer.commit(manifest)
        for path in sorted(artifacts):
            writer.staging.put(artifacts[path])
        return writer.commit(manifest, writer.staging.written, writer.staging.linked)
