"""What a publish did (or, with --dry-run, would do)."""
from __future__ import annotations

import threading
from dataclasses import dataclass


@dataclass(frozen=True)
class Action:
    """One planned or performed change at the destination."""

    verb: str  # "upload", "delete" or "link"
    path: str
    size: int = 0

    def __str__(self) -> str:
        return f"{self.verb} {self.path}"


@dataclass(frozen=True)
class PublishReport:
    """Counts of a publish; `actions` lists every change in the order it was (or would be) made."""

    destination: str
    build_id: str
    uploaded: int
    skipped: int
    deleted: int
    requests: int
    bytes: int
    dry_run: bool = False
    actions: tuple[Action, ...] = ()
    tree: str = ""  # the local tree published

    def summary(self) -> str:
        """One line for the terminal."""
        verb = "would upload" if self.dry_run else "uploaded"
        dverb = "would delete" if self.dry_run else "deleted"
        return (f"{self.destination}: build {self.build_id[:12]}: {verb} {self.uploaded} "
                f"({_human(self.bytes)}), {self.skipped} unchanged, {dverb} {self.deleted}, "
                f"{self.requests} requests")


def _human(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"


class RequestCounter:
    """Thread-safe count of HTTP requests, fed by a botocore `before-send` hook."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.count = 0

    def __call__(self, **_kwargs) -> None:
        with self._lock:
            self.count += 1
