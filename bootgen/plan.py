"""The build plan: every file the tree will hold, before anything is written.

Render steps add `Artifact`s to a `Plan`; the plan refuses two artifacts that
claim one path (naming both producers), and yields the manifest that publish
and the writer rely on.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from . import __version__
from .errors import Location, Problem, RenderError

MANIFEST = "manifest.json"
CHECKSUMS = "SHA256SUMS"


@dataclass(frozen=True)
class Artifact:
    """One file of the output tree: bytes to write, or a file to hard-link."""

    path: str
    sha256: str
    size: int
    immutable: bool  # content-addressed: its path changes whenever its bytes do
    node: str | None
    target: str
    data: bytes | None = None
    source: Path | None = None

    @classmethod
    def from_bytes(cls, path: str, data: bytes, *, target: str, node: str | None = None,
                   immutable: bool = False) -> "Artifact":
        return cls(path, hashlib.sha256(data).hexdigest(), len(data), immutable, node, target, data=data)

    def manifest_entry(self) -> dict:
        return {"path": self.path, "size": self.size, "sha256": self.sha256, "immutable": self.immutable,
                "node": self.node, "target": self.target}


def content_path(prefix: str, files: dict[str, bytes]) -> str:
    """Directory path derived from the content of all files in it (16 hex digits)."""
    digest = hashlib.sha256()
    for name in sorted(files):
        digest.update(name.encode() + b"\0" + hashlib.sha256(files[name]).digest())
    return f"{prefix}/{digest.hexdigest()[:16]}"


class Plan:
    """Artifacts by path; a second claim on a path is an error, not an overwrite."""

    def __init__(self) -> None:
        self.artifacts: dict[str, Artifact] = {}
        self.problems: list[Problem] = []

    def add(self, artifact: Artifact) -> None:
        existing = self.artifacts.get(artifact.path)
        if existing is None:
            self.artifacts[artifact.path] = artifact
        elif existing.sha256 != artifact.sha256 or artifact.source is None:
            # Identical image files may be placed by two image sets; rendered files never collide.
            self.problems.append(Problem(
                Location(artifact.path), f"two outputs claim this path: {_producer(existing)} and {_producer(artifact)}",
                hint="file names come from MACs, addresses and node names; make them unique"))

    def check(self) -> None:
        if self.problems:
            raise RenderError(self.problems)

    def manifest(self) -> dict:
        files = [self.artifacts[p].manifest_entry() for p in sorted(self.artifacts)]
        listing = "".join(f"{f['sha256']}  {f['path']}\n" for f in files)
        return {"bootgen_version": __version__,
                "build_id": hashlib.sha256(listing.encode()).hexdigest(),
                "files": files}


def _producer(artifact: Artifact) -> str:
    return f"{artifact.target} for node '{artifact.node}'" if artifact.node else artifact.target


_ENTRY_ENCODER = json.JSONEncoder(sort_keys=True)


def manifest_bytes(manifest: dict) -> bytes:
    """manifest.json: sorted keys, one file per line (json's indent= is 20x slower on 80,000 files)."""
    encode = _ENTRY_ENCODER.encode  # one encoder: json.dumps(sort_keys=True) builds a new one per call
    files = ",\n    ".join(map(encode, manifest["files"]))
    head = {k: v for k, v in manifest.items() if k != "files"}
    fields = [f"  {json.dumps(k)}: {json.dumps(v)}" for k, v in sorted(head.items())]
    fields.append(f'  "files": [\n    {files}\n  ]' if files else '  "files": []')
    return ("{\n" + ",\n".join(sorted(fields)) + "\n}\n").encode()


def checksums_bytes(manifest: dict) -> bytes:
    return "".join(f"{f['sha256']}  {f['path']}\n" for f in manifest["files"]).encode()
