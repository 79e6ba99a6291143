"""`bootgen watch` and `bootgen serve`: rebuild on every change, serve the tree.

File events from site/ and nodes/ are collected until the input has been quiet
for a short while (an editor's save is several events: 30 ms, or 5 ms once a
file was closed after writing or renamed into place), then one incremental
build runs with the build state kept in memory: only the files the events name
are stat'ed again. A build that fails prints its problems and leaves the last
good tree in place; the next save tries again.

Watch builds switch to a new tree without first flushing it to disk (the
kernel writes it back within seconds): a power cut in that window can leave
the newest tree incomplete on disk. `bootgen build` always flushes first.
When edits pause, every input is stat'ed again, so an event the watcher
missed is caught within seconds, the state is saved and the live tree
flushed, so the next `bootgen build` need flush only what it changes.
"""
from __future__ import annotations

import errno
import functools
import http.server
import ipaddress
import json
import os
import shlex
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from .content import content_type
from .build import BuildResult, Paths, build, warm_up
from .errors import BootgenError, Location, OutputError, Problem, format_problems
from .incremental import BuildState, InputStamps
from .write import build_lock, live_build_id, make_live_durable

QUIET_SECONDS = 0.03  # editors write a file as a burst of events within a few milliseconds
SETTLED_SECONDS = 0.005  # after a file is closed or renamed into place, the save is usually done
SAVE_AFTER_IDLE = 2.0  # persist the build state once edits pause


@dataclass
class Rebuilder:
    """Runs incremental builds for a watcher; remembers state between them."""

    paths: Paths
    report: Callable[[str], None]
    fetch: bool = True
    fmt: str = "text"  # json: each report is one JSON object on one line

    def __post_init__(self) -> None:
        self.state = BuildState.load_stamp(self.paths.state)
        self.dirty_state = False
        self.last: BuildResult | None = None
        self.stamps: InputStamps | None = None  # as of the last build, kept current from events

    def rebuild(self, changed: set[str] | None = None) -> BuildResult | None:
        """One build after the files in `changed` changed (None: look at every input).

        Problems are reported, never raised (the last good tree stays)."""
        paths = self.paths
        if self.state.build_id and live_build_id(paths.out, paths.state) != self.state.build_id:
            # Another process built or rolled back: its saved state (checked under the build
            # lock) describes the live tree; this one's would make the build start from scratch.
            self.state, self.dirty_state = BuildState.load_stamp(paths.state), False
        known = self.stamps is not None and changed is not None
        stamps = self.stamps.updated(paths.site, paths.nodes, changed) if known else None
        try:
            result = build(paths, fetch=self.fetch, state=self.state, save_state=False, stamps=stamps,
                           durable=False)
        except BootgenError as exc:
            self._say(format_problems(exc.problems) + "\nbuild failed; still serving the last good tree",
                      "failed", problems=[p.as_dict() for p in exc.problems])
            return None
        except Exception as exc:  # a bug in bootgen: say so, start the next build from scratch, keep serving
            self.state = BuildState.load_stamp(self.paths.state)
            self.state.attempt = None
            message = f"internal error: {type(exc).__name__}: {exc}"
            self._say(f"{message}\n  this is a bug in bootgen; the next change rebuilds from scratch\n"
                      "build failed; still serving the last good tree", "internal_error", message=message)
            return None
        finally:
            self.stamps = self.state.attempt[0] if self.state.attempt else None
        self.dirty_state = True
        self.last = result
        self._say(result.summary(), "built", **result.as_dict())
        return result

    def _say(self, text: str, event: str, **data) -> None:
        self.report(json.dumps({"event": event, **data}, sort_keys=True) if self.fmt == "json" else text)

    def warm_up(self) -> None:
        """Have the first edit cost what later ones do (see bootgen.build.warm_up)."""
        if self.stamps is not None:
            warm_up(self.paths, self.state, self.stamps, fetch=self.fetch)

    def save_state(self) -> None:
        """Save the state for the next `bootgen build`, under the build lock, unless it describes
        a tree that is no longer live (another process built or rolled back meanwhile: its own
        state, or none, is right). While another process builds, the save waits for the next pause."""
        if not self.dirty_state:
            return
        with build_lock(self.paths.repository_state, wait=False) as held:
            if not held:
                return
            if live_build_id(self.paths.out, self.paths.state) == self.state.build_id:
                self.state.save(self.paths.state)
                # Watch switches without flushing; flushed now, the next `bootgen build` need
                # flush only what it changes.
                make_live_durable(self.paths.out, self.paths.state)
            self.dirty_state = False

    def missed_changes(self) -> bool:
        """True if some input's stat differs from what events told (a missed event)."""
        return self.stamps is not None and InputStamps.take(self.paths.site, self.paths.nodes) != self.stamps


class _Changes:
    """The paths changed since the last build and when the latest changed; fed by watchdog."""

    def __init__(self) -> None:
        self.event = threading.Event()
        self.last = 0.0
        self.quiet = QUIET_SECONDS  # how long to wait after the latest event
        self._lock = threading.Lock()
        self._paths: set[str] = set()

    def dispatch(self, event) -> None:  # watchdog calls this from its thread
        if event.event_type in ("opened", "closed_no_write"):
            return
        if event.is_directory and event.event_type == "modified":
            # Sent for the parent of every file written, created or removed, beside
            # that file's own event; naming nodes/ itself would mean re-stating all of it.
            return
        with self._lock:
            self._paths.add(event.src_path)
            if getattr(event, "dest_path", ""):
                self._paths.add(event.dest_path)
        self.quiet = SETTLED_SECONDS if event.event_type in ("closed", "moved") else QUIET_SECONDS
        self.last = time.monotonic()
        self.event.set()

    def take(self) -> set[str]:
        with self._lock:
            self.event.clear()
            paths, self._paths = self._paths, set()
        return {os.fsdecode(path) for path in paths}


def watch(paths: Paths, report: Callable[[str], None], *, poll: bool = False, fetch: bool = True,
          stop: threading.Event | None = None, ready: threading.Event | None = None, fmt: str = "text") -> None:
    """Build, then rebuild after every burst of changes until `stop` is set (or Ctrl-C).

    With fmt "json", every report is one JSON object with an "event" key (built, failed, internal_error)."""
    from watchdog.observers import Observer
    from watchdog.observers.polling import PollingObserver

    rebuilder = Rebuilder(paths, report, fetch, fmt)
    rebuilder.rebuild()
    rebuilder.warm_up()
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
    idle_checked = False
    while not stop.is_set():
        if not changes.event.wait(timeout=SAVE_AFTER_IDLE):
            if not idle_checked and rebuilder.missed_changes():
                rebuilder.rebuild()
            idle_checked = True
            rebuilder.save_state()
            continue
        while time.monotonic() - changes.last < changes.quiet:  # wait out the burst
            time.sleep(SETTLED_SECONDS / 5)
        rebuilder.rebuild(changes.take())
        idle_checked = False


def serve(paths: Paths, report: Callable[[str], None], *, bind: str = "127.0.0.1", port: int = 8000,
          url: str | None = None, poll: bool = False, fetch: bool = True, stop: threading.Event | None = None,
          ready: threading.Event | None = None, fmt: str = "text") -> None:
    """`watch` plus an HTTP server, on a development tree of its own whose URLs point at this server.

    Like `mkdocs serve` overriding site_url: the tree is built with base_url
    `url` (http://BIND:PORT/ by default) beside the build state, in
    `.bootgen/serve/`, and `paths.out` (the tree `bootgen build` makes) is
    left alone."""
    if url is not None:
        _check_url(url)
    server = _listen(bind, port)
    try:
        host, actual_port = server.server_address[:2]
        dev = serve_paths(paths, url or _default_url(bind, host, actual_port))
        server.RequestHandlerClass = functools.partial(_QuietHandler, directory=str(dev.out.absolute()))
        if fmt == "json":
            report(json.dumps({"event": "serving", "root": str(dev.out.absolute()), "url": dev.base_url,
                               "ipxe": f"{dev.base_url}boot.ipxe",
                               "dnsmasq": dnsmasq_command(dev)}, sort_keys=True))
        else:
            report(serve_banner(dev))
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            watch(dev, report, poll=poll, fetch=fetch, stop=stop, ready=ready, fmt=fmt)
        finally:
            server.shutdown()
    finally:
        server.server_close()


def serve_paths(paths: Paths, url: str) -> Paths:
    """The development tree's output: `.bootgen/serve/build`, built for `url`."""
    home = paths.repository_state
    return Paths(paths.site, paths.nodes, home / "serve" / "build", base_url=url, home=home, variant="serve")


def _listen(bind: str, port: int) -> http.server.ThreadingHTTPServer:
    """The HTTP server, bound; a port or address that cannot be used is the user's to change."""
    where = Location(f"--port {port}")
    if not 0 <= port <= 65535:
        raise OutputError(Problem(where, "not a TCP port", hint="use a port from 1 to 65535 (0: any free one)"))
    try:
        return http.server.ThreadingHTTPServer((bind, port), _QuietHandler)
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            hint = f"another program listens there: pick another with --port, or see which with `ss -ltnp 'sport = :{port}'`"
        elif exc.errno == errno.EACCES:
            hint = "ports below 1024 need root: pick a port above 1023 with --port"
        else:
            where = Location(f"--bind {bind}")
            hint = "bind to an address of this machine (127.0.0.1 by default)"
        raise OutputError(Problem(where, f"cannot serve on {bind}:{port}: {exc.strerror or exc}",
                                  hint=hint)) from None


def _check_url(url: str) -> None:
    from .schema import base_url_problem

    problem = base_url_problem(url)
    if problem:
        raise OutputError(Problem(Location(f"--url {url}"), problem, hint="e.g. --url http://10.0.0.1:8000/"))


def _default_url(bind: str, host: str, port: int) -> str:
    """http://BIND:PORT/; a server on every address needs the one machines use, named with --url."""
    if ipaddress.ip_address(host).is_unspecified:
        raise OutputError(Problem(Location(f"--bind {bind}"), "machines cannot be sent to an unspecified address",
                                  hint=f"name the address they reach this server at: --url http://SERVER-IP:{port}/"))
    return f"http://{f'[{host}]' if ':' in host else host}:{port}/"


def serve_banner(paths: Paths) -> str:
    """Where the development tree is served and how to point machines at it (as its own files do)."""
    root, url = paths.out.absolute(), paths.base_url
    command = dnsmasq_command(paths)
    return "\n".join([
        f"serving {root} at {url} (rebuilt on every change; Ctrl-C to stop; build/ is left alone)",
        f"  iPXE:       chain {url}boot.ipxe",
        f"  manifest:   {url}manifest.json",
        "  DHCP and TFTP from the same tree, as root:",
        "    " + (command or "(none until the site's problems, reported below, are fixed)"),
        f"  (the site's own config, for the same URLs: {root}/server/dnsmasq.conf)",
    ])


def dnsmasq_command(paths: Paths) -> str | None:
    """The dnsmasq command line for the development tree: the same answers as the site's
    generated dnsmasq.conf (its dhcp.mode, its loaders for the architectures it boots, the iPXE
    guard), serving TFTP from the tree and naming this server as next-server. None while the
    site itself has problems (watch reports them)."""
    from urllib.parse import urlsplit

    from .load import Reader, load_inputs, load_site
    from .loaders import boots_raspberry_pis, site_arches
    from .render import dhcp_hosts
    from .render.dhcp import dnsmasq_arguments
    from .render.targets import mixed_secure_boot

    try:
        inputs = load_site(paths.site, paths.nodes, Reader(Path.cwd()), env=paths.env, base_url=paths.base_url)
        mixed = mixed_secure_boot(inputs)
        hosts = ()
        if mixed:  # which machines get the other chain: read the nodes (those with problems left out)
            every = load_inputs(paths.site, paths.nodes, node_problems=[], env=paths.env, base_url=paths.base_url)
            hosts = dhcp_hosts(every.nodes, every)
    except BootgenError:
        return None
    images = inputs.image_config
    return shlex.join(dnsmasq_arguments(inputs.site, site_arches(images), boots_raspberry_pis(images),
                                        str(paths.out.absolute()), urlsplit(inputs.site.base_url).hostname or "",
                                        mixed_secure_boot=mixed, hosts=hosts))


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    """Serves the tree; resolves the output link per request so every switch is seen."""

    def guess_type(self, path) -> str:
        """The type the manifest gives this file (bootgen.content), as nginx and S3 send it."""
        return content_type(os.path.relpath(path, self.directory).replace(os.sep, "/"))

    def translate_path(self, path: str) -> str:
        self.directory = str(Path(self.directory).resolve()) if Path(self.directory).is_symlink() else \
            self.directory
        return super().translate_path(path)

    def log_message(self, format: str, *args) -> None:  # keep the terminal for build summaries
        pass
