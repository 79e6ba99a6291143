"""A publish target in memory: the whole of what a new kind of destination must implement.

It keeps one namespace of paths, as a bucket does (bootgen.publish.stores.s3):
files of every build side by side, the served root at `manifest.json`.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

from bootgen.publish.manifest import MANIFEST, FileEntry
from bootgen.publish.progress import Progress
from bootgen.publish.protocol import Store
from bootgen.publish.report import Action

HISTORY = ".meta/history.json"


class MemoryStore(Store):
    def __init__(self, destination: str = "memory://site"):
        self.destination = destination
        self.files: dict[str, bytes] = {}

    def live_root(self) -> bytes | None:
        return self.files.get(MANIFEST)

    def history(self) -> tuple[str, ...]:
        return tuple(json.loads(self.files.get(HISTORY, b"[]")))

    def archived_root(self, build_id: str) -> bytes | None:
        return self.files.get(f".meta/roots/{build_id}.json")

    def shard(self, build_id: str | None, shard_id: str) -> bytes | None:
        return self.files.get(f"index/{shard_id}.json") or self.files.get(f".meta/index/{shard_id}.json")

    def present(self, entries: list[FileEntry], tree: Path, known: int) -> set[str]:
        return {e.path for e in entries if self.files.get(e.path) == (tree / e.path).read_bytes()}

    def upload(self, entry: FileEntry, source: Path, progress: Progress) -> None:
        self.files[entry.path] = source.read_bytes()

    def put_index(self, path: str, source: Path, private: bool) -> None:
        self.files[f".meta/{path}" if private else path] = source.read_bytes()

    def archive(self, build_id: str, root: bytes, private: bool) -> None:
        self.files[f".meta/roots/{build_id}.json"] = root

    def switch(self, build_id: str, root: bytes) -> None:
        self.files[MANIFEST] = root

    def delete(self, paths: list[str]) -> None:
        for path in paths:
            self.files.pop(path, None)

    def record(self, history: tuple[str, ...]) -> None:
        self.files[HISTORY] = json.dumps(list(history)).encode()

    def retain(self, kept: tuple[str, ...], referenced: Callable[[], set[str]], dry_run: bool) -> list[Action]:
        keep = referenced() | {MANIFEST, HISTORY} | {f".meta/roots/{b}.json" for b in kept}
        doomed = [p for p in self.files if p not in keep and p.removeprefix(".meta/") not in keep]
        if not dry_run:
            self.delete(doomed)
        return [Action("delete", p) for p in doomed]
