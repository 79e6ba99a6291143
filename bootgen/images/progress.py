"""Download progress: a rich progress bar on a terminal, nothing otherwise."""
from __future__ import annotations

import sys
from contextlib import contextmanager, nullcontext
from typing import Callable, Iterator

from .fetch import ProgressFactory


def progress_factory(enabled: bool | None) -> ProgressFactory:
    """A progress hook for Fetcher; `None` means "only when stderr is a terminal"."""
    if enabled is None:
        enabled = sys.stderr.isatty()
    return _rich_bar if enabled else _quiet


def _quiet(url: str, total: int | None):
    return nullcontext(lambda n: None)


@contextmanager
def _rich_bar(url: str, total: int | None) -> Iterator[Callable[[int], None]]:
    from rich.console import Console
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn

    name = url.rsplit("/", 1)[-1] or url
    columns = (TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn())
    with Progress(*columns, console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task(name, total=total)
        yield lambda n: bar.advance(task, n)
