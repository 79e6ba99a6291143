"""Progress display: a rich bar on a terminal, nothing otherwise."""
from __future__ import annotations

import sys
import threading
from typing import Protocol


class Progress(Protocol):
    def start(self, total_bytes: int, label: str) -> None: ...
    def advance(self, nbytes: int) -> None: ...
    def stop(self) -> None: ...


class NullProgress:
    """Quiet progress for pipes, CI logs and tests."""

    def start(self, total_bytes: int, label: str) -> None:
        pass

    def advance(self, nbytes: int) -> None:
        pass

    def stop(self) -> None:
        pass


class RichProgress:
    """A transfer bar on stderr; rich is imported only when a bar is really shown."""

    def __init__(self) -> None:
        from rich.progress import (BarColumn, DownloadColumn, Progress as _Bar,
                                   TextColumn, TimeRemainingColumn, TransferSpeedColumn)
        from rich.console import Console

        self._bar = _Bar(TextColumn("{task.description}"), BarColumn(), DownloadColumn(),
                         TransferSpeedColumn(), TimeRemainingColumn(),
                         console=Console(stderr=True), transient=True)
        self._lock = threading.Lock()
        self._task = None

    def start(self, total_bytes: int, label: str) -> None:
        self._bar.start()
        self._task = self._bar.add_task(label, total=total_bytes)

    def advance(self, nbytes: int) -> None:
        with self._lock:  # boto3 calls back from several transfer threads
            self._bar.advance(self._task, nbytes)

    def stop(self) -> None:
        self._bar.stop()


def make_progress(enabled: bool | None) -> Progress:
    """`None` means: a bar only when stderr is a terminal."""
    if enabled is None:
        enabled = sys.stderr.isatty()
    return RichProgress() if enabled else NullProgress()
