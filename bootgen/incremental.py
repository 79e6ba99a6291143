"""What the last build was made from, so the next one redoes only what changed.

Each node's outputs are recorded with the key of everything they were made
from: the node file, its profile file, and the site key (bootgen's version,
every other file under site/ including templates and `.bu` files, the resolved
images and boot loaders). A node whose key is unchanged is not read again: its
files are hard-linked from the live tree. A build whose inputs all have the
stamp of the live tree returns before parsing anything.

Files are recognised by (size, mtime_ns, inode), as make and Sphinx do; an
edit that keeps all three is not seen (`touch` the file, or delete
`.bootgen/state.pickle`).
"""
from __future__ import annotations

import hashlib
import os
import pickle
from dataclasses import dataclass, field
from pathlib import Path

from . import __version__
from .load import Claim

STATE_FILE = "state.pickle"
STATE_FORMAT = 1


def file_stat(path: Path) -> tuple[int, int, int]:
    st = os.stat(path)
    return (st.st_size, st.st_mtime_ns, st.st_ino)


def _walk(directory: Path):
    """(relative path, stat) of every file below `directory`, in a stable order."""
    stack = [directory]
    while stack:
        current = stack.pop()
        try:
            entries = sorted(os.scandir(current), key=lambda e: e.name)
        except FileNotFoundError:
            continue
        for entry in entries:
            if entry.is_dir(follow_symlinks=True):
                stack.append(Path(entry.path))
            else:
                st = entry.stat()
                yield entry.path, (st.st_size, st.st_mtime_ns, st.st_ino)


@dataclass(frozen=True)
class InputStamps:
    """Stats of every input file, split the way outputs depend on them."""

    site: tuple  # everything under site/ except profiles/*.yaml
    profiles: dict[str, tuple]
    nodes: dict[str, tuple]  # node name -> stat

    @classmethod
    def take(cls, site_dir: Path, nodes_dir: Path) -> "InputStamps":
        profiles_dir = str(site_dir / "profiles")
        site, profiles = [], {}
        for path, stat in _walk(site_dir):
            parent, name = os.path.split(path)
            if parent == profiles_dir and name.endswith((".yaml", ".yml")):
                profiles[Path(name).stem] = stat
            else:
                site.append((path, stat))
        nodes = {}
        if nodes_dir.is_dir():
            for entry in os.scandir(nodes_dir):
                if entry.name.endswith((".yaml", ".yml")) and not entry.name.startswith("."):
                    st = entry.stat()
                    nodes[Path(entry.name).stem] = (st.st_size, st.st_mtime_ns, st.st_ino)
        return cls(tuple(site), profiles, nodes)

    def digest(self, *extra) -> str:
        """One key for all inputs: equal digests mean nothing was touched."""
        text = repr((__version__, self.site, sorted(self.profiles.items()), sorted(self.nodes.items()), extra))
        return hashlib.sha256(text.encode()).hexdigest()


def site_key(stamps: InputStamps, *resolved) -> str:
    """Key of what every node depends on: the site files and resolved images and loaders."""
    return hashlib.sha256(repr((__version__, stamps.site, resolved)).encode()).hexdigest()


@dataclass(frozen=True)
class NodeRecord:
    """One node's last outputs and what they were made from."""

    name: str
    stat: tuple
    profile: str
    profile_stat: tuple | None
    site_key: str
    claims: tuple[Claim, ...]
    hosts: tuple[tuple[str, str, str], ...]  # dhcp-host entries: MAC, address, host name
    files: tuple[tuple[str, str, int, bool, str], ...]  # path, sha256, size, immutable, target

    def reusable(self, stamps: InputStamps, key: str) -> bool:
        return (self.site_key == key and stamps.nodes.get(self.name) == self.stat
                and stamps.profiles.get(self.profile) == self.profile_stat)


@dataclass
class BuildState:
    """Saved after every successful build in .bootgen/state.pickle."""

    stamp: str = ""
    build_id: str = ""
    records: dict[str, NodeRecord] = field(default_factory=dict)

    @classmethod
    def load(cls, state_dir: Path) -> "BuildState":
        """The last state, or an empty one if there is none or it is from another version."""
        try:
            with open(state_dir / STATE_FILE, "rb") as handle:
                fmt, version, state = pickle.load(handle)
        except (OSError, EOFError, pickle.UnpicklingError, ValueError, TypeError, AttributeError, ImportError):
            return cls()
        return state if (fmt, version) == (STATE_FORMAT, __version__) else cls()

    def save(self, state_dir: Path) -> None:
        """Write atomically: a killed build leaves the previous state."""
        temp = state_dir / f".{STATE_FILE}.{os.getpid()}"
        with open(temp, "wb") as handle:
            pickle.dump((STATE_FORMAT, __version__, self), handle, protocol=pickle.HIGHEST_PROTOCOL)
        os.replace(temp, state_dir / STATE_FILE)
