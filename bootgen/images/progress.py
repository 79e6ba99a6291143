"""Download progress: a rich progress bar on a terminal, nothing otherwise.

A transfer that has received nothing for a while says so ("stalled 12s")
instead of showing its last speed forever.
"""
from __future__ import annotations

import sys
import time
from contextlib import contextmanager, nullcontext
from typing import Callable, Iterator

from .fetch import FetchPolicy, ProgressFactory


def progress_factory(enabled: bool | None, stall_after: float = FetchPolicy.stall_after) -> ProgressFactory:
    """A progress hook for Fetcher; `None` means "only when stderr is a terminal"."""
    if enabled is None:
        enabled = sys.stderr.isatty()
    if not enabled:
        return _quiet

    def bar(url: str, total: int | None):
        return _rich_bar(url, total, stall_after)
    return bar


def _quiet(url: str, total: int | None):
    return nullcontext(lambda n: None)


def stall_text(last_byte_at: float | None, stall_after: float, now: float | None = None) -> str:
    """'stalled 12s' once nothing has arrived for `stall_after` seconds, else ''."""
    if last_byte_at is None:
        return ""
    idle = (time.monotonic() if now is None else now) - last_byte_at
    return f"stalled {idle:.0f}s" if idle >= stall_after else ""


def stall_column(stall_after: float):
    """A rich column showing `stall_text` for a task (the bar refreshes it while reads block)."""
    from rich.progress import ProgressColumn
    from rich.text import Text

    class StallColumn(ProgressColumn):
        def render(self, task) -> Text:
            return Text(stall_text(task.fields.get("last_byte_at"), stall_after), style="bold red")

    return StallColumn()


@contextmanager
def _rich_bar(url: str, total: int | None, stall_after: float) -> Iterator[Callable[[int], None]]:
    from rich.console import Console
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn

    name = url.rsplit("/", 1)[-1] or url
    columns = (TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
               stall_column(stall_after))
    with Progress(*columns, console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task(name, total=total, last_byte_at=time.monotonic())
        yield lambda n: bar.update(task, advance=n, last_byte_at=time.monotonic())
