"""Publish a tree to a local docroot served by nginx (or any static server).

Layout under the docroot:

    releases/<build_id>/   one complete tree per publish
    releases/.history      build ids of published releases, oldest first
    current -> releases/<build_id>   switched atomically by rename

A release holds its own files plus the content-addressed objects of the
previous K-1 releases, hard-linked. So a client that read an entry point from
the old release just before the switch still finds every object it names in
the new one. Files unchanged since the current release (same path and sha256)
are hard-linked too, so a release costs only the bytes that changed.
"""
from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from bootgen import quoting
from bootgen.content import nginx_server
from bootgen.errors import Location, Problem, PublishError
from bootgen.plan import INDEX, listing_dir
from bootgen.publish.manifest import MANIFEST, Manifest, load_tree, read_root
from bootgen.publish.report import Action, PublishReport
from bootgen.write import fsync_dir

RELEASES = "releases"
CURRENT = "current"
HISTORY = ".history"


@dataclass(frozen=True)
class Release:
    """A published release directory and the manifest it was built from."""

    build_id: str
    path: Path
    manifest: Manifest


def publish_docroot(tree: Path, manifest: Manifest, docroot: Path, *, dry_run: bool = False,
                    keep: int = 3, private: bool = False) -> PublishReport:
    """Publish a verified tree as `docroot/releases/<build_id>` and switch `current` to it.

    With `private`, `manifest` is the tree's full manifest (secret-bearing files included);
    a copy goes to `docroot/private/`, beside the served releases, never in them."""
    keep = max(1, keep)
    try:
        if private and not dry_run:
            _keep_private(docroot, manifest, listing_dir(tree))
        target = _Docroot(docroot)
        target.private = private
        actions = target.publish(tree, manifest, dry_run, keep)
    except OSError as exc:
        raise PublishError(Problem(Location(str(docroot)), f"cannot write the docroot: {exc}")) from None
    copies = [a for a in actions if a.verb == "copy"]
    unchanged = sum(a.verb == "link" for a in actions) if actions else len(manifest.files)
    return PublishReport(str(docroot), manifest.build_id, uploaded=len(copies), skipped=unchanged,
                         deleted=sum(a.verb == "delete" for a in actions), requests=0,
                         bytes=sum(a.size for a in copies), dry_run=dry_run, actions=tuple(actions))


def _keep_private(docroot: Path, manifest: Manifest, listing: Path) -> None:
    """The full index: its root as private/<build id>.json, its shards in private/index/."""
    kept = docroot / "private"
    kept.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(kept, 0o700)
    for name in manifest.index_files():
        if name != MANIFEST and not (kept / name).is_file():
            _link_or_copy(listing / name, kept / name, link=False)
    (kept / f"{manifest.build_id}.json").write_bytes(manifest.raw)


class _Docroot:
    def __init__(self, root: Path):
        self.root, self.releases, self.current = root, root / RELEASES, root / CURRENT
        self.private = False  # the tree has secret-bearing files (see publish_docroot)

    def publish(self, tree: Path, manifest: Manifest, dry_run: bool, keep: int) -> list[Action]:
        live = self.current_id()
        target = self.releases / manifest.build_id
        if live == manifest.build_id and (target / MANIFEST).is_file():
            return []  # same build already served: nothing to do
        history = self.history()
        actions: list[Action] = []
        if not (target / MANIFEST).is_file():
            previous = self.previous_releases(history, live, keep - 1)
            actions += self.stage(tree, manifest, previous, dry_run)
        new_history = [b for b in history if b != manifest.build_id] + [manifest.build_id]
        if not dry_run:
            self.switch(manifest.build_id)
        actions += self.expire(new_history, keep, manifest.build_id, dry_run)
        return actions

    def current_id(self) -> str | None:
        try:
            return Path(os.readlink(self.current)).name
        except OSError:
            return None

    def history(self) -> list[str]:
        try:
            builds = json.loads((self.releases / HISTORY).read_text())
        except (OSError, ValueError):
            return []
        return [b for b in builds if isinstance(b, str)]

    def previous_releases(self, history: list[str], live: str | None, count: int) -> list[Release]:
        """The newest `count` readable releases, the live one first."""
        order = ([live] if live else []) + [b for b in reversed(history) if b != live]
        found = [r for r in (self.read_release(b) for b in order) if r is not None]
        return found[:count] if count > 0 else found[:1]  # the live one is always a link source

    def read_release(self, build_id: str) -> Release | None:
        path = self.releases / build_id
        try:
            return Release(build_id, path, load_tree(path))
        except (OSError, PublishError):
            return None

    def stage(self, tree: Path, manifest: Manifest, previous: list[Release], dry_run: bool) -> list[Action]:
        """Assemble the release in a temporary directory, then rename it into place."""
        staging = self.releases / f".staging-{manifest.build_id}-{os.getpid()}"
        plan = _place(tree, manifest, previous)
        if dry_run:
            return [action for action, _src in plan]
        self.clear_staging()
        for action, source in plan:
            _link_or_copy(source, staging / action.path, action.verb == "link")
        if self.private:  # secret-bearing files: not world-readable, as in the tree (TFTP)
            from bootgen.secrets_tree import restrict, secret_paths

            restrict(staging, secret_paths(tree))
        index = manifest.index_files() if not self.private else read_root(tree).index_files()
        for name in index:  # the tree's own index; its root goes in last
            kept = previous[0].path / name if previous and name.startswith(INDEX + "/") else None
            _link_or_copy(kept if kept is not None and kept.is_file() else tree / name, staging / name,
                          link=kept is not None and kept.is_file())
        os.replace(staging, self.releases / manifest.build_id)
        return [action for action, _src in plan]

    def clear_staging(self) -> None:
        """Remove half-built releases left by a crashed publish (single publisher assumed)."""
        self.releases.mkdir(parents=True, exist_ok=True)
        for leftover in self.releases.glob(".staging-*"):
            shutil.rmtree(leftover, ignore_errors=True)

    def switch(self, build_id: str) -> None:
        """Point `current` at the release with one rename, so readers see old or new, never none."""
        temp = self.root / f".{CURRENT}-{os.getpid()}"
        temp.unlink(missing_ok=True)
        os.symlink(f"{RELEASES}/{build_id}", temp)
        os.replace(temp, self.current)
        fsync_dir(self.root)

    def expire(self, history: list[str], keep: int, live: str, dry_run: bool) -> list[Action]:
        """Delete releases older than the last `keep`, never the live one."""
        kept = history[-keep:]
        doomed = [p for p in self.release_dirs() if p.name not in kept and p.name != live]
        if not dry_run:
            for path in doomed:
                shutil.rmtree(path)
            _write_atomic(self.releases / HISTORY, json.dumps(kept, indent=2) + "\n")
        return [Action("delete", f"{RELEASES}/{p.name}") for p in doomed]

    def release_dirs(self) -> list[Path]:
        if not self.releases.is_dir():
            return []
        return sorted(p for p in self.releases.iterdir() if p.is_dir() and not p.name.startswith("."))


def _place(tree: Path, manifest: Manifest, previous: list[Release]) -> list[tuple[Action, Path]]:
    """Decide for each file of the new release where it comes from: a link or a copy."""
    live = previous[0].manifest.by_path() if previous else {}
    plan: list[tuple[Action, Path]] = []
    for entry in manifest.files:
        old = live.get(entry.path)
        if old is not None and old.sha256 == entry.sha256:
            plan.append((Action("link", entry.path, entry.size), previous[0].path / entry.path))
        else:
            plan.append((Action("copy", entry.path, entry.size), tree / entry.path))
    placed = {entry.path for entry in manifest.files}
    for release in previous:  # carry older content-addressed objects for in-flight clients
        for entry in release.manifest.files:
            if entry.immutable and entry.path not in placed:
                placed.add(entry.path)
                plan.append((Action("link", entry.path, entry.size), release.path / entry.path))
    return plan


def _link_or_copy(source: Path, dest: Path, link: bool) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    if link:
        try:
            os.link(source, dest)
            return
        except OSError:
            pass  # another filesystem, or a missing file: fall back to a copy
    shutil.copyfile(source, dest)


def _write_atomic(path: Path, text: str) -> None:
    temp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    temp.write_text(text)
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
