"""A local docroot served by nginx (or any static server) as a publish `Store` (bootgen.publish.protocol).

Layout under the docroot:

    releases/<build_id>/   one complete tree per publish, its index (manifest.json, index/) included
    releases/.history      build ids of published releases, oldest first
    current -> releases/<build_id>   switched atomically by rename
    private/               full roots (and their shards) of trees with secret-bearing files, not served

A release is assembled in `releases/.staging-<id>-<pid>` and renamed into
place before `current` is switched. It holds its own files plus the
content-addressed objects of the previous K-1 releases, hard-linked, so a
client that read an entry point from the old release just before the switch
still finds every object it names in the new one. Files unchanged since the
live release are hard-linked too, so a release costs only the bytes that
changed.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
from pathlib import Path
from typing import Callable, Iterator

from bootgen import quoting
from bootgen.content import nginx_server
from bootgen.errors import Location, Problem, PublishError
from bootgen.plan import INDEX, shard_name
from bootgen.publish.manifest import MANIFEST, FileEntry
from bootgen.publish.progress import Progress
from bootgen.publish.protocol import Store
from bootgen.publish.report import Action
from bootgen.write import fsync_path

RELEASES = "releases"
CURRENT = "current"
HISTORY = ".history"
PRIVATE = "private"


@contextlib.contextmanager
def open_store(destination: str, *, tree: Path | None = None, **_options) -> Iterator["DocrootStore"]:
    """The docroot `destination`, with filesystem failures turned into PublishErrors."""
    from bootgen.secrets_tree import secret_paths

    _refuse_nested(Path(destination), tree)
    try:
        yield DocrootStore(Path(destination), secret_paths(tree) if tree is not None else [])
    except OSError as exc:
        raise PublishError(Problem(Location(destination), f"cannot write the docroot: {exc}")) from None


def _refuse_nested(root: Path, tree: Path | None) -> None:
    """A docroot inside a served release (another docroot's `releases/` or `current/`) or inside the
    tree being published would change files that are being served as immutable."""
    where = root.absolute().resolve()
    if tree is not None and where.is_relative_to(Path(tree).resolve()):
        raise PublishError(Problem(Location(str(root)), "the docroot lies inside the tree being published",
                                   hint="publish to a directory outside the build tree"))
    for parent in where.parents:
        if (parent / CURRENT).is_symlink() and (parent / RELEASES).is_dir() and where.is_relative_to(parent / RELEASES):
            raise PublishError(Problem(Location(str(root)), f"the docroot lies inside the published releases of {parent}",
                                       hint=f"publish to {parent} itself, or to a directory outside it"))


class DocrootStore(Store):
    upload_verb = "copy"
    whole_releases = True
    fences_secrets = True  # the release's server/nginx-secrets.conf serves them to their node only

    def __init__(self, root: Path, secret_paths: list[str] = ()):
        self.root, self.releases, self.current = root, root / RELEASES, root / CURRENT
        self.destination = str(root)
        self.secret_paths = list(secret_paths)
        self.staging: Path | None = None

    # -- reading ----------------------------------------------------------------
    def current_id(self) -> str | None:
        try:
            return Path(os.readlink(self.current)).name
        except OSError:
            return None

    def live_root(self) -> bytes | None:
        return _read(self.current / MANIFEST)

    def history(self) -> tuple[str, ...]:
        try:
            builds = json.loads((self.releases / HISTORY).read_text())
        except (OSError, ValueError):
            return ()
        return tuple(b for b in builds if isinstance(b, str)) if isinstance(builds, list) else ()

    def archived_root(self, build_id: str) -> bytes | None:
        return _read(self.root / PRIVATE / f"{build_id}.json") or _read(self.releases / build_id / MANIFEST)

    def shard(self, build_id: str | None, shard_id: str) -> bytes | None:
        name = shard_name(shard_id)
        release = self.releases / build_id if build_id else self.current
        return _read(release / name) or _read(self.root / PRIVATE / name)

    def has_release(self, build_id: str) -> bool:
        return (self.releases / build_id / MANIFEST).is_file()

    # -- writing ----------------------------------------------------------------
    def begin(self, build_id: str) -> None:
        """A fresh staging directory (half-built releases of a killed publish are removed)."""
        self.releases.mkdir(parents=True, exist_ok=True)
        for leftover in self.releases.glob(".staging-*"):
            shutil.rmtree(leftover, ignore_errors=True)
        self.staging = self.releases / f".staging-{build_id}-{os.getpid()}"
        self.staging.mkdir()

    def carry(self, paths: list[str], build_id: str) -> None:
        source = self.releases / build_id
        for path in paths:
            _link_or_copy(source / path, self.staging / path, link=True)

    def upload(self, entry: FileEntry, source: Path, progress: Progress) -> None:
        _link_or_copy(source, self.staging / entry.path, link=False)
        progress.advance(entry.size)

    def put_index(self, path: str, source: Path, private: bool) -> None:
        if not private:
            _link_or_copy(source, self.staging / path, link=False)
            return
        target = self.root / PRIVATE / path
        if not target.is_file():  # content-addressed: same name, same bytes
            self.private_dir().joinpath(INDEX).mkdir(mode=0o700, exist_ok=True)
            _write_atomic(target, source.read_bytes())

    def archive(self, build_id: str, root: bytes, private: bool) -> None:
        if private:  # else the release's own manifest.json is its root
            _write_atomic(self.private_dir() / f"{build_id}.json", root)

    def private_dir(self) -> Path:
        kept = self.root / PRIVATE
        kept.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(kept, 0o700)
        return kept

    def switch(self, build_id: str, root: bytes) -> None:
        """Move the staged release into place (its manifest.json written last), then point `current`
        at it with one rename, so readers see old or new, never none."""
        if self.staging is not None:
            if self.secret_paths:  # secret-bearing files: not world-readable, as in the tree (TFTP)
                from bootgen.secrets_tree import restrict

                restrict(self.staging, [p for p in self.secret_paths if (self.staging / p).is_file()])
            (self.staging / MANIFEST).write_bytes(root)
            os.replace(self.staging, self.releases / build_id)
            self.staging = None
        temp = self.root / f".{CURRENT}-{os.getpid()}"
        temp.unlink(missing_ok=True)
        os.symlink(f"{RELEASES}/{build_id}", temp)
        os.replace(temp, self.current)
        fsync_path(self.root)

    def record(self, history: tuple[str, ...]) -> None:
        _write_atomic(self.releases / HISTORY, (json.dumps(list(history), indent=2) + "\n").encode())

    # -- retention ----------------------------------------------------------------
    def retain(self, kept: tuple[str, ...], referenced: Callable[[], set[str]], dry_run: bool) -> list[Action]:
        """Delete releases older than the kept ones, never the live one."""
        live = self.current_id()
        doomed = [p for p in self.release_dirs() if p.name not in kept and p.name != live]
        if not dry_run:
            for path in doomed:
                shutil.rmtree(path)
        return [Action("delete", f"{RELEASES}/{p.name}") for p in doomed]

    def release_dirs(self) -> list[Path]:
        if not self.releases.is_dir():
            return []
        return sorted(p for p in self.releases.iterdir() if p.is_dir() and not p.name.startswith("."))


def _read(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except OSError:
        return None


def _link_or_copy(source: Path, dest: Path, link: bool) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    if link:
        try:
            os.link(source, dest)
            return
        except OSError:
            pass  # another filesystem, or a missing file: fall back to a copy
    shutil.copyfile(source, dest)


def _write_atomic(path: Path, body: bytes) -> None:
    temp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    temp.write_bytes(body)
    os.replace(temp, path)


def render_nginx_server(docroot: Path, *, listen: str | int = 80, server_name: str = "_",
                        locations: tuple[str, ...] = ()) -> str:
    """An nginx `server { }` block serving `<docroot>/current` with the right types and caching.

    Put it inside `http { }` (e.g. /etc/nginx/conf.d/bootgen.conf). It is the
    tree's own server/nginx.conf (bootgen.content.nginx_server) with the
    docroot's `current` as its root.
    """
    return nginx_server(str(Path(docroot) / CURRENT), str(listen), quoting.nginx_names(server_name),
                        title=f"the docroot {docroot}", locations=locations)
