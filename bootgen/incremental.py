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
from typing import NamedTuple

from . import __version__

STATE_FILE = "records.marshal"  # plain values only: loading state can never run code
STAMP_FILE = "stamp"
SECRET_REFS_FILE = "secret-refs.json"  # the references (never values) the live tree was built from
STATE_FORMAT = 5
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
    nodes: dict[str, tuple]  # node name -> stat
    node_files: tuple[tuple[str, str], ...] = ()  # (node name, file) in file name order
    # Set by `updated`: the stamps these were made from and the node names whose stat was taken again.
    base: "InputStamps | None" = field(default=None, compare=False, repr=False)
    touched: frozenset = field(default=frozenset(), compare=False, repr=False)

    @classmethod
    def take(cls, site_dir: Path, nodes_dir: Path) -> "InputStamps":
        site, profiles = _site_stamps(site_dir)
        nodes, files = _node_stamps(nodes_dir)
        return cls(site, profiles, nodes, files)

    def updated(self, site_dir: Path, nodes_dir: Path, changed: set[str]) -> "InputStamps":
        """These stamps after the files in `changed` (paths from file events) changed.

        Only the node files named are stat'ed again; site/ is small and walked
        whole when something in it changed. A node file added or removed, or
        anything else under nodes/, means a full scan of nodes/."""
        directory = os.path.abspath(nodes_dir)
        nodes = dict(self.nodes)
        in_site, touched = False, set()
        for path in map(os.path.abspath, changed):
            parent, name = os.path.split(path)
            if parent != directory:
                if path.startswith(directory + os.sep) or path == directory:
                    return InputStamps.take(site_dir, nodes_dir)
                in_site = True
            elif name.endswith((".yaml", ".yml")) and not name.startswith("."):
                stem, stat = name.rsplit(".", 1)[0], _stat(path)
                if stat is None and stem not in nodes:
                    continue  # a file that came and went
                if stat is None or stem not in nodes:
                    return InputStamps.take(site_dir, nodes_dir)  # removed or added: list nodes/ again
                other = stem + (".yml" if name.endswith(".yaml") else ".yaml")
                if os.path.lexists(os.path.join(directory, other)):
                    return InputStamps.take(site_dir, nodes_dir)  # two files for one node: the build refuses
                nodes[stem] = stat
                touched.add(stem)
        site, profiles = _site_stamps(site_dir) if in_site else (self.site, self.profiles)
        return InputStamps(site, profiles, nodes, self.node_files, self, frozenset(touched))

    def unchanged_nodes_since(self, earlier: "InputStamps") -> bool:
        """True if, apart from `touched`, no node or profile changed since `earlier`
        (known without comparing 10,000 stats when these were `updated` from it)."""
        return self.base is earlier and self.profiles == earlier.profiles and self.site == earlier.site

    def digest(self, *extra) -> str:
        """One key for all inputs: equal digests mean nothing was touched."""
        # marshal: a quarter of repr's time for 10,000 stats. Version 2 writes no back-references,
        # whose presence depends on objects' reference counts: the bytes of equal values could differ.
        data = marshal.dumps((code_stamp(), self.site, sorted(self.profiles.items()), sorted(self.nodes.items()),
                              extra), 2)
        return hashlib.sha256(data).hexdigest()


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
    is one marshal blob, unpacked only for the nodes a build touches, so the
    records of 10,000 nodes load and save in milliseconds."""

    name: str
    stat: tuple
    profile: str
    profile_stat: tuple | None
    site_key: str
    detail: bytes  # marshal of (claims, hosts, paths)
    secret_refs: tuple = ()  # (kind, argument) of each secret reference its file holds: never a value
    secret_paths: tuple = ()  # its files whose bytes carry a secret value (left out of the public listing)

    @classmethod
    def make(cls, name: str, stat: tuple, profile: str, profile_stat: tuple | None, site_key: str,
             claims: tuple, hosts: tuple, paths: tuple, secret_refs: tuple = (),
             secret_paths: tuple = ()) -> "NodeRecord":
        """`claims` as Claim tuples, `hosts` as (MAC, address, host name), `paths` its files in the tree."""
        return cls(name, stat, profile, profile_stat, site_key, marshal.dumps((claims, hosts, paths)),
                   secret_refs, secret_paths)

    @property
    def claims(self) -> tuple[tuple, ...]:
        return marshal.loads(self.detail)[0]

    @property
    def hosts(self) -> tuple[tuple[str, str, str], ...]:
        return marshal.loads(self.detail)[1]

    @property
    def paths(self) -> tuple[str, ...]:
        return marshal.loads(self.detail)[2]

    def reusable(self, stamps: InputStamps, key: str) -> bool:
        return (self.site_key == key and stamps.nodes.get(self.name) == self.stat
                and stamps.profiles.get(self.profile) == self.profile_stat)


@dataclass
class NodeWork:
    """The nodes of a build: those whose last outputs are reused, and those to render."""

    reused: dict[str, NodeRecord]  # node name -> its record, reused as it is
    fresh: list[tuple[str, str]]  # (node name, file) to read and render, in file name order


def node_work(state: BuildState, stamps: InputStamps, key: str) -> NodeWork:
    records = state.records or {}
    touched = _touched(state, stamps, key)
    if touched is None:  # something all nodes depend on changed: check every record
        work = NodeWork({}, [])
        for name, path in stamps.node_files:
            record = _reusable(state, stamps, name, key)
            if record is None:
                work.fresh.append((name, path))
            else:
                work.reused[name] = record
        return work
    reused = dict(records)  # one copy instead of 10,000 checks
    for name in records.keys() - stamps.nodes.keys():  # node files removed
        del reused[name]
    fresh = []
    for name in touched:
        if _reusable(state, stamps, name, key) is None:
            reused.pop(name, None)
            fresh.append(name)
    files = dict(stamps.node_files) if fresh else {}
    return NodeWork(reused, sorted(((name, files[name]) for name in fresh), key=lambda item: item[1]))


def _touched(state: BuildState, stamps: InputStamps, key: str) -> set[str] | None:
    """The node files changed or added since the records were made; None if the site key
    or a profile a record used changed (then every record must be checked).

    Every saved record was made or checked with the state's shared key, so an
    equal key vouches for all of them at once."""
    records = state.records or {}
    if not records or state.shared_key != key:
        return None
    if state.inputs is not None and stamps.unchanged_nodes_since(state.inputs[0]):
        return set(stamps.touched)  # watch: file events named them
    stats, profiles = {}, set()
    for name, record in records.items():
        stats[name] = record.stat
        profiles.add((record.profile, record.profile_stat))
    if any(stamps.profiles.get(profile) != stat for profile, stat in profiles):
        return None
    return {name for name, _ in stamps.nodes.items() - stats.items()}


def _reusable(state: BuildState, stamps: InputStamps, name: str, key: str) -> NodeRecord | None:
    record = (state.records or {}).get(name)
    return record if record is not None and record.reusable(stamps, key) else None


@dataclass
class BuildState:
    """Saved after every successful build: a small stamp file, and the node records beside it.

    `history` maps a build id to its parent's id and the paths whose bytes
    differ between the two: what a recycled tree must change to become the
    next one. The claims index is saved with the records; the listing is kept
    in memory only (watch keeps it between builds; a fresh process reads it
    from the live tree)."""

    stamp: str = ""
    build_id: str = ""
    records: dict[str, NodeRecord] | None = field(default_factory=dict)
    files: int = 0
    shared: dict[str, str] = field(default_factory=dict)  # path -> sha256 of files no node owns
    shared_key: str = ""  # the site key the shared files (and every record) were made with
    history: dict[str, tuple[str, frozenset]] = field(default_factory=dict)
    site_cache: tuple | None = field(default=None, repr=False)  # in memory only: (site stamps, prepared site)
    listing: object = field(default=None, repr=False)  # in memory only: bootgen.plan.Listing of the live tree
    claims: dict[tuple[str, str], str] = field(default_factory=dict)  # (kind, value) -> node name
    inputs: tuple | None = field(default=None, repr=False)  # (InputStamps, digest extras) the live tree was built from
    attempt: tuple | None = field(default=None, repr=False)  # (InputStamps, digest extras, digest or "") of the last build
    secret_refs: tuple = ()  # (kind, argument) of every secret reference the live tree was built from
    secrets_digest: str = ""  # keyed hash of their values when it was built (bootgen.secrets.stamp_digest)

    @classmethod
    def load_stamp(cls, state_dir: Path) -> "BuildState":
        """Just the stamp and build id (enough to see that nothing changed); records load later."""
        try:
            fmt, version, stamp, build_id, files = (state_dir / STAMP_FILE).read_text().split()
        except (OSError, ValueError):
            return cls()
        if (fmt, version) != (str(STATE_FORMAT), __version__):
            return cls()
        return cls(stamp, build_id, None, int(files), {})

    def load_records(self, state_dir: Path) -> None:
        """The node records of the build with this state's id, or none if they do not match."""
        if self.records is not None:
            return
        self.records = {}
        try:
            with open(state_dir / STATE_FILE, "rb") as handle, paused_gc():
                # Read whole: marshal.load on a file reads it in small pieces (6x slower at 10,000 nodes).
                build_id, records, shared, shared_key, history, claims = marshal.loads(handle.read())
                records = {record[0]: NodeRecord(*record) for record in records} if build_id == self.build_id else None
        except Exception:  # unreadable or foreign state is no state: build from scratch (a cache never breaks a build)
            return
        if records is not None:
            self.records = records
            self.shared, self.shared_key, self.history, self.claims = shared, shared_key, history, claims

    def succeeded(self) -> None:
        """The last build's inputs are now those of the live tree (the digest may follow on save)."""
        stamps, extras, digest = self.attempt
        self.inputs, self.stamp = (stamps, extras), digest

    def forget(self) -> None:
        """Drop everything known about the live tree: the next build starts from scratch."""
        self.records, self.shared, self.shared_key, self.history, self.claims = {}, {}, "", {}, {}
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
        """Records first, stamp last, each replaced atomically: a killed build leaves a consistent pair.

        The stamp (a digest of every input's stat) is worked out here, not per
        build: watch builds many times between saves."""
        if not self.stamp and self.inputs is not None:
            stamps, extras = self.inputs
            self.stamp = stamps.digest(*extras)
        with paused_gc():
            records = [tuple(record) for record in self.records.values()]
            data = marshal.dumps((self.build_id, records, self.shared, self.shared_key, self.history,
                                  self.claims))
        _replace(state_dir / STATE_FILE, data)
        _replace(state_dir / SECRET_REFS_FILE, json.dumps({"refs": sorted(self.secret_refs, key=repr),
                                                           "digest": self.secrets_digest}).encode())
        _replace(state_dir / STAMP_FILE, f"{STATE_FORMAT} {__version__} {self.stamp} {self.build_id} {self.files}\n".encode())


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
