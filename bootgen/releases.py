"""Releases: the trees a build output keeps, what each was built from, rollback and publish checks.

Every tree a build switches to gets a record in `<state>/releases/<build id>.json`
(time, environment, base_url, the Git commit of the inputs, what changed since
the tree before it). The releases of an output are its live tree and the
KEEP_BUILDS - 1 trees live before it (newest first); `rollback` points the
output link back at one of them with one rename, as a build does.

`publish` asks `check_publishable` whether a tree may go out: it must have
been built for the environment being published, and (unless it was chosen on
purpose: rolled back to, or named with `--release`) from the inputs as they
are now.
"""
from __future__ import annotations

import json
import os
import subprocess
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from .errors import Location, OutputError, Problem, PublishError
from .plan import MANIFEST
from .write import KEEP_BUILDS, _old_trees, build_lock, check_out_path, live_build_id, switch_link

RECORDS = "releases"
ROLLED_BACK = "rolled-back"  # holds the id of the tree `rollback` switched to, until the next build
SHOWN_NODES = 5  # node names listed in a release's "what changed"


@dataclass(frozen=True)
class Release:
    build_id: str
    built_at: float | None  # seconds since the epoch; None for a tree without a record
    env: str | None
    base_url: str | None
    commit: str | None  # Git commit of the inputs; None outside Git
    dirty: bool  # the site or nodes had changes not committed
    parent: str | None  # the tree live before this one was built
    changed_files: int | None  # files that differ from the parent tree; None when built from scratch
    rendered: tuple[str, ...]  # nodes rendered anew (the first SHOWN_NODES)
    rendered_count: int
    files: int | None
    live: bool = False
    inputs: tuple[str, str] | None = None  # the absolute site and nodes directories it was built from

    def changes(self) -> str:
        """What changed since the tree before it, in a few words."""
        if self.built_at is None:
            return "no record"
        if self.changed_files is None:
            return f"built from scratch ({self.rendered_count} nodes)"
        names = ", ".join(self.rendered) + (", ..." if self.rendered_count > len(self.rendered) else "")
        return f"{self.changed_files} files changed" + (f" (nodes: {names})" if names else " (site files)")

    def line(self) -> str:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.built_at)) if self.built_at else "?"
        commit = (self.commit[:10] + ("+dirty" if self.dirty else "")) if self.commit else "-"
        mark = "*" if self.live else " "
        return f"{mark} {self.build_id[:12]}  {when}  {commit:<16} {self.changes()}"

    def as_dict(self) -> dict:
        data = asdict(self)
        data["rendered"] = list(self.rendered)
        data["changes"] = self.changes()
        return data


def record_release(state_dir: Path, build_id: str, *, env: str | None, base_url: str, parent: str | None,
                   changed: set[str] | None, rendered: list[str], files: int, site_dir: Path, nodes_dir: Path,
                   git: bool = True) -> None:
    """Write the record of a tree the output was just switched to."""
    commit, dirty = _git_state(site_dir, nodes_dir) if git else (None, False)
    release = Release(build_id, time.time(), env, base_url, commit, dirty, parent or None,
                      None if changed is None else len(changed), tuple(sorted(rendered)[:SHOWN_NODES]),
                      len(rendered), files, inputs=(str(site_dir.resolve()), str(nodes_dir.resolve())))
    records = state_dir / RECORDS
    records.mkdir(parents=True, exist_ok=True)
    data = release.as_dict()
    del data["live"], data["changes"]
    temp = records / f".{build_id}.json.tmp"
    temp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    os.replace(temp, records / f"{build_id}.json")
    _prune_records(records)


def _prune_records(records: Path) -> None:
    """Records of trees long gone are removed (a few more than the trees are kept)."""
    trees = records.parent / "builds"
    for record in records.glob("*.json"):
        if not (trees / record.stem).is_dir():
            record.unlink(missing_ok=True)


def _git_state(site_dir: Path, nodes_dir: Path) -> tuple[str | None, bool]:
    """(commit of HEAD, whether site/ or nodes/ differ from it) if the site is in a Git work tree."""
    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(["git", "-C", str(site_dir), *args], capture_output=True, text=True, timeout=10,
                                  env={**os.environ, "GIT_OPTIONAL_LOCKS": "0"})
        except (OSError, subprocess.TimeoutExpired):
            return None
        return done.stdout if done.returncode == 0 else None

    head = git("rev-parse", "--verify", "--quiet", "HEAD")
    if not head:
        return None, False
    status = git("status", "--porcelain", "--", str(site_dir.resolve()), str(nodes_dir.resolve()))
    return head.strip(), bool(status and status.strip())


def read_release(state_dir: Path, build_id: str, live: bool = False) -> Release:
    """The record of tree `build_id` (a bare one if it has none, e.g. built by an older bootgen)."""
    try:
        data = json.loads((state_dir / RECORDS / f"{build_id}.json").read_text())
        data["rendered"] = tuple(data["rendered"])
        data["inputs"] = tuple(data["inputs"]) if data.get("inputs") else None
        return Release(**data, live=live)
    except (OSError, ValueError, TypeError, KeyError):
        return Release(build_id, None, None, None, None, False, None, None, (), 0, None, live)


def list_releases(paths) -> list[Release]:
    """The output's releases: the live tree, then the trees live before it, newest first."""
    builds = paths.state / "builds"
    if not builds.is_dir():
        return []
    live = live_build_id(paths.out)
    releases = [read_release(paths.state, live, live=True)] if live else []
    older = _old_trees(paths.out, builds)[:KEEP_BUILDS - 1 if live else KEEP_BUILDS]
    return releases + [read_release(paths.state, tree.name) for tree in older]


def find_release(paths, build_id: str) -> Release:
    """The release whose id starts with `build_id`; an OutputError naming the kept ones otherwise."""
    releases = list_releases(paths)
    matches = [r for r in releases if r.build_id.startswith(build_id)] if build_id else []
    if len(matches) == 1:
        return matches[0]
    kept = ", ".join(r.build_id[:12] for r in releases) or "none"
    what = "matches several releases" if matches else "is not a kept release"
    raise OutputError(Problem(Location(str(paths.out)), f"build id {build_id!r} {what}",
                              hint=f"kept releases: {kept} (see `bootgen releases`)"))


def rollback(paths, build_id: str | None = None) -> Release:
    """Point the output link at a kept release, atomically; by default the one built before the live one."""
    check_out_path(paths.out)
    with build_lock(paths.repository_state):
        target = find_release(paths, build_id) if build_id else _previous(paths)
        tree = paths.state / "builds" / target.build_id
        if not (tree / MANIFEST).is_file():
            raise OutputError(Problem(Location(str(tree)), "this tree is incomplete", hint="pick another release"))
        os.utime(tree)  # the newest kept tree again: pruning and recycling take the oldest
        switch_link(paths.out, tree)
        (paths.state / ROLLED_BACK).write_text(target.build_id + "\n")
    return read_release(paths.state, target.build_id, live=True)


def _previous(paths) -> Release:
    releases = list_releases(paths)
    live = next((r for r in releases if r.live), None)
    older = [r for r in releases if not r.live]
    if live is not None and live.built_at is not None:  # built before the live one, not merely live before it
        older = sorted((r for r in older if (r.built_at or 0) < live.built_at), key=lambda r: -(r.built_at or 0))
    if not older:
        raise OutputError(Problem(Location(str(paths.out)), "no earlier release to roll back to",
                                  hint="`bootgen releases` lists the kept trees"))
    return older[0]


def build_finished(state_dir: Path) -> None:
    """A build switched the output (or found it current): it is no longer a rolled-back tree."""
    (state_dir / ROLLED_BACK).unlink(missing_ok=True)


def check_publishable(tree: Path, paths, *, env: str | None, chosen: bool) -> None:
    """Refuse to publish a tree built for another environment, or from inputs edited since.

    `paths` is the output the tree belongs to (its site and nodes); `chosen`
    is True when the user named the release to publish. A directory that is
    not a bootgen tree under `.bootgen` can only be checked for its environment."""
    fix_env = f" --env {env}" if env else ""
    if not tree.exists():
        raise PublishError(Problem(Location(str(tree)), "no built tree here",
                                   hint=f"build it first: `bootgen build{fix_env}`"))
    state_dir, build_id = _owner(tree)
    release = read_release(state_dir, build_id) if state_dir else None
    if env is not None and (release is None or release.env != env):
        built_for = f"environment {release.env!r}" if release and release.env else "no environment"
        raise PublishError(Problem(Location(str(tree)), f"this tree was built for {built_for}, not {env!r}",
                                   hint=f"build it first: `bootgen build --env {env}`, then "
                                        f"`bootgen publish --env {env}`"))
    if release is None or chosen or _rolled_back_to(state_dir) == build_id:
        return
    # The inputs the tree was built from (a tree named with --tree may come from another directory).
    inputs = dict(site=Path(release.inputs[0]), nodes=Path(release.inputs[1])) if release.inputs else {}
    if not _built_from_current_inputs(state_dir, build_id, replace(paths, env=release.env, base_url=None, **inputs)):
        raise PublishError(Problem(Location(str(tree)), f"the inputs changed since build {build_id[:12]} was made "
                                   f"(or it is not the last build of {paths.site}/ and {paths.nodes}/)",
                                   hint=f"rebuild, then publish: `bootgen build{fix_env}` and "
                                        f"`bootgen publish{fix_env}`; to publish this tree as it is, name it: "
                                        f"`--release {build_id[:12]}`"))


def _owner(tree: Path) -> tuple[Path | None, str]:
    """(state directory, build id) of a tree under `<state>/builds/`; (None, name) otherwise."""
    resolved = tree.resolve()
    if resolved.parent.name == "builds" and (resolved.parent.parent / RECORDS).is_dir():
        return resolved.parent.parent, resolved.name
    return None, resolved.name


def _rolled_back_to(state_dir: Path) -> str | None:
    try:
        return (state_dir / ROLLED_BACK).read_text().strip()
    except OSError:
        return None


def _built_from_current_inputs(state_dir: Path, build_id: str, paths) -> bool:
    """Whether the last build of this output made `build_id` from the inputs as they are now."""
    from . import monitor
    from .incremental import BuildState, InputStamps

    state = BuildState.load_stamp(state_dir)
    if state.build_id != build_id or not state.stamp:
        return False
    # As a build does: the node files the monitor says changed, else a stat of every one.
    answer = monitor.ask(paths.repository_state, paths.nodes, state.monitor_token)
    told = None
    if answer is not None and answer.changed is not None:
        told = InputStamps.of_records(paths.site, paths.nodes, state, state_dir, answer.changed)
    stamps = told if told is not None else InputStamps.take(paths.site, paths.nodes)
    return stamps.digest(*paths.stamp_extras()) == state.stamp
