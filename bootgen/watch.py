"""`bootgen watch` and `bootgen serve`: rebuild on every change, serve the tree.

File events from site/ and nodes/ are collected until the input has been quiet
for a short while (an editor's save is several events), then one incremental
build runs with the build state kept in memory. A build that fails prints its
problems and leaves the last good tree in place; the next save tries again.
"""
from __future__ import annotations

import functools
import http.server
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from .build import BuildResult, Paths, build
from .errors import BootgenError, format_problems
from .incremental import BuildState

QUIET_SECONDS = 0.03  # editors write a file as a burst of events within a few milliseconds
SAVE_AFTER_IDLE = 2.0  # persist the build state once edits pause


@dataclass
class Rebuilder:
    """Runs incremental builds for a watcher; remembers state between them."""

    paths: Paths
    report: Callable[[str], None]
    fetch: bool = True

    def __post_init__(self) -> None:
        self.state = BuildState.load_stamp(self.paths.state)
        self.dirty_state = False
        self.last: BuildResult | None = None

    def rebuild(self) -> BuildResult | None:
        """One build; problems are reported, never raised (the last good tree stays)."""
        try:
            result = build(self.paths, fetch=self.fetch, state=self.state, save_state=False)
        except BootgenError as exc:
            self.report(format_problems(exc.problems) + "\nbuild failed; still serving the last good tree")
            return None
        self.dirty_state = self.dirty_state or result.write.changed
        self.last = result
        self.report(result.summary())
        return result

    def save_state(self) -> None:
        if self.dirty_state:
            self.state.save(self.paths.state)
            self.dirty_state = False


class _Changes:
    """Thread-safe 'something changed at time t' flag fed by watchdog."""

    def __init__(self) -> None:
        self.event = threading.Event()
        self.last = 0.0

    def dispatch(self, event) -> None:  # watchdog calls this from its thread
        if event.event_type in ("opened", "closed_no_write"):
            return
        self.last = time.monotonic()
        self.event.set()


def watch(paths: Paths, report: Callable[[str], None], *, poll: bool = False, fetch: bool = True,
          stop: threading.Event | None = None, ready: threading.Event | None = None) -> None:
    """Build, then rebuild after every burst of changes until `stop` is set (or Ctrl-C)."""
    from watchdog.observers import Observer
    from watchdog.observers.polling import PollingObserver

    rebuilder = Rebuilder(paths, report, fetch)
    rebuilder.rebuild()
    changes = _Changes()
    observer = PollingObserver(timeout=0.5) if poll else Observer()
    for directory in (paths.site, paths.nodes):
        observer.schedule(changes, str(directory), recursive=True)
    observer.start()
    if ready is not None:
        ready.set()
    stop = stop or threading.Event()
    try:
        _loop(rebuilder, changes, stop)
    finally:
        observer.stop()
        observer.join(timeout=5)
        rebuilder.save_state()


def _loop(rebuilder: Rebuilder, changes: _Changes, stop: threading.Event) -> None:
    while not stop.is_set():
        if not changes.event.wait(timeout=SAVE_AFTER_IDLE):
            rebuilder.save_state()
            continue
        while time.monotonic() - changes.last < QUIET_SECONDS:  # wait out the burst
            time.sleep(QUIET_SECONDS / 3)
        changes.event.clear()
        rebuilder.rebuild()


def serve(paths: Paths, report: Callable[[str], None], *, bind: str = "127.0.0.1", port: int = 8000,
          poll: bool = False, fetch: bool = True, stop: threading.Event | None = None,
          ready: threading.Event | None = None) -> None:
    """`watch` plus an HTTP server on the output link (it follows every switch)."""
    handler = functools.partial(_QuietHandler, directory=str(paths.out.absolute()))
    server = http.server.ThreadingHTTPServer((bind, port), handler)
    host, actual_port = server.server_address[:2]
    report(serve_banner(paths, host, actual_port))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        watch(paths, report, poll=poll, fetch=fetch, stop=stop, ready=ready)
    finally:
        server.shutdown()
        server.server_close()


def serve_banner(paths: Paths, host: str, port: int) -> str:
    root = paths.out.absolute()
    return "\n".join([
        f"serving {root} at http://{host}:{port}/ (rebuilt on every change; Ctrl-C to stop)",
        f"  iPXE:       chain http://{host}:{port}/boot.ipxe",
        f"  manifest:   http://{host}:{port}/manifest.json",
        "  TFTP (BIOS, UEFI) from the same tree, as root:",
        f"    dnsmasq --keep-in-foreground --port=0 --enable-tftp --tftp-root={root} "
        f"--dhcp-range=<your subnet>,proxy --pxe-service=x86PC,bootgen,lpxelinux "
        f"--pxe-service=X86-64_EFI,bootgen,ipxe.efi --log-dhcp",
        f"  (the site's own config: {root}/server/dnsmasq.conf)",
    ])


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    """Serves the tree; resolves the output link per request so every switch is seen."""

    extensions_map = {**http.server.SimpleHTTPRequestHandler.extensions_map,
                      ".ipxe": "text/plain", ".ign": "application/json", ".cfg": "text/plain", "": "text/plain"}

    def translate_path(self, path: str) -> str:
        self.directory = str(Path(self.directory).resolve()) if Path(self.directory).is_symlink() else \
            self.directory
        return super().translate_path(path)

    def log_message(self, format: str, *args) -> None:  # keep the terminal for build summaries
        pass
