"""Write: put a Plan on disk as a new tree and switch to it atomically.

The output path (`build/`) is a symlink to `.bootgen/builds/<build id>/`. A
build writes a complete new directory beside the old one, then replaces the
symlink with one rename, so a server pointed at `build/` sees the old tree or
the new one, never a mix and never nothing (Cobbler's `sync` deletes the tree
while rewriting it). Files unchanged since the previous build are hard-linked
from it instead of written again, and a build whose id is already live writes
nothing at all.
"""
from __future__ import annotations

import errno
import fcntl
import os
import shutil
from contextlib import contextmanager
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


def write_tree(plan_artifacts: dict[str, Artifact], manifest: dict, out: Path, state_dir: Path) -> WriteResult:
    """Write the tree for `manifest` and point `out` at it; nothing changes if it is already live."""
    builds = state_dir / "builds"
    build_id = manifest["build_id"]
    final = builds / build_id
    _check_out_path(out)
    builds.mkdir(parents=True, exist_ok=True)
    with _lock(state_dir):
        if _is_live(out, final):
            return WriteResult(build_id, final, False, 0, 0)
        _remove_partial(builds)
        written = linked = 0
        if not (final / MANIFEST).is_file():
            written, linked = _write_new_or_fail(plan_artifacts, manifest, builds, final, _live_tree(out))
        os.utime(final)  # newest, so pruning keeps it
        _switch(out, final)
        _prune(builds, keep=final)
    return WriteResult(build_id, final, True, written, linked)


def _check_out_path(out: Path) -> None:
    if out.exists() and not out.is_symlink():
        raise OutputError(Problem(Location(str(out)), "exists and is not a bootgen output link",
                                  hint="bootgen never deletes a tree it did not make: move it away, then build again"))


@contextmanager
def _lock(state_dir: Path):
    """One writer at a time: a second build waits instead of racing the switch."""
    state_dir.mkdir(parents=True, exist_ok=True)
    with open(state_dir / "lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def _is_live(out: Path, final: Path) -> bool:
    return out.is_symlink() and out.resolve() == final.resolve() and (final / MANIFEST).is_file()


def _live_tree(out: Path) -> tuple[Path, dict[str, str]] | None:
    """The current tree and its path -> sha256 map, to hard-link unchanged files from."""
    import json

    if not out.is_symlink():
        return None
    tree = out.resolve()
    try:
        manifest = json.loads((tree / MANIFEST).read_text())
        return tree, {f["path"]: f["sha256"] for f in manifest["files"]}
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _remove_partial(builds: Path) -> None:
    """Directories left by a build that was killed midway (we hold the lock)."""
    for leftover in builds.glob(".partial-*"):
        shutil.rmtree(leftover, ignore_errors=True)


def _write_new_or_fail(artifacts, manifest, builds, final, previous) -> tuple[int, int]:
    try:
        return _write_new(artifacts, manifest, builds, final, previous)
    except OSError as exc:
        _remove_partial(builds)
        where = exc.filename or str(builds)
        raise OutputError(Problem(Location(str(where)), f"cannot write the new tree: {exc.strerror}",
                                  hint="the previous tree is untouched and still served")) from None


def _write_new(artifacts: dict[str, Artifact], manifest: dict, builds: Path, final: Path,
               previous: tuple[Path, dict[str, str]] | None) -> tuple[int, int]:
    staging = builds / f".partial-{manifest['build_id'][:16]}-{os.getpid()}"
    written = linked = 0
    made_dirs: set[str] = set()
    for path in sorted(artifacts):
        artifact = artifacts[path]
        target = staging / path
        parent = os.path.dirname(path)
        if parent not in made_dirs:
            target.parent.mkdir(parents=True, exist_ok=True)
            made_dirs.add(parent)
        if _link_unchanged(artifact, target, previous) or (artifact.source and _link(artifact.source, target)):
            linked += 1
        else:
            _write_bytes(target, artifact)
            written += 1
    (staging / MANIFEST).write_bytes(manifest_bytes(manifest))
    (staging / CHECKSUMS).write_bytes(checksums_bytes(manifest))
    os.sync()  # the tree must be on disk before any server can be switched to it
    os.rename(staging, final)
    return written, linked


def _link_unchanged(artifact: Artifact, target: Path, previous) -> bool:
    if previous is None:
        return False
    tree, hashes = previous
    return hashes.get(artifact.path) == artifact.sha256 and _link(tree / artifact.path, target)


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


def _write_bytes(target: Path, artifact: Artifact) -> None:
    if artifact.data is None:
        raise OutputError(Problem(Location(artifact.path), f"source file {artifact.source} disappeared during the build"))
    target.write_bytes(artifact.data)


def _switch(out: Path, final: Path) -> None:
    """Point `out` at `final` with one rename: servers never see a missing tree."""
    temp = out.with_name(f".{out.name}.switch-{os.getpid()}")
    if temp.is_symlink() or temp.exists():
        temp.unlink()
    os.symlink(os.path.relpath(final, out.parent.resolve()), temp)
    os.replace(temp, out)


def _prune(builds: Path, keep: Path) -> None:
    """Keep the newest few trees; never the live one."""
    trees = sorted((p for p in builds.iterdir() if p.is_dir() and not p.name.startswith(".")),
                   key=lambda p: p.stat().st_mtime, reverse=True)
    for old in trees[KEEP_BUILDS:]:
        if old.resolve() != keep.resolve():
            shutil.rmtree(old, ignore_errors=True)
