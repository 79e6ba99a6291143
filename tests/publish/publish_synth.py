"""Synthetic output trees in the exact `bootgen build` format, for publish tests and the bench.

Each node gets two entry points (`pxelinux.cfg/01-<mac>`, `ipxe/<mac>.ipxe`) that
name its content-addressed `configs/<node>/<hash16>/ignition.json` and the shared
image `images/<hash16>/vmlinuz` by path, so tests can follow references.
"""
from __future__ import annotations

import hashlib
import json
import random
import re
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

from bootgen.plan import Listing, listing_lines
from bootgen.publish.manifest import load_tree, render_sums
from bootgen.write import write_listing

BASE_URL = "http://boot.test"
_REF = re.compile(r"\b((?:configs|images)/[A-Za-z0-9._/-]+)")


@dataclass(frozen=True)
class SynthTree:
    root: Path
    build_id: str
    files: dict[str, bytes]  # path -> content, without the index (manifest.json, index/)
    immutable: frozenset[str]

    def node_paths(self, node: int) -> set[str]:
        """Every path that belongs to one node (its entry points and configs)."""
        mac = mac_of(node)
        return {p for p in self.files if f"node-{node}/" in p or mac in p}


def mac_of(node: int) -> str:
    return "52-54-00-" + "-".join(f"{b:02x}" for b in node.to_bytes(3, "big"))


def is_index(path: str) -> bool:
    """The tree's index files (its root manifest.json and what it names), as opposed to its listed files."""
    return path in ("manifest.json", "SHA256SUMS") or path.startswith("index/")


def references(text: str) -> set[str]:
    """Paths of content-addressed objects an entry point names."""
    return set(_REF.findall(text))


def make_tree(root: Path, nodes: int, *, revisions: dict[int, int] | None = None,
              image_size: int = 1 << 20, image_seed: int = 0, extra: dict[str, bytes] | None = None) -> SynthTree:
    """Write a tree with `nodes` nodes; `revisions[n]` changes node n's config."""
    revisions = revisions or {}
    files: dict[str, bytes] = {}
    immutable: set[str] = set()
    image = random.Random(image_seed).randbytes(image_size)
    image_path = f"images/{_h16(image)}/vmlinuz"
    files[image_path] = image
    immutable.add(image_path)
    files["boot.ipxe"] = b"#!ipxe\ndhcp\nchain --autofree ipxe/${mac:hexhyp}.ipxe || chain ipxe/default.ipxe\n"
    files["ipxe/default.ipxe"] = b"#!ipxe\necho unknown machine\nexit\n"
    files["pxelinux.0"] = random.Random(1).randbytes(4096)
    for node in range(nodes):
        config = _config(node, revisions.get(node, 0))
        config_path = f"configs/node-{node}/{_h16(config)}/ignition.json"
        files[config_path] = config
        immutable.add(config_path)
        mac = mac_of(node)
        files[f"pxelinux.cfg/01-{mac}"] = (
            f"DEFAULT node\nLABEL node\n  KERNEL {BASE_URL}/{image_path}\n"
            f"  APPEND ignition.config.url={BASE_URL}/{config_path}\n").encode()
        files[f"ipxe/{mac}.ipxe"] = (
            f"#!ipxe\nkernel {BASE_URL}/{image_path} ignition.config.url={BASE_URL}/{config_path}\nboot\n").encode()
    files.update(extra or {})
    return write_tree(root, files, immutable)


def write_tree(root: Path, files: dict[str, bytes], immutable: set[str]) -> SynthTree:
    """Write files plus their index (manifest.json root and index/ shards) as the build does."""
    lines = {}
    for path in sorted(files):
        target = root / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(files[path])
        node = re.search(r"configs/(node-\d+)/", path)
        lines[path] = listing_lines(path, hashlib.sha256(files[path]).hexdigest(), len(files[path]),
                                    path in immutable, node.group(1) if node else None,
                                    path.rsplit(".", 1)[-1] if "." in path else "pxelinux")
    listing = Listing.of_lines(lines)
    build_id = listing.build_id()
    write_listing(root, listing, build_id, set(), root)
    return SynthTree(root, build_id, dict(files), frozenset(immutable))


def as_format_1(tree: SynthTree) -> None:
    """Rewrite a tree's index as bootgen wrote it before shards: one manifest.json and SHA256SUMS."""
    manifest = load_tree(tree.root)
    doc = {"bootgen_version": "0.1.0", "build_id": manifest.build_id, "files": [asdict(f) for f in manifest.files]}
    (tree.root / "manifest.json").write_text(json.dumps(doc, sort_keys=True, indent=2) + "\n")
    (tree.root / "SHA256SUMS").write_text(render_sums(manifest.files))
    shutil.rmtree(tree.root / "index")


def _config(node: int, revision: int) -> bytes:
    doc = {"ignition": {"version": "3.4.0"}, "passwd": {"users": [{"name": "core"}]},
           "storage": {"files": [{"path": "/etc/hostname", "contents": {"source": f"data:,node-{node}"}}]},
           "x-revision": revision}
    return json.dumps(doc, sort_keys=True).encode()


def _h16(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:16]
