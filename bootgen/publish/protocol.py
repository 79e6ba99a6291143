"""The publish protocol: what goes to a destination and in which order, over any `Store`.

A destination keeps published builds ("releases") and serves one of them, the
live one. Its index is the tree's root `manifest.json` plus the pages the root
names and the shards they name (`bootgen.publish.index`). A publish compares the
local root with the live one page by page, then shard by shard within the pages
that differ, so it reads and writes only what changed:

1. content-addressed objects (`immutable`) the destination lacks;
2. entry points that differ (they may now name the objects from step 1);
3. the index: new shards, then new pages (they name the shards), then the
   archive copy of the root (for --prune);
4. the switch: the root `manifest.json` (a bucket) or the `current` link (a docroot);
5. deletion of entry points the new build dropped (safe only now: before the
   switch the live root still names them);
6. the history of completed publishes, oldest first (marks the publish complete);
7. retention: --prune on a bucket, the last `keep` releases of a docroot.

A publish killed at any point leaves the previous build served (or the new one,
complete), and the same command run again finishes it: it finds what the
killed run wrote (`Store.present`) and does not write it twice. A publish with
nothing to do reads the live root and the history, and nothing of the local
tree beyond its root.

Every byte that leaves the machine is first checked against the listing (size
and sha256), all of it before the first write, so a corrupted tree is never
published; files the destination already has are not read at all.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Iterable

from bootgen.errors import Location, Problem, PublishError
from bootgen.plan import is_page_path
from bootgen.publish.index import Index, ShardReader
from bootgen.publish.manifest import MANIFEST, FileEntry, verify_file
from bootgen.publish.progress import NullProgress, Progress
from bootgen.publish.report import Action, PublishReport

INDEX_LENGTH = 100  # build ids a destination remembers; retention only ever needs the last K


class Store(ABC):
    """Where releases are kept: the few operations the protocol needs from a destination.

    Reads return None for what does not exist. Writes are called in the
    protocol's order and must be durable when they return; `upload` may be
    called from several threads at once. A new target (GCS, Azure, an rsync
    host) is one module implementing this class (see bootgen/publish/stores/).
    """

    destination: str  # as the user wrote it, for messages and the report
    upload_verb = "upload"  # how the report names a file sent to the destination
    whole_releases = False  # True: each release is a complete directory; unchanged files are carried into it
    fences_secrets = False  # True: secret-bearing files are served to their node only (no --allow-secrets)

    # -- reading -----------------------------------------------------------------
    @abstractmethod
    def live_root(self) -> bytes | None:
        """The root manifest.json being served."""

    @abstractmethod
    def history(self) -> tuple[str, ...]:
        """Build ids of completed publishes, oldest first."""

    @abstractmethod
    def archived_root(self, build_id: str) -> bytes | None:
        """The full root kept for a published build (the archive copy)."""

    @abstractmethod
    def shard(self, build_id: str | None, shard_id: str) -> bytes | None:
        """The bytes of `index/<shard_id>.json` of a published build (None: the live one): a shard,
        or a page when `shard_id` is a page's id and PAGE_SUFFIX (both are content-addressed)."""

    def has_release(self, build_id: str) -> bool:
        """A complete release of this build is kept, so publishing it is only a switch."""
        return False

    def present(self, entries: list[FileEntry], tree: Path, known: int) -> set[str]:
        """Paths among `entries` already complete at the destination (left by a killed publish).
        `known` is how many files the live release lists (to choose between lookups and a listing)."""
        return set()

    # -- writing, in the protocol's order ----------------------------------------
    def begin(self, build_id: str) -> None:
        """Start writing the release `build_id`."""

    def carry(self, paths: list[str], build_id: str) -> None:
        """Put files of the kept release `build_id` into the new one unchanged (whole_releases only)."""

    @abstractmethod
    def upload(self, entry: FileEntry, source: Path, progress: Progress) -> None:
        """Write one file of the tree at its path."""

    @abstractmethod
    def put_index(self, path: str, source: Path, private: bool) -> None:
        """Write one index file (a shard) of the new release; `private` ones are never served."""

    @abstractmethod
    def archive(self, build_id: str, root: bytes, private: bool) -> None:
        """Keep the root of the new release where retention finds it; a `private` root is the full
        one of a tree with secret-bearing files (the served root leaves them out)."""

    @abstractmethod
    def switch(self, build_id: str, root: bytes) -> None:
        """Make the new release the served one, atomically: `root` is its public manifest.json."""

    def delete(self, paths: list[str]) -> None:
        """Remove files the new release dropped (after the switch)."""

    @abstractmethod
    def record(self, history: tuple[str, ...]) -> None:
        """Write the history of completed publishes."""

    @abstractmethod
    def retain(self, kept: tuple[str, ...], referenced: Callable[[], set[str]], dry_run: bool) -> list[Action]:
        """Delete what no kept release needs; `referenced()` gives every path the kept releases list."""

    def requests(self) -> int:
        """Requests made so far (0 for a local store)."""
        return 0


@dataclass(frozen=True)
class Options:
    dry_run: bool = False
    prune: bool = False  # retention for stores that share files between releases (a bucket)
    keep: int = 3
    jobs: int = 8
    progress: Progress = NullProgress()


@dataclass(frozen=True)
class Remote:
    """What the destination says about itself before anything is written."""

    served: bytes | None  # the root being served, exact bytes
    history: tuple[str, ...]
    live: Index | None = None  # the served release's listing (the full one when secrets are published)
    public: Index | None = None  # the served release's public listing
    previous: Index | None = None  # the last completed publish when it is not the live one


@dataclass
class Plan:
    """Everything the publish writes or deletes, in order."""

    stage: bool = False  # write a new release (then switch to it)
    switch: bool = False
    record: bool = False
    carried: list[tuple[str, int, str]] = field(default_factory=list)  # path, size, release it comes from
    uploads: list[FileEntry] = field(default_factory=list)  # objects first, then entry points
    index: list[tuple[str, Path, bool]] = field(default_factory=list)  # index file, local source, private
    stale: list[str] = field(default_factory=list)


def publish_listing(store: Store, tree: Path, listing: Index, served: Index, options: Options,
                    local_shards: ShardReader = lambda _id: None) -> PublishReport:
    """Publish `listing` (the files to send, read from `tree`) with `served` as its public index.

    `served` is `listing` unless the tree has secret-bearing files sent too: then
    `listing` is the full one and `served` the public one (what manifest.json says).
    `local_shards` finds shards of published builds on this machine before the store is asked."""
    store = _LocalFirst(store, local_shards)
    remote = Remote(store.live_root(), store.history())
    switched = _switched(store, listing, served, remote)
    noop = switched and remote.history[-1:] == (listing.build_id,)
    if noop:
        plan = Plan()
    elif switched:  # by a publish killed before it finished: what remains is after the switch
        plan = Plan(record=True, stale=_stale(listing, served, _read_remote(store, listing, remote)))
    else:
        plan = _plan(store, tree, listing, served, _read_remote(store, listing, remote), options)
    _verify(tree, plan.uploads, options.jobs)
    actions = _describe(store, plan, served)
    if not options.dry_run:
        _apply(store, tree, listing, served, plan, options, remote.history)
    history = _new_history(remote.history, listing.build_id) if plan.record else remote.history
    if options.prune or (store.whole_releases and not noop):
        actions += _retain(store, listing, history, options)
    sent = [a for a in actions if a.verb == store.upload_verb]
    return PublishReport(store.destination, listing.build_id, uploaded=len(sent),
                         skipped=listing.file_count - len(plan.uploads), deleted=sum(a.verb == "delete" for a in actions),
                         requests=store.requests(), bytes=sum(a.size for a in sent), dry_run=options.dry_run,
                         actions=tuple(actions))


# -- reading -------------------------------------------------------------------
class _LocalFirst:
    """The store, with shards read from this machine when it holds them (same id, same bytes)."""

    def __init__(self, store: Store, local_shards: ShardReader):
        self._store, self._local = store, local_shards

    def __getattr__(self, name):
        return getattr(self._store, name)

    def shard(self, build_id: str | None, shard_id: str) -> bytes | None:
        return self._local(shard_id) or self._store.shard(build_id, shard_id)


def _switched(store: Store, listing: Index, served: Index, remote: Remote) -> bool:
    """The destination serves this build already (with its secret-bearing files, when they are sent)."""
    if remote.served != served.root:
        return False
    return not listing.private or store.archived_root(listing.build_id) == listing.root


def _read_remote(store: Store, listing: Index, remote: Remote) -> Remote:
    public = _remote_listing(store, remote.served, None)
    live = public
    if public is not None and listing.private:  # secret-bearing files are listed in the full root only
        live = _remote_listing(store, store.archived_root(public.build_id), public.build_id) or public
    previous = None
    if remote.history and (public is None or public.build_id != remote.history[-1]):
        previous = _remote_listing(store, store.archived_root(remote.history[-1]), remote.history[-1])
    return Remote(remote.served, remote.history, live, public, previous)


def _remote_listing(store: Store, raw: bytes | None, build_id: str | None) -> Index | None:
    if raw is None:
        return None
    try:
        return Index.from_root(raw, f"{store.destination} (published)",
                                 lambda shard_id: store.shard(build_id, shard_id))
    except PublishError:
        return None  # corrupt: treat the destination as empty and check every file


# -- planning ------------------------------------------------------------------
def _plan(store: Store, tree: Path, listing: Index, served: Index, remote: Remote, options: Options) -> Plan:
    if store.has_release(listing.build_id):  # a kept release: switching back to it is enough
        return Plan(switch=True, record=True)
    try:
        diff = listing.diff(remote.live)
    except PublishError:  # a shard of the live release is missing or damaged: compare with nothing
        remote = replace(remote, live=None)
        diff = listing.diff(None)
    live = remote.live
    present = store.present(diff.changed, tree, live.file_count if live else 0) if diff.changed else set()
    uploads = [e for e in diff.changed if e.path not in present]
    plan = Plan(stage=True, switch=True, record=True, stale=_stale(listing, served, remote),
                uploads=[e for e in uploads if e.immutable] + [e for e in uploads if not e.immutable])
    if store.whole_releases:
        plan.carried, plan.index = _carried(store, listing, served, diff, remote, options.keep)
    else:
        plan.index = [(path, source, False) for path, source in served.new_index_files(remote.public)]
    if listing is not served:
        plan.index += [(path, source, True) for path, source in
                       listing.new_index_files(None if store.whole_releases else live, exclude=served.index_paths())]
    return plan


def _carried(store: Store, listing: Index, served: Index, diff, remote: Remote, keep: int):
    """For a store of whole releases: the files the new release links from kept ones (unchanged files,
    and the objects of earlier releases, so a client that read an old entry point just before the switch
    still finds what it names), and the index files it gets from the tree."""
    live = remote.live
    if live is None:
        return [], [(path, source, False) for path, source in served.new_index_files(None)]
    carried = [(e.path, e.size, live.build_id) for e in diff.unchanged()]
    index = [(path, source, False) for path, source in served.new_index_files(remote.public)]
    fresh = {path for path, _s, _p in index}
    carried += [(path, 0, live.build_id) for path in sorted(served.index_paths() - fresh - {MANIFEST})]
    placed: set[str] = set()
    for release in [live] + _older(store, remote, listing.build_id, keep):
        for entry in release.objects_not_in(listing):
            if entry.path not in placed:
                placed.add(entry.path)
                carried.append((entry.path, entry.size, release.build_id))
    return carried, index


def _older(store: Store, remote: Remote, build_id: str, keep: int) -> list[Index]:
    """Listings of the kept releases before the live one, newest first: with the live one and the
    new one, `keep` releases."""
    ids = [b for b in reversed(remote.history) if b not in (build_id, remote.live.build_id)][:max(0, keep - 2)]
    found = (_remote_listing(store, store.archived_root(b), b) for b in ids)
    return [listing for listing in found if listing is not None]


def _stale(listing: Index, served: Index, remote: Remote) -> list[str]:
    """Entry points of the live or last completed build that the new one drops, and index files of
    the live one that are not content-addressed (a format-1 SHA256SUMS) and that the new one lacks.
    (Shards and pages are content-addressed: they stay until --prune, as the objects do.)"""
    stale: set[str] = set()
    for old in (remote.live, remote.previous):
        try:
            stale |= listing.dropped_entry_points(old) if old is not None else set()
        except PublishError:
            pass  # a shard is unreadable: its dropped entry points stay until --prune
    if remote.public is not None:
        stale |= set(remote.public.loose_paths) - set(served.loose_paths)
    return sorted(stale)


# -- checking and writing ------------------------------------------------------
def _verify(tree: Path, uploads: list[FileEntry], jobs: int) -> None:
    """Check every file about to leave the machine against its listing entry; raise all problems."""
    problems = [p for p in parallel(lambda e: verify_file(tree, e), uploads, jobs) if p is not None]
    if problems:
        raise PublishError(problems)


def _describe(store: Store, plan: Plan, served: Index) -> list[Action]:
    actions = [Action("link", path, size) for path, size, _b in plan.carried]
    actions += [Action(store.upload_verb, e.path, e.size) for e in plan.uploads]
    actions += [Action(store.upload_verb, path, source.stat().st_size) for path, source, private in plan.index
                if not private]
    if plan.stage:
        actions.append(Action(store.upload_verb, MANIFEST, len(served.root)))
    return actions + [Action("delete", p) for p in plan.stale]


def _apply(store: Store, tree: Path, listing: Index, served: Index, plan: Plan, options: Options,
           history: tuple[str, ...]) -> None:
    if plan.stage:
        store.begin(listing.build_id)
        for build_id, paths in _by_release(plan.carried).items():
            store.carry(paths, build_id)
        _send(store, tree, plan.uploads, options)
        for batch in _shards_then_pages(plan.index):
            parallel(lambda item: store.put_index(*item), batch, options.jobs)
        store.archive(listing.build_id, listing.root, listing is not served)
    if plan.switch:
        store.switch(listing.build_id, served.root)
    if plan.stale:
        store.delete(plan.stale)
    if plan.record:
        store.record(_new_history(history, listing.build_id))


def _send(store: Store, tree: Path, uploads: list[FileEntry], options: Options) -> None:
    """Objects, then entry points (which may name the objects)."""
    progress = options.progress
    progress.start(sum(e.size for e in uploads), f"publishing to {store.destination}")
    try:
        objects = sum(e.immutable for e in uploads)
        for batch in (uploads[:objects], uploads[objects:]):
            parallel(lambda e: store.upload(e, tree / e.path, progress), batch, options.jobs)
    finally:
        progress.stop()


def _shards_then_pages(index: list[tuple[str, Path, bool]]) -> list[list[tuple[str, Path, bool]]]:
    """Index files in two batches: a page goes up only once every shard it names is there."""
    return [[item for item in index if not is_page_path(item[0])], [item for item in index if is_page_path(item[0])]]


def _by_release(carried: list[tuple[str, int, str]]) -> dict[str, list[str]]:
    groups: dict[str, list[str]] = {}
    for path, _size, build_id in carried:
        groups.setdefault(build_id, []).append(path)
    return groups


def _new_history(history: tuple[str, ...], build_id: str) -> tuple[str, ...]:
    """Move this build to the end: republishing an old build makes it the newest."""
    return tuple([b for b in history if b != build_id] + [build_id])[-INDEX_LENGTH:]


# -- retention -----------------------------------------------------------------
def _retain(store: Store, listing: Index, history: tuple[str, ...], options: Options) -> list[Action]:
    kept = history[-max(1, options.keep):] or (listing.build_id,)

    def referenced() -> set[str]:
        paths = listing.all_paths()
        for build_id in kept:
            if build_id != listing.build_id:
                paths |= _kept_listing(store, build_id).all_paths()
        return paths

    actions = store.retain(kept, referenced, options.dry_run)
    if not options.dry_run and kept != history:
        store.record(kept)
    return actions


def _kept_listing(store: Store, build_id: str) -> Index:
    found = _remote_listing(store, store.archived_root(build_id), build_id)
    if found is None:
        raise PublishError(Problem(Location(store.destination),
                                   f"cannot prune: the archived root of kept build {build_id[:12]} is missing "
                                   "or corrupt", hint="nothing was pruned; run without --prune or with a smaller --keep"))
    return found


def parallel(fn: Callable, items: Iterable, jobs: int) -> list:
    """Run fn over items on a thread pool; the first failure cancels what has not started."""
    items = list(items)
    if not items:
        return []
    if jobs <= 1 or len(items) == 1:
        return [fn(item) for item in items]
    pool = ThreadPoolExecutor(max_workers=jobs)
    futures = [pool.submit(fn, item) for item in items]
    try:
        wait(futures, return_when=FIRST_EXCEPTION)
        return [f.result() for f in futures]
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
