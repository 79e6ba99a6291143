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

import multiprocessing
from concurrent.futures import ThreadPoolExecutor
import os
import time
from dataclasses import dataclass
from pathlib import Path

from .errors import InputError, RenderError
from .incremental import BuildState, InputStamps, NodeRecord, site_key
from .plan import Artifact, Plan
from .write import Staging, TreeWriter, WriteResult, check_out_path, live_build_id

# Loading, rendering and images pull in jsonschema, Jinja2, python-gnupg and
# urllib3 (about 0.4 s of imports): they are imported where first needed, so a
# build with nothing to do answers at once.

PARALLEL_THRESHOLD = 400  # below this many nodes to render, forking costs more than it saves


@dataclass(frozen=True)
class Paths:
    site: Path
    nodes: Path
    out: Path

    @property
    def state(self) -> Path:
        """Build history, state and the image cache live beside the output link."""
        return self.out.absolute().parent / ".bootgen"


@dataclass(frozen=True)
class BuildResult:
    write: WriteResult
    nodes: int
    files: int
    rendered: int  # nodes read and rendered (the others were unchanged)
    seconds: float

    def summary(self) -> str:
        if not self.write.changed:
            return f"{self.files} files for {self.nodes} nodes: unchanged (build {self.write.build_id[:12]})"
        return (f"{self.files} files for {self.nodes} nodes -> build {self.write.build_id[:12]} "
                f"({self.rendered} nodes rendered, {self.write.written} files written, "
                f"{self.write.linked} linked) in {self.seconds:.2f}s")


def plan_build(paths: Paths, *, fetch: bool = True, progress: bool | None = None) -> tuple:
    """Everything short of writing, from scratch: the validated inputs and the full plan."""
    from .load import load_inputs
    from .render import render

    inputs = load_inputs(paths.site, paths.nodes)
    images = _resolve(inputs, paths, fetch, progress)
    return inputs, render(inputs, images, display_root=Path.cwd(), extra_files=_placed_files(images))


def _placed_files(images: dict) -> list:
    """Image and boot loader files to link into the tree (bootgen.images.PlacedFile)."""
    from .images import boot_loader_files

    return [f for image_set in images.values() for f in image_set.files] + list(boot_loader_files())


def _resolve(site_inputs, paths: Paths, fetch: bool, progress: bool | None) -> dict:
    """Every image set a profile names (whether or not a node uses it today)."""
    from .images import resolve_images

    needed = {profile.images for profile in site_inputs.profiles.values()}
    return resolve_images(site_inputs.image_config, site_dir=paths.site, cache_dir=paths.state / "cache",
                          needed=needed, fetch=fetch, progress=progress)


def build(paths: Paths, *, fetch: bool = True, progress: bool | None = None, jobs: int | None = None,
          state: BuildState | None = None, save_state: bool = True) -> BuildResult:
    """Build the tree and switch `paths.out` to it atomically, redoing only what changed.

    `state` lets a long-running caller (watch) keep the build state in memory;
    it then saves it itself, when edits pause (`save_state=False`)."""
    started = time.perf_counter()
    check_out_path(paths.out)
    stamps = InputStamps.take(paths.site, paths.nodes)
    state = state if state is not None else BuildState.load_stamp(paths.state)
    stamp = stamps.digest(str(paths.site.resolve()), str(paths.nodes.resolve()))
    live = live_build_id(paths.out)
    if live is not None and state.stamp == stamp and live == state.build_id:
        write = WriteResult(live, paths.out.resolve(), False, 0, 0)
        return BuildResult(write, len(stamps.nodes), state.files, 0, time.perf_counter() - started)
    state.load_records(paths.state)
    if live != state.build_id:  # the live tree is not the one these records describe
        state.records, state.shared = {}, {}
    ctx, placed, key = _prepare_site(paths, stamps, state, fetch, progress)
    with TreeWriter(paths.out, paths.state) as writer:
        from .load import node_files

        work = [(path, _reusable(state, stamps, path, key)) for path in node_files(paths.nodes)]
        outcome = _run_nodes(ctx, work, stamps, key, writer.staging, jobs)
        plan = _finish_plan(ctx, outcome, placed)
        writer.staging.live_hashes = state.shared
        written, linked = _place_shared_files(plan, writer.staging)
        write = writer.commit(plan.manifest(), outcome.written + written, outcome.linked + linked)
        state.stamp, state.build_id, state.files = stamp, write.build_id, len(plan.artifacts)
        state.shared = {a.path: a.sha256 for a in plan.artifacts.values() if a.node is None}
        state.records = {record.name: record for record in outcome.records}
        state.save(paths.state)
    return BuildResult(write, len(outcome.records), len(plan.artifacts), outcome.rendered,
                       time.perf_counter() - started)


def _prepare_site(paths: Paths, stamps: InputStamps, state: BuildState, fetch: bool, progress: bool | None):
    """Load the site, resolve images and loaders: once per change of site files (watch keeps it)."""
    if state.site_cache is not None and state.site_cache[0] == stamps.site:
        return state.site_cache[1]
    from .load import Reader, load_site
    from .render import make_context, placed_artifact

    site_inputs = load_site(paths.site, paths.nodes, Reader(Path.cwd()))
    images = _resolve(site_inputs, paths, fetch, progress)
    placed = [placed_artifact(f) for f in _placed_files(images)]
    key = site_key(stamps, sorted(images.items()), [(a.path, a.sha256) for a in placed])
    prepared = (make_context(site_inputs, images, Path.cwd()), placed, key)
    state.site_cache = (stamps.site, prepared)
    return prepared


def _place_shared_files(plan: Plan, staging: Staging) -> tuple[int, int]:
    """Put the files no node owns (node files are in staging already); (written, linked) counts."""
    written, linked = staging.written, staging.linked
    for artifact in plan.artifacts.values():
        if artifact.node is None:
            staging.put(artifact)
    return staging.written - written, staging.linked - linked


def _reusable(state: BuildState, stamps: InputStamps, path: Path, key: str) -> NodeRecord | None:
    record = state.records.get(path.stem)
    return record if record is not None and record.reusable(stamps, key) else None


@dataclass
class _Outcome:
    records: list[NodeRecord]
    problems: list
    input_problem: bool
    rendered: int = 0
    written: int = 0
    linked: int = 0

    def merge(self, other: "_Outcome") -> None:
        self.records += other.records
        self.problems += other.problems
        self.input_problem |= other.input_problem
        self.rendered += other.rendered
        self.written += other.written
        self.linked += other.linked


def _finish_plan(ctx, outcome: _Outcome, placed: list[Artifact]) -> Plan:
    """Fleet-wide checks, then every artifact (node files as metadata only) in one plan."""
    from .load import Reader, check_claims
    from .render import render_site_files

    reader = Reader(Path.cwd())
    outcome.records.sort(key=lambda r: r.name)
    check_claims([claim for record in outcome.records for claim in record.claims], reader)
    problems = outcome.problems + reader.problems
    if problems:
        raise (InputError if outcome.input_problem or reader.problems else RenderError)(problems)
    plan = Plan()
    for record in outcome.records:
        for path, sha256, size, immutable, target in record.files:
            plan.add(Artifact(path, sha256, size, immutable, record.name, target))
    hosts = tuple(host for record in outcome.records for host in record.hosts)
    for artifact in render_site_files(ctx, hosts) + placed:
        plan.add(artifact)
    plan.check()
    return plan


# Node work runs in this process or in forked workers, which inherit these.
_WORKER: dict = {}


def _run_nodes(ctx, work, stamps, key, staging: Staging, jobs: int | None) -> _Outcome:
    fresh = sum(1 for _, record in work if record is None)
    jobs = jobs or (os.cpu_count() or 1)
    _WORKER.update(ctx=ctx, stamps=stamps, key=key, staging=staging)
    try:
        if jobs <= 1 or fresh < PARALLEL_THRESHOLD:
            return _process(work)
        chunks = [work[i::jobs * 4] for i in range(jobs * 4)]
        outcome = _Outcome([], [], False)
        with multiprocessing.get_context("fork").Pool(jobs) as pool:
            for part in pool.imap_unordered(_process, chunks):
                outcome.merge(part)
        return outcome
    finally:
        _WORKER.clear()


def _process(work) -> _Outcome:
    """Reuse or render each node of `work`, placing its files in the staging tree."""
    ctx, stamps, key, staging = _WORKER["ctx"], _WORKER["stamps"], _WORKER["key"], _WORKER["staging"]
    outcome = _Outcome([], [], False)
    reused, to_render = _relink_all([record for _, record in work if record is not None], staging)
    outcome.records += reused
    outcome.linked += sum(len(record.files) for record in reused)
    paths = [path for path, record in work if record is None or record.name in to_render]
    before_written, before_linked = staging.written, staging.linked
    for path in paths:
        try:
            fresh = _render_fresh(ctx, path, stamps, key, staging)
        except InputError as exc:
            outcome.problems += exc.problems
            outcome.input_problem = True
            continue
        except RenderError as exc:
            outcome.problems += exc.problems
            continue
        outcome.records.append(fresh)
        outcome.rendered += 1
    outcome.written += staging.written - before_written
    outcome.linked += staging.linked - before_linked
    return outcome


RELINK_THREADS = 4  # link(2) and mkdir(2) release the GIL; the kernel work overlaps


def _relink_all(records: list[NodeRecord], staging: Staging) -> tuple[list[NodeRecord], set[str]]:
    """Link unchanged nodes' files from the live tree; (records reused, names to render again)."""
    if staging.live is None:
        return [], {record.name for record in records}
    chunks = [records[i::RELINK_THREADS] for i in range(RELINK_THREADS)] if len(records) > 200 else [records]
    with ThreadPoolExecutor(len(chunks)) as pool:
        results = list(pool.map(lambda chunk: [(r, _relink(r, staging)) for r in chunk], chunks))
    pairs = [pair for result in results for pair in result]
    return [r for r, ok in pairs if ok], {r.name for r, ok in pairs if not ok}


def _relink(record: NodeRecord, staging: Staging) -> bool:
    """Link an unchanged node's files from the live tree; False if one is missing there."""
    live = staging.live
    return all(staging.link(path, os.path.join(live, path), sha256) for path, sha256, *_ in record.files)


def _render_fresh(ctx, path: Path, stamps: InputStamps, key: str, staging: Staging) -> NodeRecord:
    from .load import Reader, load_node, node_claims
    from .render import node_hosts, render_node

    reader = Reader(Path.cwd())
    node = load_node(path, ctx.inputs, reader)
    if node is None:
        raise InputError(reader.problems)
    artifacts = render_node(ctx, node)
    for artifact in artifacts:
        staging.put(artifact)
    return NodeRecord(
        name=node.name, stat=stamps.nodes.get(node.name), profile=node.profile,
        profile_stat=stamps.profiles.get(node.profile), site_key=key, claims=tuple(map(tuple, node_claims(node))),
        hosts=node_hosts(node),
        files=tuple((a.path, a.sha256, a.size, a.immutable, a.target) for a in artifacts))


def fetch_images(paths: Paths, *, progress: bool | None = None) -> tuple[int, int]:
    """Fetch and verify every mirrored image set the site declares; (mirrored, referenced) counts."""
    from .images import resolve_images
    from .load import Reader, load_site

    site_inputs = load_site(paths.site, paths.nodes, Reader(Path.cwd()))
    sets = site_inputs.image_config.images
    resolve_images(site_inputs.image_config, site_dir=paths.site, cache_dir=paths.state / "cache",
                   needed=set(sets), fetch=True, progress=progress)
    mirrored = sum(1 for image_set in sets.values() if image_set.mirror)
    return mirrored, len(sets) - mirrored
