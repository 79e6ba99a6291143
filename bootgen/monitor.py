"""Which node files changed since the last build, without a stat of every one of them.

A fresh `bootgen build` must find the one node file an edit changed among
100,000: a stat of each costs a quarter of a second, more than the rest of the
edit. So a build of a large fleet starts a small detached process (this
module's `serve`, once), which keeps an inotify watch on nodes/ and numbers every change;
the next build asks it over a Unix socket in `.bootgen/` for the names changed
since the number the live tree's state was built from, as git's fsmonitor and
watchman do. Before it answers, it creates a cookie file in a watched
directory and waits for that event: every change made before the question is
then in its list.

The answer is trusted only from the process that gave the number (its
`epoch`); anything else (no monitor, one started since, a lost event queue,
nodes/ moved) means a full scan, as without a monitor. The monitor stops when
the repository's `.bootgen` goes or after MONITOR_IDLE seconds without a
question, and only fleets of MONITOR_MIN_NODES or more start one.

Changes are seen by the kernel's inotify: a file system mounted from
elsewhere (NFS) where another machine edits nodes/ is not; set
BOOTGEN_MONITOR=0 there.
"""
from __future__ import annotations

import hashlib
import os
import secrets
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

MONITOR_MIN_NODES = 2_000  # below this, a stat of every node file costs less than asking
MONITOR_IDLE = 6 * 3600  # seconds without a question before the monitor stops
ASK_TIMEOUT = 2.0  # seconds a build waits for an answer before it scans instead
COOKIE_TIMEOUT = 1.5
START_WAIT = 3.0  # seconds a build waits for a monitor it started to answer
SOCKET_PATH_MAX = 108  # sun_path, with its terminating NUL


@dataclass(frozen=True)
class Answer:
    token: str  # "<epoch>:<number>": what to ask from next time
    changed: tuple[str, ...] | None  # names in nodes/ changed since the token asked about; None: unknown


def enabled() -> bool:
    return os.environ.get("BOOTGEN_MONITOR", "1") != "0" and sys.platform.startswith("linux")


def socket_path(state_dir: Path, nodes_dir: Path) -> Path:
    """One monitor per repository and nodes directory (environments share nodes/)."""
    key = hashlib.sha256(str(Path(nodes_dir).resolve()).encode()).hexdigest()[:16]
    return Path(state_dir) / "monitor" / f"{key}.sock"


def ask(state_dir: Path, nodes_dir: Path, since: str) -> Answer | None:
    """The names changed since token `since` (changed None if that is not known), with the
    token to ask from next time; None if no monitor answers."""
    path = socket_path(state_dir, nodes_dir)
    if not enabled() or not path.exists():
        return None
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
            conn.settimeout(ASK_TIMEOUT)
            conn.connect(str(path))
            conn.sendall(f"since {since or '-'}\n".encode())
            data = b""
            while not data.endswith(b"\n"):
                chunk = conn.recv(1 << 16)
                if not chunk:
                    return None
                data += chunk
    except OSError:
        return None
    kind, token, *names = data.decode("utf-8", "surrogateescape").rstrip("\n").split("\0")
    if kind == "ok":
        return Answer(token, tuple(names))
    if kind == "reset":
        return Answer(token, None)
    return None


def stop(state_dir: Path, nodes_dir: Path) -> bool:
    """Ask the monitor of `nodes_dir` to stop; True if one answered."""
    path = socket_path(state_dir, nodes_dir)
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
            conn.settimeout(ASK_TIMEOUT)
            conn.connect(str(path))
            conn.sendall(b"stop\n")
            return conn.recv(16).startswith(b"stopped")
    except OSError:
        return False


def start(state_dir: Path, nodes_dir: Path) -> None:
    """Start a monitor for `nodes_dir` in the background, unless one runs (it takes a lock)."""
    if not enabled():
        return
    path = socket_path(state_dir, nodes_dir)
    if len(os.fsencode(path)) >= SOCKET_PATH_MAX:
        return  # a Unix socket cannot live there: every build scans
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    package_root = str(Path(__file__).resolve().parent.parent)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [package_root, os.environ.get("PYTHONPATH")]))}
    subprocess.Popen([sys.executable, "-m", "bootgen.monitor", str(Path(nodes_dir).resolve()), str(path)],
                     start_new_session=True, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                     stderr=subprocess.DEVNULL, env=env, cwd="/")


def start_and_ask(state_dir: Path, nodes_dir: Path, wait: float = START_WAIT) -> Answer | None:
    """Start a monitor and return its first answer (a number to ask from), or None if it did
    not answer within `wait` seconds (the next build asks again)."""
    start(state_dir, nodes_dir)
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        answer = ask(state_dir, nodes_dir, "")
        if answer is not None:
            return answer
        time.sleep(0.02)
    return None


class _Journal:
    """The numbered changes seen in nodes/ (callbacks from watchdog's inotify thread)."""

    def __init__(self, cookies_dir: str):
        self.cookies_dir = cookies_dir
        self.epoch = secrets.token_hex(8)
        self.number = 0
        self.changed: dict[str, int] = {}  # name -> number of its latest change
        self.broken = threading.Event()  # events were lost, or nodes/ went: every answer is unknown
        self.cookies: dict[str, threading.Event] = {}
        self.lock = threading.Lock()
        self.cookie_wd = None

    # WatchCallback for nodes/ and the cookies directory
    def on_event(self, event) -> None:
        name = os.fsdecode(event.name)
        with self.lock:
            if event.wd == self.cookie_wd:
                waiting = self.cookies.pop(name, None)
                if waiting is not None:
                    waiting.set()
                return
            if event.is_delete_self or event.is_move_self or event.is_ignored:
                self.broken.set()
                return
            if name:
                self.number += 1
                self.changed[name] = self.number

    def on_watch_deleted(self, wd) -> None:
        self.broken.set()

    def on_queue_overflow(self) -> None:
        self.broken.set()

    def answer(self, since: str) -> str:
        """The reply to a question: every change made before it is counted first (the cookie)."""
        cookie = secrets.token_hex(8)
        seen = threading.Event()
        with self.lock:
            self.cookies[cookie] = seen
        cookie_path = os.path.join(self.cookies_dir, cookie)
        with open(cookie_path, "wb"):
            pass
        arrived = seen.wait(COOKIE_TIMEOUT)
        os.unlink(cookie_path)
        with self.lock:
            token = f"{self.epoch}:{self.number}"
            epoch, _, number = since.partition(":")
            if not arrived or self.broken.is_set() or epoch != self.epoch or not number.isdigit():
                return f"reset\0{token}\n"
            names = [name for name, at in self.changed.items() if at > int(number)]
        return "\0".join(["ok", token, *names]) + "\n"


def serve(nodes_dir: str, sock: str) -> None:
    """The monitor process: answer questions until idle, broken, or its repository is gone."""
    import fcntl

    from watchdog.observers.inotify_c import InotifyConstants as C, InotifyFD

    home = os.path.dirname(sock)
    lock = open(sock + ".lock", "w")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return  # one runs already
    cookies = os.path.join(home, "cookies-" + os.path.basename(sock).split(".")[0])
    os.makedirs(cookies, exist_ok=True)
    journal = _Journal(cookies)
    inotify = InotifyFD.get_instance()
    mask = (C.IN_CREATE | C.IN_DELETE | C.IN_MODIFY | C.IN_CLOSE_WRITE | C.IN_ATTRIB | C.IN_MOVED_FROM
            | C.IN_MOVED_TO | C.IN_DELETE_SELF | C.IN_MOVE_SELF)
    journal.cookie_wd = inotify.add_callback(os.fsencode(cookies), C.IN_CREATE, journal, "cookies")
    inotify.add_callback(os.fsencode(nodes_dir), mask, journal, "nodes")
    # Bound only now: a question only ever reaches a monitor whose watches are in place.
    server, ours = listen_at(sock)
    alive = lambda: not journal.broken.is_set() and os.path.isdir(home) and os.path.isdir(nodes_dir)  # noqa: E731
    with server:
        for conn in connections(server, MONITOR_IDLE, alive):
            conn.settimeout(ASK_TIMEOUT)
            try:
                question = conn.recv(4096).decode().split()
                if question == ["stop"]:
                    conn.sendall(b"stopped\n")
                    break
                since = question[1] if len(question) == 2 and question[0] == "since" else "-"
                conn.sendall(journal.answer(since).encode("utf-8", "surrogateescape"))
            except OSError:
                continue
    remove_if_ours(sock, ours)


def listen_at(sock: str) -> tuple[socket.socket, int]:
    """A Unix socket listening at `sock` (put in place atomically over a stale one), with a
    10-second accept timeout, and the inode that tells it from a later server's."""
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    temp = f"{sock}.{os.getpid()}"
    server.bind(temp)
    os.replace(temp, sock)
    server.listen(8)
    server.settimeout(10)
    return server, os.stat(sock).st_ino


def connections(server: socket.socket, idle: float, alive):
    """Each connection accepted on `server` (closed once handled), until `idle` seconds pass
    without one or `alive()`, asked at least every accept timeout, says stop."""
    last = time.monotonic()
    while time.monotonic() - last < idle and alive():
        try:
            conn, _ = server.accept()
        except socket.timeout:
            continue
        last = time.monotonic()
        with conn:
            yield conn


def is_ours(sock: str, ours: int) -> bool:
    """Whether `sock` is still the one this server bound (not gone, not a newer server's)."""
    try:
        return os.stat(sock).st_ino == ours
    except OSError:
        return False


def remove_if_ours(sock: str, ours: int) -> None:
    if is_ours(sock, ours):
        try:
            os.unlink(sock)
        except OSError:
            pass


if __name__ == "__main__":
    serve(sys.argv[1], sys.argv[2])
