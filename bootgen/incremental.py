"""What the last build was made from, so the next one redoes only what changed.

Each node's outputs are recorded with the key of everything they were made
from: the node file, its profile file, and the site key (bootgen's version,
every other file under site/ including templates and `.bu` files, the resolved
images and boot loaders). A node whose key is unchanged is not read again: its
files are hard-linked from the live tree. A build whose inputs all have the
stamp of the live tree returns before parsing anything.

Files are recognised by (size, mtime_ns, inode), as make and Sphinx do; an
edit that keeps all three is not seen (`touch` the file, or delete
`.bootgen/stamp`).
"""
from __future__ import annotations

import contextlib
import functools
import gc
import hashlib
import json
import marshal
import os
from dataclasses import dataclass, field
from pathlib import Path
from collections.abc import Mapping
from typing import NamedTuple

from . import __version__
from .shards import SHARDS, Overlay, ShardedMap, claim_shard, shard_of

OLD_STATE_FILE = "records.marshal"  # state format 5: every record in one file
STAMP_FILE = "stamp"
SECRET_REFS_FILE = "secret-refs.json"  # the references (never values) the live tree was built from
STATE_FORMAT = 6  # records and claims in shards under records/ (plain values only: loading state never runs code)
HISTORY_KEPT = 8  # more than the trees kept, so a recycled tree's drift is always known


@functools.lru_cache(maxsize=1)
def code_stamp() -> str:
    """bootgen's version and the stats of its own files: new code means new outputs,
    also for a development install whose version number did not change."""
    package = Path(__file__).resolve().parent
    stats = [(path, stat) for path, stat in _walk(package) if not path.endswith((".pyc", ".pyo"))]
    return hashlib.sha256(repr((__version__, stats)).encode()).hexdigest()


def _walk(directory: Path):
    """(path relative to `directory`, stat) of every file below it, in a stable order.

    Relative, so that `--site site` and `--site /abs/site` give the same stamps."""
    stack = [""]
    while stack:
        relative = stack.pop()
        try:
            entries = sorted(os.scandir(os.path.join(directory, relative)), key=lambda e: e.name)
        except FileNotFoundError:
            continue
        for entry in entries:
            path = os.path.join(relative, entry.name)
            # A symlinked directory is not walked (it may lead anywhere, or loop); a dangling
            # link is stamped as itself. Whether such an entry may be used is the loader's call.
            if entry.is_dir(follow_symlinks=False):
                stack.append(path)
            else:
                try:
                    yield path, _stamp(entry.stat())
                except OSError:
                    yield path, _stamp(entry.stat(follow_symlinks=False))


@dataclass(frozen=True)
class InputStamps:
    """Stats of every input file, split the way outputs depend on them."""

    site: tuple  # everything under site/ except profiles/*.yaml
    profiles: dict[str, tuple]
    nodes: Mapping  # node name -> stat: a dict from a scan, or NodeStats (known stats and changes)
    node_files: tuple[tuple[str, str], ...] = ()  # (node name, file) in file name order, from a scan
    # Set by `updated`: the stamps these were made from and the node names whose stat was taken again.
    base: "InputStamps | None" = field(default=None, compare=False, repr=False)
    touched: frozenset = field(default=frozenset(), compare=False, repr=False)

    @classmethod
    def take(cls, site_dir: Path, nodes_dir: Path) -> "InputStamps":
        site, profiles = _site_stamps(site_dir)
        nodes, files = _node_stamps(nodes_dir)
        return cls(site, profiles, nodes, files)

    @classmethod
    def of_records(cls, site_dir: Path, nodes_dir: Path, state: "BuildState", state_dir: Path,
                   changed: tuple[str, ...]) -> "InputStamps | None":
        """The stamps of a fresh process told which node files (names in nodes/) changed since
        the state's records were made (bootgen.monitor): the records' stats for every other
        node, none of them stat'ed. None if there are no records to start from."""
        state.load_records(state_dir)
        if not state.records:
            return None
        site, profiles = _site_stamps(site_dir)
        known = cls(site, profiles, NodeStats(RecordStats(state, nodes_dir)))
        return known.updated(site_dir, nodes_dir, {os.path.join(nodes_dir, name) for name in changed})

    def file_of(self, name: str) -> str:
        """The path of node `name`'s file."""
        if isinstance(self.nodes, NodeStats):
            return self.nodes.file_of(name)
        return dict(self.node_files)[name]

    @property
    def scanned(self) -> bool:
        """Whether every node file was listed (else only those that changed are known)."""
        return not isinstance(self.nodes, NodeStats)

    def updated(self, site_dir: Path, nodes_dir: Path, changed: set[str]) -> "InputStamps":
        """These stamps after the files in `changed` (paths from file events) changed.

        Only the node files named are stat'ed again; site/ is small and walked
        whole when something in it changed. Anything else under nodes/ (a
        directory), or a node with two files (x.yaml and x.yml, which the
        build refuses), means a full scan of nodes/."""
        directory = os.path.abspath(nodes_dir)
        changes, in_site, touched = {}, False, set()
        for path in map(os.path.abspath, changed):
            parent, name = os.path.split(path)
            if parent != directory:
                if path.startswith(directory + os.sep) or path == directory:
                    return InputStamps.take(site_dir, nodes_dir)
                in_site = True
            elif name.endswith((".yaml", ".yml")) and not name.startswith("."):
                stem, stat = name.rsplit(".", 1)[0], _stat(path)
                known = changes.get(stem, self.nodes.get(stem))
                if stat is None and known is None:
                    continue  # a file that came and went
                other = stem + (".yml" if name.endswith(".yaml") else ".yaml")
                if os.path.lexists(os.path.join(directory, other)):
                    return InputStamps.take(site_dir, nodes_dir)  # two files for one node: the build refuses
                changes[stem] = None if stat is None else (stat, path)
                touched.add(stem)
        site, profiles = _site_stamps(site_dir) if in_site else (self.site, self.profiles)
        nodes = self.nodes.with_changes(changes) if isinstance(self.nodes, NodeStats) else \
            NodeStats(ScannedStats(self.nodes, self.node_files), changes)
        return InputStamps(site, profiles, nodes, (), self, frozenset(touched))

    def unchanged_nodes_since(self, earlier: "InputStamps") -> bool:
        """True if, apart from `touched`, no node or profile changed since `earlier`
        (known without comparing 10,000 stats when these were `updated` from it)."""
        return self.base is earlier and self.profiles == earlier.profiles and self.site == earlier.site

    def node_digests(self) -> list[bytes]:
        """One digest of the node stats per shard of the state (see stats_digest)."""
        if isinstance(self.nodes, NodeStats) and isinstance(self.nodes.base, RecordStats):
            return self.nodes.digests()  # the records' digests, worked out again for changed shards only
        return self.group_digests

    @functools.cached_property
    def node_groups(self) -> list[dict]:
        """The node stats grouped by shard of the state: once per build, for the inputs' digest
        and for finding the shards that changed (see _touched)."""
        groups: list[dict] = [{} for _ in range(SHARDS)]
        for name, stat in self.nodes.items():
            groups[shard_of(name)][name] = stat
        return groups

    @functools.cached_property
    def group_digests(self) -> list[bytes]:
        return [stats_digest(group) for group in self.node_groups]

    def digest(self, *extra) -> str:
        """One key for all inputs: equal digests mean nothing was touched."""
        return inputs_digest(self.site, self.profiles, self.node_digests(), extra)

    def __eq__(self, other) -> bool:
        if not isinstance(other, InputStamps):
            return NotImplemented
        return (self.site, self.profiles) == (other.site, other.profiles) and \
            dict(self.nodes.items()) == dict(other.nodes.items())

    __hash__ = None


def inputs_digest(site: tuple, profiles: dict, node_digests: list[bytes], extra: tuple) -> str:
    # marshal: a quarter of repr's time for 10,000 stats. Version 2 writes no back-references,
    # whose presence depends on objects' reference counts: the bytes of equal values could differ.
    data = marshal.dumps((code_stamp(), site, sorted(profiles.items()), b"".join(node_digests), tuple(extra)), 2)
    return hashlib.sha256(data).hexdigest()


def stats_digest(stats: Mapping) -> bytes:
    """Digest of (node name, stat) pairs: of one shard of the state's records."""
    return hashlib.sha256(marshal.dumps(sorted(stats.items()), 2)).digest() if stats else b""


class ScannedStats(Mapping):
    """Stats and files of a scan of nodes/: the base `updated` stamps are changes to."""

    def __init__(self, stats: dict, node_files: tuple):
        self.stats, self.node_files = stats, node_files
        self._files: dict | None = None

    def __getitem__(self, name):
        return self.stats[name]

    def get(self, name, default=None):
        return self.stats.get(name, default)

    def __iter__(self):
        return iter(self.stats)

    def __len__(self) -> int:
        return len(self.stats)

    def items(self):
        return self.stats.items()

    def file_of(self, name: str) -> str:
        if self._files is None:
            self._files = dict(self.node_files)
        return self._files[name]


class RecordStats(Mapping):
    """Stats and files of the live tree's nodes, from their records (each made when its file
    had that stat): what a fresh process starts from when it is told what changed since."""

    def __init__(self, state: "BuildState", nodes_dir: Path):
        self.state, self.records, self.nodes_dir = state, state.records, str(nodes_dir)

    def __getitem__(self, name):
        return self.records[name].stat

    def get(self, name, default=None):
        record = self.records.get(name)
        return default if record is None else record.stat

    def __iter__(self):
        return iter(self.records)

    def __len__(self) -> int:
        return len(self.records)

    def file_of(self, name: str) -> str:
        return os.path.join(self.nodes_dir, self.records[name].file)


class NodeStats(Mapping):
    """Node name -> stat: a base (a scan, or the records) with the changes since
    (name -> (stat, file), None when its file was removed)."""

    def __init__(self, base, changes: dict | None = None):
        self.base, self.changes = base, changes or {}
        self._stats = Overlay(base, {})
        for name, change in self.changes.items():
            self._stats.set(name, None if change is None else change[0])

    def with_changes(self, changes: dict) -> "NodeStats":
        return NodeStats(self.base, {**self.changes, **changes})

    def __getitem__(self, name):
        return self._stats[name]

    def get(self, name, default=None):
        return self._stats.get(name, default)

    def __contains__(self, name) -> bool:
        return name in self._stats

    def __iter__(self):
        return iter(self._stats)

    def __len__(self) -> int:
        return len(self._stats)

    def file_of(self, name: str) -> str:
        change = self.changes.get(name)
        return change[1] if change is not None else self.base.file_of(name)

    def changed_names(self) -> set[str]:
        return set(self.changes)

    def digests(self) -> list[bytes]:
        """Per-shard digests of these stats over records (RecordStats): the records' own,
        worked out again only for the shards a change falls in."""
        digests = list(self.base.state.stat_digests)
        for index in {shard_of(name) for name in self.changes}:
            group = {name: record.stat for name, record in self.base.records.shard_items(index).items()}
            for name, change in self.changes.items():
                if shard_of(name) == index:
                    if change is None:
                        group.pop(name, None)
                    else:
                        group[name] = change[0]
            digests[index] = stats_digest(group)
        return digests


def _site_stamps(site_dir: Path) -> tuple[tuple, dict[str, tuple]]:
    """(stats of everything under site/ but profiles, profile name -> stat)."""
    profiles_dir = "profiles"
    site, profiles = [], {}
    for path, stat in _walk(site_dir):
        parent, name = os.path.split(path)
        if parent == profiles_dir and name.endswith((".yaml", ".yml")):
            profiles[Path(name).stem] = stat
        else:
            site.append((path, stat))
    return tuple(site), profiles


def _node_stamps(nodes_dir: Path) -> tuple[dict[str, tuple], tuple[tuple[str, str], ...]]:
    """(node name -> stat, (node name, file) in file name order)."""
    nodes, files = {}, []
    if nodes_dir.is_dir():
        for entry in os.scandir(nodes_dir):
            name = entry.name
            if name.endswith((".yaml", ".yml")) and not name.startswith("."):
                stem = name.rsplit(".", 1)[0]
                try:
                    nodes[stem] = _stamp(entry.stat())
                except OSError:  # a dangling link: the loader refuses it with a problem
                    nodes[stem] = _stamp(entry.stat(follow_symlinks=False))
                files.append((name, stem, entry.path))
    files.sort()
    return nodes, tuple((stem, path) for _, stem, path in files)


def _stat(path: str) -> tuple | None:
    try:
        return _stamp(os.stat(path))
    except (FileNotFoundError, NotADirectoryError):
        return _lstat(path)
    except OSError:  # a symlink loop
        return _lstat(path)


def _lstat(path: str) -> tuple | None:
    try:
        return _stamp(os.lstat(path))
    except OSError:
        return None


def _stamp(st: os.stat_result) -> tuple[int, int, int]:
    """What identifies a file's version: (size, mtime_ns, inode)."""
    return (st.st_size, st.st_mtime_ns, st.st_ino)


def saved_secret_refs(state_dir: Path) -> tuple[list[tuple], str]:
    """The references the last build resolved and the keyed digest of their values then: resolved
    again, a different digest means a value changed."""
    try:
        saved = json.loads((state_dir / SECRET_REFS_FILE).read_bytes())
        refs = [(kind, tuple(arg) if isinstance(arg, list) else arg) for kind, arg in saved["refs"]]
        return refs, str(saved["digest"])
    except (OSError, ValueError, TypeError, KeyError):
        return [], ""


def site_key(stamps: InputStamps, *resolved) -> str:
    """Key of what every node depends on: the site files and resolved images and loaders."""
    return hashlib.sha256(repr((code_stamp(), stamps.site, resolved)).encode()).hexdigest()


class NodeRecord(NamedTuple):
    """One node's last outputs and what they were made from.

    What decides reuse is plain fields; the rest (claims, DHCP hosts, paths)
    is one marshal blob, unpacked only for the nodes a build touches."""

    name: str
    stat: tuple
    profile: str
    profile_stat: tuple | None
    site_key: str
    detail: bytes  # marshal of (claims, hosts, paths)
    secret_refs: tuple = ()  # (kind, argument) of each secret reference its file holds: never a value
    secret_paths: tuple = ()  # its files whose bytes carry a secret value (left out of the public listing)
    file: str = ""  # its file's name in nodes/

    @classmethod
    def make(cls, name: str, stat: tuple, profile: str, profile_stat: tuple | None, site_key: str,
             claims: tuple, hosts: tuple, paths: tuple, secret_refs: tuple = (),
             secret_paths: tuple = (), file: str = "") -> "NodeRecord":
        """`claims` as Claim tuples, `hosts` as (MAC, address, host name), `paths` its files in the tree."""
        return cls(name, stat, profile, profile_stat, site_key, marshal.dumps((claims, hosts, paths)),
                   secret_refs, secret_paths, file)

    @property
    def claims(self) -> tuple[tuple, ...]:
        return marshal.loads(self.detail)[0]

    @property
    def hosts(self) -> tuple[tuple[str, str, str], ...]:
        return marshal.loads(self.detail)[1]

    @property
    def paths(self) -> tuple[str, ...]:
        return marshal.loads(self.detail)[2]

    @property
    def secretive(self) -> bool:
        return bool(self.secret_refs or self.secret_paths)

    def reusable(self, stamps: InputStamps, key: str) -> bool:
        return (self.site_key == key and stamps.nodes.get(self.name) == self.stat
                and stamps.profiles.get(self.profile) == self.profile_stat)


def _record_of(values) -> NodeRecord:
    return NodeRecord(*values)


@dataclass
class NodeWork:
    """The nodes of a build: every node's record as it will be (`records`: the live ones
    reused, with this build's renders set on top), those to render, those whose file is gone."""

    records: Overlay
    fresh: list[tuple[str, str]]  # (node name, file) to read and render, in file name order
    deleted: list[NodeRecord]


def node_work(state: BuildState, stamps: InputStamps, key: str) -> NodeWork:
    base = state.records if state.records is not None else ShardedMap()
    records = Overlay(base)
    touched = _touched(state, stamps, key)
    fresh, deleted = [], []
    if touched is None:  # something all nodes depend on changed: check every record
        for name, record in list(base.items()):
            if name not in stamps.nodes:
                deleted.append(record)
                records.set(name, None)
        for name, path in _node_files(stamps):
            record = base.get(name)
            if record is None or not record.reusable(stamps, key):
                fresh.append((name, path))
        return NodeWork(records, fresh, sorted(deleted))
    for name in touched:
        record = base.get(name)
        if name not in stamps.nodes:  # its file was removed
            if record is not None:
                deleted.append(record)
                records.set(name, None)
        elif record is None or not record.reusable(stamps, key):
            fresh.append((name, stamps.file_of(name)))
    return NodeWork(records, sorted(fresh, key=lambda item: item[1]), sorted(deleted))


def _node_files(stamps: InputStamps):
    if stamps.node_files or stamps.scanned:
        return stamps.node_files
    return sorted(((name, stamps.file_of(name)) for name in stamps.nodes), key=lambda item: item[1])


def _touched(state: BuildState, stamps: InputStamps, key: str) -> set[str] | None:
    """The node files changed, added or removed since the records were made; None if the
    site key or a profile changed (then every record must be checked).

    Every saved record was made or checked with the state's shared key, so an
    equal key vouches for all of them at once."""
    records = state.records
    if not records or state.shared_key != key or stamps.profiles != state.profiles:
        return None
    if state.inputs is not None and stamps.unchanged_nodes_since(state.inputs[0]):
        return set(stamps.touched)  # watch: file events named them
    nodes = stamps.nodes
    if isinstance(nodes, NodeStats) and isinstance(nodes.base, RecordStats) and nodes.base.records is records:
        return nodes.changed_names()  # a fresh process told what changed since these records
    # A scan: only the shards whose digest differs from the records' hold a change.
    touched = set()
    for index, (group, digest) in enumerate(zip(stamps.node_groups, stamps.group_digests)):
        if digest != state.stat_digests[index]:
            recorded = {name: record.stat for name, record in records.shard_items(index).items()}
            touched |= {name for name in group.keys() | recorded.keys() if group.get(name) != recorded.get(name)}
    return touched


ROOT_FILE = "root"
RECORDS_DIR = "records"


@dataclass
class BuildState:
    """Saved after every successful build: a small stamp file, and the node records beside it.

    The records and the claims index are kept in shards (bootgen.shards) named
    by a small root, so a build reads and writes only the shards of the nodes
    it touches. `history` maps a build id to its parent's id and the paths whose bytes
    differ between the two: what a recycled tree must change to become the
    next one. The listing is kept in memory only (watch keeps it between
    builds; a fresh process reads it from the live tree)."""

    stamp: str = ""
    build_id: str = ""
    records: ShardedMap | None = field(default_factory=lambda: _new_records())
    files: int = 0
    shared: dict[str, str] = field(default_factory=dict)  # path -> sha256 of files no node owns
    shared_key: str = ""  # the site key the shared files (and every record) were made with
    history: dict[str, tuple[str, frozenset]] = field(default_factory=dict)
    site_cache: tuple | None = field(default=None, repr=False)  # in memory only: (site stamps, prepared site)
    listing: object = field(default=None, repr=False)  # in memory only: bootgen.plan.Listing of the live tree
    claims: ShardedMap = field(default_factory=lambda: _new_claims())  # (kind, value) -> node name
    inputs: tuple | None = field(default=None, repr=False)  # (InputStamps, digest extras) the live tree was built from
    attempt: tuple | None = field(default=None, repr=False)  # (InputStamps, digest extras, digest or "") of the last build
    secret_refs: tuple = ()  # (kind, argument) of every secret reference the live tree was built from
    secrets_digest: str = ""  # keyed hash of their values when it was built (bootgen.secrets.stamp_digest)
    profiles: dict = field(default_factory=dict)  # profile name -> stat, as the records were made
    stat_digests: list = field(default_factory=lambda: [b""] * SHARDS)  # of the records' stats, per shard
    secretive: dict = field(default_factory=dict)  # name -> record of nodes with secret references or files
    # bootgen.monitor's number of the changes to nodes/ before the records' stats were taken;
    # `next_token`: the one the build under way asked at, which becomes it if the build succeeds.
    monitor_token: str = ""
    next_token: str = field(default="", repr=False)

    @classmethod
    def load_stamp(cls, state_dir: Path) -> "BuildState":
        """Just the stamp and build id (enough to see that nothing changed); records load later."""
        try:
            fmt, version, stamp, build_id, files, token = (state_dir / STAMP_FILE).read_text().split()
        except (OSError, ValueError):
            return cls()
        if (fmt, version) != (str(STATE_FORMAT), __version__):
            return cls()
        token = "" if token == "-" else token
        return cls(stamp, build_id, None, int(files), {}, monitor_token=token, next_token=token)

    def load_records(self, state_dir: Path) -> None:
        """The root of the node records of the build with this state's id, or none if they do
        not match (their shards are read when a build asks for one of their nodes)."""
        if self.records is not None:
            return
        self.forget()
        directory = state_dir / RECORDS_DIR
        try:
            with open(directory / ROOT_FILE, "rb") as handle:
                (build_id, tables, shared, shared_key, history, profiles, digests,
                 secretive) = marshal.loads(handle.read())
        except Exception:  # unreadable or foreign state is no state: build from scratch (a cache never breaks a build)
            return
        if build_id != self.build_id:
            return
        (record_table, record_counts), (claim_table, claim_counts) = tables
        self.records = _new_records(directory, record_table, record_counts)
        self.claims = _new_claims(directory, claim_table, claim_counts)
        self.shared, self.shared_key, self.history, self.profiles = shared, shared_key, history, profiles
        self.stat_digests = list(digests)
        self.secretive = {name: NodeRecord(*values) for name, values in secretive.items()}

    def succeeded(self) -> None:
        """The last build's inputs are now those of the live tree (the digest may follow on save)."""
        stamps, extras, digest = self.attempt
        self.inputs, self.stamp = (stamps, extras), digest
        self.profiles = dict(stamps.profiles)
        self.monitor_token = self.next_token

    def adopt_records(self, records: Overlay, claims: Overlay) -> None:
        """A build's records and claims become the live ones (only the shards it changed move)."""
        if records.base is not self.records:
            self.records = _new_records()
            self.records.apply({name: records[name] for name in records})
            self.secretive = {name: record for name, record in self.records.items() if record.secretive}
        else:
            self.records.apply(records.changes)
            for name, record in records.changes.items():
                if record is not None and record.secretive:
                    self.secretive[name] = record
                else:
                    self.secretive.pop(name, None)
        if claims.base is not self.claims:
            self.claims = _new_claims()
            self.claims.apply({key: claims[key] for key in claims})
        else:
            self.claims.apply(claims.changes)

    def forget(self) -> None:
        """Drop everything known about the live tree: the next build starts from scratch."""
        self.records, self.claims = _new_records(), _new_claims()
        self.shared, self.shared_key, self.history, self.profiles = {}, "", {}, {}
        self.stat_digests, self.secretive = [b""] * SHARDS, {}
        self.listing = None

    def drift(self, tree_id: str) -> set[str] | None:
        """Paths whose bytes differ between an older tree and the live one; None if not known."""
        drift: set[str] = set()
        current, steps = self.build_id, 0
        while current != tree_id:
            steps += 1
            if current not in self.history or steps > HISTORY_KEPT:  # unknown, or an edit and its undo
                return None
            current, changed = self.history[current]
            if changed is None:  # a build from scratch: what it changed was not worked out
                return None
            drift |= changed
        return drift

    def remember(self, build_id: str, parent: str, changed: set[str] | None) -> None:
        """Record a new live build, keeping the last few steps of history."""
        self.history[build_id] = (parent, None if changed is None else frozenset(changed))
        kept, current = {}, build_id
        while current in self.history and current not in kept and len(kept) < HISTORY_KEPT:
            kept[current] = self.history[current]
            current = self.history[current][0]
        self.history = kept
        self.build_id = build_id

    def save(self, state_dir: Path) -> None:
        """Changed shards first, then the root naming them, then the stamp, each replaced
        atomically: a killed build leaves a consistent set.

        The stamp (a digest of every input's stat) is worked out here, not per
        build: watch builds many times between saves. The records' stats are
        those of the inputs (a record is reused only while its file keeps its
        stat), so it comes from the records' digests, a shard at a time."""
        directory = state_dir / RECORDS_DIR
        directory.mkdir(parents=True, exist_ok=True)
        with paused_gc():
            for index in self.records.dirty if self.records.backed_by(directory) else range(SHARDS):
                self.stat_digests[index] = stats_digest(
                    {name: record.stat for name, record in self.records.shard_items(index).items()})
            record_table, record_counts, stale_records = self.records.write(directory, "r")
            claim_table, claim_counts, stale_claims = self.claims.write(directory, "c")
            root = (self.build_id, ((record_table, record_counts), (claim_table, claim_counts)), self.shared,
                    self.shared_key, self.history, self.profiles, self.stat_digests,
                    {name: tuple(record) for name, record in self.secretive.items()})
            _replace(directory / ROOT_FILE, marshal.dumps(root, 2))
        if stale_records is None or stale_claims is None:  # written whole: anything else there is old
            named = {ROOT_FILE, *filter(None, record_table), *filter(None, claim_table)}
            stale = [name for name in os.listdir(directory) if name not in named]
        else:
            stale = stale_records + stale_claims
        for name in stale:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(directory / name)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(state_dir / OLD_STATE_FILE)  # state format 5
        if self.inputs is not None:
            stamps, extras = self.inputs
            self.stamp = inputs_digest(stamps.site, stamps.profiles, self.stat_digests, extras)
        _replace(state_dir / SECRET_REFS_FILE, json.dumps({"refs": sorted(self.secret_refs, key=repr),
                                                           "digest": self.secrets_digest}).encode())
        self.save_stamp(state_dir)

    def save_stamp(self, state_dir: Path) -> None:
        _replace(state_dir / STAMP_FILE, f"{STATE_FORMAT} {__version__} {self.stamp} {self.build_id} {self.files} "
                                         f"{self.monitor_token or '-'}\n".encode())


def _new_records(directory: Path | None = None, table=None, counts=None) -> ShardedMap:
    return ShardedMap(directory, table, counts, decode=_record_of, encode=tuple)


def _new_claims(directory: Path | None = None, table=None, counts=None) -> ShardedMap:
    return ShardedMap(directory, table, counts, shard=claim_shard)


@contextlib.contextmanager
def paused_gc():
    """No cyclic garbage collection while making many small objects that hold no cycles:
    the collector would walk them over and over (it makes loading records four times slower)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _replace(path: Path, data: bytes) -> None:
    temp = path.with_name(f".{path.name}.{os.getpid()}")
    temp.write_bytes(data)
    os.replace(temp, path)
