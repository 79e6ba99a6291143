"""The build: load → validate → model → render → write, incrementally.

1. Stamp every input file; if nothing changed since the live tree, stop.
2. Load site.yaml and profiles (every node depends on them), resolve images.
3. For each node file: reuse its last outputs if nothing it depends on
   changed, else read, validate and render it. Nodes are spread over every
   core when there are many; each process places its files straight into the
   staging tree (which nobody serves yet).
4. Check what only the whole fleet can show (a MAC claimed twice), render the
   shared entry points, and switch the output to the new tree.

Any problem anywhere aborts the build before the switch, listing all of them;
the live tree is untouched. `check` runs steps 2 to 4 without writing.
"""
from __future__ import annotations

import contextlib
import gc
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from .errors import BootgenError, InputError, Location, OutputError, Problem, RenderError
from .naming import node_file_problems
from .incremental import BuildState, InputStamps, NodeRecord, NodeWork, node_work, paused_gc, site_key
from .plan import Artifact, IndexDamaged, Listing, Plan, producer
from .write import LiveTreeChanged, Staging, TreeWriter, WriteResult, build_lock, check_out_path, live_build_id, prepare_next

# Loading, rendering and images pull in jsonschema, Jinja2, python-gnupg and
# urllib3 (about 0.4 s of imports): they are imported where first needed, so a
# build with nothing to do answers at once.

PARALLEL_THRESHOLD = 400  # below this many nodes to render, forking costs more than it saves
TASK_NODES = 2_000  # at most this many nodes per worker task: a task's files and records are held twice
# (made, then pickled) in its worker until it returns, so tasks stay small at any fleet size
PACKED_LISTING_NODES = 50_000  # a build rendering this many nodes holds its listing compressed


@dataclass(frozen=True)
class Paths:
    site: Path
    nodes: Path
    out: Path
    env: str | None = None  # an environment declared in site.yaml: its base_url, its own trees
    base_url: str | None = None  # overrides the site's and the environment's (`serve`)
    home: Path | None = None  # the repository's `.bootgen`; beside the output link by default
    variant: str = ""  # where under `home` this output's trees and state live ("" for `build/`)

    @classmethod
    def for_env(cls, site: Path, nodes: Path, out: Path, env: str | None) -> "Paths":
        """An environment's trees and state live in `.bootgen/env/NAME/`, so that building one
        environment never prunes, recycles or outdates another's trees."""
        return cls(site, nodes, out, env=env, variant=f"env/{env}" if env else "")

    @property
    def repository_state(self) -> Path:
        """The repository's `.bootgen`: the image cache and every output's state."""
        return self.home if self.home is not None else self.out.absolute().parent / ".bootgen"

    @property
    def state(self) -> Path:
        """This output's build history, state, trees and release records."""
        return self.repository_state / self.variant if self.variant else self.repository_state

    @property
    def cache(self) -> Path:
        """Images and compiled templates, shared by every environment."""
        return self.repository_state / "cache"

    def stamp_extras(self) -> tuple[str, ...]:
        """What besides the input files decides the tree (part of the inputs' digest)."""
        return (str(self.site.resolve()), str(self.nodes.resolve()), self.env or "", self.base_url or "")


@dataclass(frozen=True)
class BuildResult:
    write: WriteResult
    nodes: int
    files: int
    rendered: int  # nodes read and rendered (the others were unchanged)
    seconds: float

    @property
    def kept(self) -> int:
        """Files already in place with the right bytes, neither written nor linked: in a recycled
        tree, or all of them when the build is a kept tree switched back to."""
        return self.files - self.write.written - self.write.linked if self.write.changed else self.files

    def summary(self) -> str:
        """One line whose counts add up: files = written + linked + kept."""
        if not self.write.changed:
            return f"{self.files} files for {self.nodes} nodes: unchanged (build {self.write.build_id[:12]})"
        kept = f", {self.kept} already in place" if self.kept else ""
        return (f"{self.files} files for {self.nodes} nodes -> build {self.write.build_id[:12]} "
                f"({self.rendered} nodes rendered; {self.write.written} files written, "
                f"{self.write.linked} linked{kept}) in {self.seconds:.2f}s")

    def as_dict(self) -> dict:
        return {"build_id": self.write.build_id, "changed": self.write.changed, "nodes": self.nodes,
                "rendered": self.rendered, "files": self.files, "written": self.write.written,
                "linked": self.write.linked, "kept": self.kept, "seconds": round(self.seconds, 3)}


def plan_build(paths: Paths, *, fetch: bool = True, progress: bool | None = None) -> tuple:
    """Everything short of writing, from scratch: the validated inputs and the full plan.

    Without `fetch` (what `check` does), image sets are taken as declared: no image byte is
    read and no connection made, and mirrored files are not part of the plan."""
    from .images import declared_images
    from .load import load_inputs
    from .render import render

    problems: list[Problem] = []  # every problem a build would report: invalid nodes and render errors
    inputs = load_inputs(paths.site, paths.nodes, node_problems=problems, env=paths.env, base_url=paths.base_url)
    if fetch:
        images = _resolve(inputs, paths, fetch, progress)
    else:
        images = declared_images(inputs.image_config, _needed_image_sets(inputs))
    try:
        plan = render(inputs, images, display_root=Path.cwd(), extra_files=_placed_files(images, inputs))
    except RenderError as exc:
        if not problems:
            raise
        problems += exc.problems
    if problems:
        raise InputError(list(dict.fromkeys(problems)))
    return inputs, plan


def _placed_files(images: dict, site_inputs) -> list:
    """Image and boot loader files to link into the tree (bootgen.images.PlacedFile). A Secure
    Boot site gets the signed loaders, and its kernels must be in the tree and signed."""
    from .images import boot_loader_files
    from .images.secureboot import secure_boot_problems
    from .loaders import site_arches

    signed_sets = _secure_boot_image_sets(site_inputs)
    arches = site_arches(site_inputs.image_config)
    problems = secure_boot_problems(site_inputs.image_config, {name: images[name] for name in signed_sets
                                                               if name in images})
    if problems:
        raise InputError(problems)
    return [f for image_set in images.values() for f in image_set.files] + \
        list(boot_loader_files(secure_boot=bool(signed_sets) or site_inputs.site.secure_boot, arches=arches,
                               boot_configs=site_inputs.site.boot_configs))


def _secure_boot_image_sets(site_inputs) -> set[str]:
    """The x86-64 image sets of the profiles whose machines boot under Secure Boot (spec.secure_boot)."""
    from .spec import secure_boot

    return {profile.images for profile in site_inputs.profiles.values()
            if profile.images and secure_boot(site_inputs.site, profile).value}


def _resolve(site_inputs, paths: Paths, fetch: bool, progress: bool | None) -> dict:
    """Every image set a profile names (whether or not a node uses it today)."""
    from .images import resolve_images

    return resolve_images(site_inputs.image_config, site_dir=paths.site, cache_dir=paths.cache,
                          needed=_needed_image_sets(site_inputs), fetch=fetch, progress=progress)


def _needed_image_sets(site_inputs) -> set[str]:
    """Every image set a profile names, for x86-64 and arm64 machines."""
    return {name for profile in site_inputs.profiles.values()
            for name in (profile.images, profile.images_arm64) if name}


def build(paths: Paths, *, fetch: bool = True, progress: bool | None = None, jobs: int | None = None,
          state: BuildState | None = None, save_state: bool = True, stamps: InputStamps | None = None,
          durable: bool = True) -> BuildResult:
    """Build the tree and switch `paths.out` to it atomically, redoing only what changed.

    A long-running caller (watch) keeps `state` in memory and saves it itself
    when edits pause (`save_state=False`); it may pass the input `stamps` it
    keeps current from file events, and skip flushing the tree to disk before
    the switch (`durable=False`)."""
    check_out_path(paths.out)
    _check_state_dir(paths)
    # One build of the repository at a time, whatever its environment: they share the image cache.
    with build_lock(paths.repository_state, _say_waiting), paused_gc():  # gc: re-enabled while many nodes render
        state = state if state is not None else BuildState.load_stamp(paths.state)
        try:
            result = _build(paths, fetch, progress, jobs, state, save_state, stamps, durable)
        except (LiveTreeChanged, IndexDamaged):  # someone edited the live tree: build every file anew instead
            state.forget()
            result = _build(paths, fetch, progress, jobs, state, save_state, stamps, durable)
    from .releases import build_finished

    build_finished(paths.state)
    return result


def _check_state_dir(paths: Paths) -> None:
    """`.bootgen/` and its cache and trees must be directories (a stray file there is the user's to remove)."""
    for path in (paths.repository_state, paths.cache, paths.state, paths.state / "builds"):
        if os.path.lexists(path) and not path.is_dir():
            shown = os.path.relpath(path)
            raise OutputError(Problem(Location(shown), "is not a directory",
                                      hint=f"bootgen keeps its state there: move it away (`mv {shown} "
                                           f"{shown}.bak`) and build again"))


def _say_waiting() -> None:
    import sys

    print("waiting for another build of this repository to finish", file=sys.stderr, flush=True)


def _build(paths: Paths, fetch: bool, progress: bool | None, jobs: int | None, state: BuildState | None,
           save_state: bool, stamps: InputStamps | None, durable: bool) -> BuildResult:
    started = time.perf_counter()
    check_out_path(paths.out)
    live = live_build_id(paths.out, paths.state)
    secrets_changed = _secrets_changed(paths, state)
    extras = paths.stamp_extras()
    stamp = ""  # the digest of all inputs; watch leaves it to be worked out when it saves the state
    if stamps is None:  # a fresh process: a build with nothing to do stops here
        stamps = _fresh_stamps(paths, state, live)
        stamp = stamps.digest(*extras)
    if stamps.scanned and len(stamps.node_files) != len(stamps.nodes):  # two files for one node: x.yaml, x.yml
        raise InputError(node_file_problems(path for _, path in stamps.node_files))
    state.attempt = (stamps, extras, stamp)  # becomes state.inputs if the build succeeds
    if live is not None and stamp and state.stamp == stamp and live == state.build_id and not secrets_changed:
        token_moved = state.next_token != state.monitor_token
        state.succeeded()
        if token_moved and save_state:  # a first number from a new monitor: the next build need not scan
            state.save_stamp(paths.state)
        write = WriteResult(live, paths.out.resolve(), False, 0, 0)
        return BuildResult(write, len(stamps.nodes), state.files, 0, time.perf_counter() - started)
    _load_state(state, paths, live)
    ctx, placed, key = _prepare_site(paths, stamps, state, fetch, progress)
    work = node_work(state, stamps, key)
    if state.listing is not None and len(work.fresh) < PARALLEL_THRESHOLD:
        # A few nodes changed: render them in memory first, so a build that
        # changes nothing leaves every kept tree alone.
        collected = _Collector()
        outcome = _run_nodes(ctx, work, stamps, key, collected, jobs=1)
        change = _assemble(ctx, outcome, state, placed, key)
        if change.listing.build_id() == live:
            return _unchanged(state, change, outcome, paths, started, save_state)
        with TreeWriter(paths.out, paths.state, state.drift) as writer:
            for artifact in collected.artifacts + change.shared:
                writer.staging.put(artifact)
            return _commit(writer, state, change, outcome, paths, started, save_state, durable)
    with TreeWriter(paths.out, paths.state, state.drift if state.listing is not None else None) as writer:
        outcome = _run_nodes(ctx, work, stamps, key, writer.staging, jobs, sorted_runs=state.listing is None)
        change = _assemble(ctx, outcome, state, placed, key)
        writer.staging.live_hashes = state.shared
        for artifact in change.shared:
            writer.staging.put(artifact)
        return _commit(writer, state, change, outcome, paths, started, save_state, durable)


def _fresh_stamps(paths: Paths, state: BuildState, live: str | None) -> InputStamps:
    """The inputs' stamps for a fresh process: from the node files the monitor says changed
    since the live tree's records were made (bootgen.monitor), else from a scan of nodes/."""
    from . import monitor

    answer = monitor.ask(paths.repository_state, paths.nodes, state.monitor_token)
    state.next_token = answer.token if answer is not None else ""
    if answer is not None and answer.changed is not None and live is not None and live == state.build_id:
        told = InputStamps.of_records(paths.site, paths.nodes, state, paths.state, answer.changed)
        if told is not None:
            return told
    stamps = InputStamps.take(paths.site, paths.nodes)
    if answer is None and len(stamps.nodes) >= monitor.MONITOR_MIN_NODES:
        # Start one for the next builds, and take its first number now: the stamps taken
        # after it are then what its later answers are relative to (one scan more, once).
        answer = monitor.start_and_ask(paths.repository_state, paths.nodes)
        if answer is not None:
            state.next_token = answer.token
            stamps = InputStamps.take(paths.site, paths.nodes)
    return stamps


def warm_up(paths: Paths, state: BuildState, stamps: InputStamps, *, fetch: bool = True) -> None:
    """Load what an edit build needs before the first edit: the node records, the live
    tree's listing, the site and the modules that validate and render (watch calls
    this after a build that had nothing to do, which loads none of them)."""
    _load_state(state, paths, live_build_id(paths.out, paths.state))
    try:
        _prepare_site(paths, stamps, state, fetch, progress=False)
        from .render import ignition  # noqa: F401  (Butane and Ignition, for nodes that use them)
    except BootgenError:
        pass  # the next build reports it


def warm_up_for_fresh_build(paths: Paths, state: BuildState, *, fetch: bool = True) -> None:
    """warm_up with the input stamps a fresh build takes now (bootgen.resident, before its
    first build: its site cache is then keyed as that build's will be)."""
    warm_up(paths, state, _fresh_stamps(paths, state, live_build_id(paths.out, paths.state)), fetch=fetch)


def _load_state(state: BuildState, paths: Paths, live: str | None) -> None:
    """Node records and the live tree's listing, if they describe the live tree."""
    state.load_records(paths.state)
    if live is None or live != state.build_id:  # the live tree is not the one these records describe
        state.forget()
    elif state.records and state.listing is None:
        state.listing = Listing.read(paths.out.resolve())
        if state.listing is None:
            state.forget()


class _Collector:
    """Stands in for the staging tree while nodes render before it is opened."""

    def __init__(self) -> None:
        self.artifacts: list[Artifact] = []
        self.written = self.linked = 0

    def put(self, artifact: Artifact) -> None:
        self.artifacts.append(artifact)


@dataclass
class _Change:
    """A build's result before it is written: the new listing and what differs from the live tree."""

    listing: object  # bootgen.plan.Listing
    changed: set[str] | None  # paths whose bytes differ from the live tree (None: not worked out)
    placed: set[str] | None  # paths this build puts in staging itself (None: all of them)
    shared: list[Artifact]  # files no node owns that this build puts
    shared_hashes: dict[str, str]
    shared_key: str
    placed_files: list[Artifact] = field(default_factory=list)  # images and boot loaders, put again if damaged


def _assemble(ctx, outcome: "_Outcome", state: BuildState, placed: list[Artifact], key: str) -> _Change:
    """Fleet-wide checks, then the new listing: the live one patched, or a new one."""
    deleted = outcome.deleted
    outcome.live_secretive = state.secretive
    _check_claims(outcome, state, deleted)
    shared, shared_hashes, shared_key = _shared_files(ctx, outcome, state, placed, key, deleted)
    shared, shared_hashes = _with_fence(outcome, shared, shared_hashes)
    _check_paths(outcome, state, shared, deleted)
    shared_lines = {a.path: a.listing_lines() for a in shared}
    if state.listing is None:  # every node rendered: a new listing, all of it placed by this build
        runs = outcome.runs + [Listing.of_lines(outcome.lines, consume=True), Listing.of_lines(shared_lines)]
        listing, clashes = Listing.merged(runs)  # a million lines at 100,000 nodes
        if clashes:
            raise RenderError([_collision(_entry_path(a), _entry_producer(a), _entry_producer(b)) for a, b in clashes])
        return _Change(listing, None, None, shared, shared_hashes, shared_key, placed)
    listing, changed = _patch(state, outcome, deleted, shared_lines, shared_hashes)
    placed_paths = set(outcome.lines) | set(shared_lines)
    return _Change(listing, changed, placed_paths, shared, shared_hashes, shared_key, placed)


def _with_fence(outcome: "_Outcome", shared: list[Artifact], hashes: dict) -> tuple[list[Artifact], dict]:
    """Add the nginx fence of the secret-bearing files (bootgen.render.fence) when it changed."""
    from .render.fence import fence_artifact

    fence = fence_artifact(outcome.secretive.values())
    if hashes.get(fence.path) == fence.sha256:
        return shared, hashes
    return [a for a in shared if a.path != fence.path] + [fence], {**hashes, fence.path: fence.sha256}


def _patch(state: BuildState, outcome: "_Outcome", deleted, shared_lines: dict, shared_hashes: dict):
    """The live listing with this build's changes; (listing, paths that differ from the live tree)."""
    listing = state.listing
    upserts = listing.differing({**outcome.lines, **shared_lines})
    kept = set(outcome.lines) | set(shared_hashes)
    before = [path for name in outcome.rendered_names for path in _old_paths(state, name)]
    before += [path for record in deleted for path in record.paths] + list(state.shared)
    removals = {path for path in before if path not in kept}
    return listing.patched(upserts, removals), set(upserts) | removals


def _old_paths(state: BuildState, name: str) -> tuple[str, ...]:
    record = state.records.get(name) if state.records is not None else None
    return record.paths if record is not None else ()


def _check_claims(outcome: "_Outcome", state: BuildState, deleted) -> None:
    """MACs, addresses and host names stay unique: checked against the index of every claim,
    updated for the nodes that changed; on a conflict the full check words the problem."""
    from .load import Reader, check_claims
    from .shards import Overlay

    index = Overlay(state.claims)  # only the claims of the nodes that changed are looked up
    before = outcome.records.base
    for record in [*(before.get(name) for name in outcome.rendered_names), *deleted]:
        for kind, value, node, *_ in record.claims if record is not None else ():
            if index.get((kind, value)) == node:
                index.set((kind, value), None)
    conflict = False
    for name in outcome.rendered_names:
        for kind, value, node, *_ in outcome.by_name[name].claims:
            holder = index.get((kind, value))
            if holder is None:
                index.set((kind, value), node)
            conflict |= holder is not None and holder != node
    reader = Reader(Path.cwd())
    if conflict:
        check_claims([claim for record in outcome.sorted_records() for claim in record.claims], reader)
    # A problem in a layer many nodes share (a profile's password_hash) is reported once.
    problems = list(dict.fromkeys(outcome.problems + reader.problems))
    if problems:
        raise (InputError if outcome.input_problem or reader.problems else RenderError)(problems)
    outcome.claims = index


def _shared_files(ctx, outcome: "_Outcome", state: BuildState, placed: list[Artifact], key: str, deleted):
    """The files no node owns: re-rendered when the site or any node's DHCP hosts changed.

    Returns (artifacts to put, path -> sha256 of all of them, the key they were made for)."""
    from .render import render_site_files

    hosts_changed = any(record.hosts for record in deleted) or any(
        outcome.by_name[name].hosts != getattr(outcome.records.base.get(name), "hosts", ())
        for name in outcome.rendered_names)
    if state.listing is not None and state.shared_key == key and not hosts_changed:
        return [], state.shared, key
    hosts = tuple(host for record in outcome.sorted_records() for host in record.hosts)
    shared = render_site_files(ctx, hosts) + placed
    plan = Plan()
    for artifact in shared:
        plan.add(artifact)
    plan.check()
    artifacts = list(plan.artifacts.values())
    return artifacts, {a.path: a.sha256 for a in artifacts}, key


def _check_paths(outcome: "_Outcome", state: BuildState, shared: list[Artifact], deleted) -> None:
    """No two outputs on one path: among this build's files, and against the live listing
    for paths a node did not have before."""
    problems = list(outcome.path_problems)
    for artifact in shared:
        if artifact.path in outcome.lines:
            problems.append(_collision(artifact.path, producer(artifact), _listed_producer(outcome.lines, artifact.path)))
    listing = state.listing
    if listing is not None:
        redone = set(outcome.rendered_names) | {record.name for record in deleted}
        new = {path for name in outcome.rendered_names
               for path in set(outcome.by_name[name].paths) - set(_old_paths(state, name))}
        for path in sorted(listing.holding(new)):
            owner = listing.node(path)
            if owner is not None and owner not in redone:
                problems.append(_collision(path, _listed_producer(outcome.lines, path),
                                           f"{listing.target(path)} for node '{owner}'"))
    if problems:
        raise RenderError(problems)


def _collision(path: str, first: str, second: str) -> Problem:
    return Problem(Location(path), f"two outputs claim this path: {first} and {second}",
                   hint="file names come from MACs, addresses and node names; make them unique")


def _listed_producer(lines: dict, path: str) -> str:
    return _entry_producer(lines[path][0])


def _entry_producer(entry: bytes) -> str:
    fields = json.loads(entry)
    return f"{fields['target']} for node '{fields['node']}'" if fields["node"] else fields["target"]


def _entry_path(entry: bytes) -> str:
    return json.loads(entry)["path"]


def _commit(writer: TreeWriter, state: BuildState, change: _Change, outcome: "_Outcome",
            paths: Paths, started: float, save_state: bool, durable: bool) -> BuildResult:
    staging = writer.staging
    if staging.live is not None and not staging.recycled and change.placed is not None:
        _fill_from_live(staging, change, outcome)
    write = writer.commit(change.listing, change.changed or set(), change.placed or set(),
                          outcome.written + staging.written, outcome.linked + staging.linked, durable=durable,
                          private=secret_paths(outcome))
    parent = state.build_id
    if write.changed:
        prepare_next(paths.out, paths.state, write.build_id, len(change.listing), paths.repository_state)
        _record(paths, write.build_id, parent, change, outcome, git=durable)
    _adopt(state, change, outcome)
    state.files, state.listing = len(change.listing), change.listing
    if write.changed:
        state.remember(write.build_id, parent, change.changed)
    if save_state:
        state.save(paths.state)
    return BuildResult(write, len(state.records), len(change.listing), outcome.rendered,
                       time.perf_counter() - started)


def _record(paths: Paths, build_id: str, parent: str | None, change: _Change, outcome: "_Outcome", git: bool) -> None:
    """The release record of a tree just switched to (`bootgen releases`); watch builds skip asking Git."""
    from .releases import record_release

    record_release(paths.state, build_id, env=paths.env, base_url=outcome.job[0].inputs.site.base_url,
                   parent=parent, changed=change.changed, rendered=outcome.rendered_names,
                   files=len(change.listing), site_dir=paths.site, nodes_dir=paths.nodes, git=git)


def secret_paths(outcome: "_Outcome") -> set[str]:
    """Every secret-bearing file of the new tree (rendered now or reused with its record), and the
    nginx fence that names them."""
    from .plan import FENCE

    paths = {path for record in outcome.secretive.values() for path in record.secret_paths}
    return paths | {FENCE} if paths else paths


def _fill_from_live(staging: Staging, change: _Change, outcome: "_Outcome") -> None:
    """A new staging tree gets every unchanged file as a hard link to the live tree's.

    A node whose file is missing there (someone damaged the live tree) is
    rendered again: same inputs, same bytes."""
    missing = staging.link_all_live([path for path in change.listing.paths() if path not in change.placed])
    owners = {change.listing.node(path) for path in missing}
    if None in owners:  # a shared file, image or boot loader: made again from the site and the cache
        _put_shared_again(staging, change, outcome, [path for path in missing if change.listing.node(path) is None])
        owners.discard(None)
    for name in sorted(owners):
        _render_fresh(outcome.job, outcome.job[1].file_of(name), staging)
        outcome.rendered += 1


def _put_shared_again(staging: Staging, change: _Change, outcome: "_Outcome", paths: list[str]) -> None:
    from .render import render_site_files

    ctx = outcome.job[0]
    hosts = tuple(host for record in outcome.sorted_records() for host in record.hosts)
    fresh = {artifact.path: artifact for artifact in render_site_files(ctx, hosts) + change.placed_files}
    for path in paths:
        if path not in fresh:
            raise OutputError(Problem(Location(path), "missing or changed in the live tree",
                                      hint="delete .bootgen/stamp and build again"))
        staging.put(fresh[path])


def _unchanged(state: BuildState, change: _Change, outcome: "_Outcome", paths: Paths, started: float,
               save_state: bool) -> BuildResult:
    """The inputs changed but not the output (an edit and its undo): only the state moves."""
    _adopt(state, change, outcome)
    if save_state:
        state.save(paths.state)
    write = WriteResult(state.build_id, paths.out.resolve(), False, 0, 0)
    return BuildResult(write, len(state.records), len(change.listing), outcome.rendered,
                       time.perf_counter() - started)


def _adopt(state: BuildState, change: _Change, outcome: "_Outcome") -> None:
    """The build succeeded: its inputs, records, claims and shared files now describe the live tree."""
    state.succeeded()
    state.adopt_records(outcome.records, outcome.claims)
    state.shared, state.shared_key = change.shared_hashes, change.shared_key
    state.secret_refs = _secret_refs(outcome)
    from .secrets import stamp_digest

    state.secrets_digest = stamp_digest(outcome.job[0].inputs.site.directory, state.secret_refs)


def _secrets_changed(paths: Paths, state: BuildState) -> bool:
    """Whether a value behind a reference the live tree was built from changed (a secret rotated,
    a variable or a command's output): then every node is rendered again. Only the references
    and a keyed digest of their values are stored (see bootgen.secrets.stamp_digest)."""
    from .incremental import saved_secret_refs
    from .secrets import stamp_digest

    refs, digest = saved_secret_refs(paths.state)
    if not refs or stamp_digest(paths.site, refs) == digest:
        return False
    state.forget()
    state.site_cache = None
    return True


def _secret_refs(outcome: "_Outcome") -> tuple:
    """Every reference of the site, its profiles, their Butane files and the nodes."""
    inputs = outcome.job[0].inputs
    docs = [inputs.site.doc] + [profile.doc for profile in inputs.profiles.values()]
    docs += [layer.doc for layers in inputs.profile_layers.values() for layer in layers]
    refs = {_ref_key(ref) for doc in docs for ref in doc.secret_refs.values()}
    refs.update(ref for record in outcome.secretive.values() for ref in record.secret_refs)
    return tuple(sorted(refs, key=repr))


def _prepare_site(paths: Paths, stamps: InputStamps, state: BuildState, fetch: bool, progress: bool | None):
    """Load the site and profiles, resolve images and loaders: once per change of any file under
    site/ (watch keeps it). Profiles are part of the key: they are parsed and checked here."""
    cache_key = (stamps.site, stamps.profiles)
    if state.site_cache is not None and state.site_cache[0] == cache_key:
        return state.site_cache[1]
    from .load import Reader, load_site_with_nodes
    from .render import make_context, placed_artifact
    from .render.targets import mixed_secure_boot

    site_inputs = load_site_with_nodes(paths.site, paths.nodes, Reader(Path.cwd()), env=paths.env,
                                       base_url=paths.base_url)
    images = _resolve(site_inputs, paths, fetch, progress)
    placed = [placed_artifact(f) for f in _placed_files(images, site_inputs)]
    # The dnsmasq answers also depend on whether a profile's secure_boot differs from the site's.
    key = site_key(stamps, sorted(images.items()), [(a.path, a.sha256) for a in placed], site_inputs.site.base_url,
                   mixed_secure_boot(site_inputs))
    prepared = (make_context(site_inputs, images, Path.cwd(), paths.cache / "templates"), placed, key)
    state.site_cache = (cache_key, prepared)
    return prepared


@dataclass
class _Outcome:
    """Node work: every node's record, and the listing lines of the nodes rendered."""

    by_name: dict  # node name -> record made by this build
    problems: list = field(default_factory=list)
    input_problem: bool = False
    rendered: int = 0
    written: int = 0
    linked: int = 0
    lines: dict = field(default_factory=dict)  # path -> (manifest entry, SHA256SUMS line), rendered nodes
    path_problems: list = field(default_factory=list)  # two rendered nodes on one path
    rendered_names: list = field(default_factory=list)
    runs: list = field(default_factory=list)  # sorted Listings of workers' lines, in the parent (see _run_nodes)
    claims: object = None  # Overlay of (kind, value) -> node name, once checked
    job: tuple = ()  # (render context, input stamps, site key), in the parent process only
    # In the parent process only: every node's record (the live ones with this build's on top),
    # the records of the nodes whose files are gone, and the live records that hold secrets.
    records: object = None  # bootgen.shards.Overlay
    deleted: list = field(default_factory=list)
    live_secretive: dict = field(default_factory=dict)

    def sorted_records(self) -> list[NodeRecord]:
        """Every node's record, in name order (reads every shard of the records)."""
        return [self.records[name] for name in sorted(self.records)]

    @property
    def secretive(self) -> dict:
        """name -> record of the nodes with secret references or secret-bearing files, without
        reading every record: the live ones, updated with this build's."""
        found = dict(self.live_secretive)
        for name, record in self.records.changes.items():
            if record is not None and record.secretive:
                found[name] = record
            else:
                found.pop(name, None)
        return found

    def add_rendered(self, record: NodeRecord, lines: dict) -> None:
        self.by_name[record.name] = record
        self.rendered += 1
        self.rendered_names.append(record.name)
        self._add_lines(lines)

    def _add_lines(self, lines: dict) -> None:
        for path, pair in lines.items():
            if path in self.lines:
                self.path_problems.append(_collision(path, _listed_producer(self.lines, path),
                                                     _listed_producer(lines, path)))
                continue
            self.lines[path] = pair

    def merge(self, other: "_Outcome") -> None:
        self.by_name.update(other.by_name)
        self.problems += other.problems
        self.input_problem |= other.input_problem
        self.rendered += other.rendered
        self.written += other.written
        self.linked += other.linked
        self.rendered_names += other.rendered_names
        self.path_problems += other.path_problems
        self._add_lines(other.lines)


# Node work runs in this process or in forked workers, which inherit these.
_WORKER: dict = {}


def _run_nodes(ctx, work: NodeWork, stamps, key, staging, jobs: int | None, sorted_runs: bool = False) -> _Outcome:
    """Render the fresh nodes of `work`, on every core if there are many.

    With `sorted_runs` (a build from scratch), each worker's listing lines are
    sorted into a run of chunks as they arrive, to be merged at the end: a
    million lines are never held as separate objects at once (and, from
    PACKED_LISTING_NODES nodes on, are held compressed)."""
    jobs = jobs or (os.cpu_count() or 1)
    fresh = work.fresh
    _WORKER.update(job=(ctx, stamps, key), staging=staging)
    try:
        if len(fresh) < PARALLEL_THRESHOLD or jobs <= 1:
            with _collecting_gc() if len(fresh) >= PARALLEL_THRESHOLD else contextlib.nullcontext():
                outcome = _process(fresh)
            outcome.written = outcome.linked = 0  # counted by `staging` itself, in this process
        else:
            packed = len(fresh) >= PACKED_LISTING_NODES
            tasks = max(jobs * 4, -(-len(fresh) // TASK_NODES))
            staging.tracked = False  # the workers' writes are not seen here: the commit flushes everything
            outcome = _Outcome({})
            with _frozen_heap(), _collecting_gc(), _worker_pool(jobs) as pool:
                for part in _results(pool, (fresh[i::tasks] for i in range(tasks)), queued=2 * jobs):
                    _share_stats(part, stamps)
                    if sorted_runs:
                        outcome.runs.append(Listing.of_lines(part.lines, consume=True, packed=packed))
                    outcome.merge(part)
    finally:
        _WORKER.clear()
    for name, record in outcome.by_name.items():
        work.records.set(name, record)
    outcome.records, outcome.deleted = work.records, work.deleted
    outcome.job = (ctx, stamps, key)
    return outcome


def _share_stats(part: _Outcome, stamps) -> None:
    """A worker's records carry copies of their node files' stats, which the input stamps here
    hold already: keep those instead (a tuple of three ints less per node in memory)."""
    held = stamps.nodes
    for name, record in part.by_name.items():
        stat = held.get(name)
        if stat == record.stat:
            part.by_name[name] = record._replace(stat=stat)


@contextlib.contextmanager
def _frozen_heap():
    """Every object made so far out of the collector's sight while the workers run: a forked
    worker that collects would otherwise touch, and so copy, the whole heap it shares with
    this process (the input stamps of a million nodes, say)."""
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


@contextlib.contextmanager
def _worker_pool(jobs: int):
    """Forked render workers. An executor, not multiprocessing.Pool: when a worker dies mid-task
    (killed by the OOM killer, say) the Pool starts another and waits for the lost task forever;
    the executor fails every pending task with BrokenProcessPool instead."""
    import multiprocessing  # only a build that renders many nodes forks
    from concurrent.futures import ProcessPoolExecutor

    pool = ProcessPoolExecutor(jobs, multiprocessing.get_context("fork"), initializer=_die_with_parent)
    try:
        yield pool
    except BaseException:
        # Ctrl-C or a failure: stop the workers now rather than let them finish their chunks.
        workers = list((getattr(pool, "_processes", None) or {}).values())
        pool.shutdown(wait=False, cancel_futures=True)
        for worker in workers:
            worker.terminate()
        raise
    else:
        pool.shutdown(wait=True)


def _results(pool, tasks, queued: int):
    """Each task's outcome as it is done, let go of once taken (the pool holds no finished
    outcome); a worker that died is a build failure with a reason. At most `queued` tasks
    are submitted at once, so pickled tasks and outcomes do not pile up."""
    from concurrent.futures import FIRST_COMPLETED, wait
    from concurrent.futures.process import BrokenProcessPool

    tasks = iter(tasks)
    pending = set()
    try:
        while True:
            for task in tasks:
                pending.add(pool.submit(_process, task))
                if len(pending) >= queued:
                    break
            if not pending:
                return
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            for future in done:
                yield future.result()
            del done, future
    except BrokenProcessPool:
        raise OutputError(Problem(Location("build"), "a render worker died before finishing its nodes "
                                  "(killed, or out of memory); nothing was switched",
                                  hint="run the build again; if it recurs, look for the OOM killer in `dmesg`")) from None


def _die_with_parent() -> None:
    """Workers end with the build: a build killed with SIGKILL leaves no orphan to print tracebacks."""
    import ctypes
    import signal

    PR_SET_PDEATHSIG = 1
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
    except (OSError, AttributeError):  # not Linux: the pool's own shutdown still applies
        pass
    if os.getppid() == 1:  # the parent died before prctl took effect
        os._exit(1)
    # The pool stops its workers with SIGTERM. A handler inherited from the process that forked
    # them (a host program's, or `watch`'s) runs only between bytecodes, so a worker blocked in C
    # would outlive it and the build would wait for that worker forever.
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the build's to handle, once


@contextlib.contextmanager
def _collecting_gc():
    """Garbage collection on while thousands of nodes render (templates leave cycles behind)."""
    gc.enable()
    try:
        yield
    finally:
        gc.disable()


def _process(fresh: list[tuple[str, str]]) -> _Outcome:
    """Render each (node name, file) of `fresh`, placing its files in `staging`."""
    staging = _WORKER["staging"]
    outcome = _Outcome({})
    before_written, before_linked = staging.written, staging.linked
    for _, path in fresh:
        try:
            record, lines = _render_fresh(_WORKER["job"], path, staging)
        except InputError as exc:
            outcome.problems += exc.problems
            outcome.input_problem = True
            continue
        except RenderError as exc:
            outcome.problems += exc.problems
            continue
        outcome.add_rendered(record, lines)
    outcome.written += staging.written - before_written
    outcome.linked += staging.linked - before_linked
    return outcome


def _render_fresh(job: tuple, path: str, staging) -> tuple[NodeRecord, dict]:
    """Read, check and render one node into `staging`; its record and listing lines."""
    from .load import Reader, load_node, node_claims
    from .render import node_hosts, render_node

    ctx, stamps, key = job
    reader = Reader(Path.cwd())
    node = load_node(Path(path), ctx.inputs, reader)
    if node is None:
        raise InputError(reader.problems)
    artifacts = render_node(ctx, node)
    for artifact in artifacts:
        staging.put(artifact)
    record = NodeRecord.make(
        name=node.name, stat=stamps.nodes.get(node.name), profile=node.profile,
        profile_stat=stamps.profiles.get(node.profile), site_key=key, claims=tuple(map(tuple, node_claims(node))),
        hosts=node_hosts(node, ctx.inputs), paths=tuple(a.path for a in artifacts),
        secret_refs=tuple(sorted(map(_ref_key, node.doc.secret_refs.values()))),
        secret_paths=secret_bearing(ctx, node, artifacts), file=os.path.basename(path))
    return record, {a.path: a.listing_lines() for a in artifacts}


def _ref_key(ref: tuple) -> tuple:
    kind, argument = ref
    return kind, tuple(argument) if isinstance(argument, list) else argument


def secret_bearing(ctx, node, artifacts) -> tuple[str, ...]:
    """The node's files that carry a secret: those in its private config directory (their bytes may
    hold a value compressed), and any other whose bytes hold a known value in some encoding."""
    from .render import node_spec
    from .render.osconfig import config_dir_name
    from .secrets import carries_secret, known

    if not known():
        return ()
    private = f"configs/{config_dir_name(ctx, node_spec(ctx, node))}/"
    private = private if private != f"configs/{node.name}/" else None
    return tuple(a.path for a in artifacts
                 if (private and a.path.startswith(private)) or carries_secret(a.data))


def fetch_images(paths: Paths, *, progress: bool | None = None) -> tuple[int, int]:
    """Fetch and verify every mirrored image set the site declares; (mirrored, referenced) counts."""
    from .load import Reader, load_site

    with build_lock(paths.repository_state, _say_waiting):  # one writer of the image cache at a time
        site_inputs = load_site(paths.site, paths.nodes, Reader(Path.cwd()))
        sets = site_inputs.image_config.images
        _fetch_all(site_inputs, paths, sets, progress)
    mirrored = sum(1 for image_set in sets.values() if image_set.mirror)
    return mirrored, len(sets) - mirrored


def _fetch_all(site_inputs, paths: Paths, sets: dict, progress: bool | None) -> None:
    from .images import resolve_images

    resolve_images(site_inputs.image_config, site_dir=paths.site, cache_dir=paths.cache,
                   needed=set(sets), fetch=True, progress=progress)
