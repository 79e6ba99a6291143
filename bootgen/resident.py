"""The resident builder: `bootgen build` of a large fleet, run by a process that stays warm.

A one-node edit of a 100,000-node fleet costs a fresh process about 0.3 s
before it renders anything: Python's start, bootgen's imports (jsonschema,
Jinja2, click), the site's validation, the state's root and the live tree's
index. `watch` pays that once. So, as Gradle's daemon and the node-file
monitor do, a build of a large fleet (MIN_NODES or more) leaves a detached
process behind, holding what the next build needs in memory, and the next
`bootgen build` hands its work to it over a Unix socket in `.bootgen/`:

- The client (`forward`, called before anything heavy is imported) sends its
  arguments, working directory, environment and umask, and its standard
  input, output and error themselves (SCM_RIGHTS): the build prints to the
  user's terminal or pipe as if it ran there, and exits with the same code.
- The server runs the very `bootgen build` command a fresh process runs (the
  same click command, the same `build()`, the inputs found the same way, the
  tree flushed and the state saved the same way); only the modules, the
  site, the node records and the live tree's index are already in memory.
- What it holds is trusted only while the state on disk is the state it last
  saw (the stamp file and the records' root, unchanged) and the live tree is
  the one that state describes: another process's build or a rollback in
  between, or a failed build, means that state is loaded from disk again.
- New bootgen code (an upgrade, an edit of a development install) makes it
  decline and stop; the client then builds itself, as it does whenever no
  resident answers, one is busy, or the connection drops before the build's
  exit code arrives (builds are atomic, so a second attempt is safe).

Ctrl-C in the client interrupts the build in the server (SIGINT), which
leaves the previous tree untouched as ever. The server stops after IDLE
seconds without a build, when `.bootgen/` goes, or when asked
(`bootgen build` with BOOTGEN_RESIDENT=0 never starts or uses one).
"""
from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
import struct
import sys
from pathlib import Path

MIN_NODES = 2_000  # a smaller fleet's fresh build costs little more than handing it over
IDLE = 30 * 60  # seconds without a build before the server stops (it holds the fleet's state)
CONNECT_TIMEOUT = 2.0
ACCEPT_TIMEOUT = 10.0  # a server busy (another build, its warm-up) or stuck longer: the client builds itself
SOCKET_PATH_MAX = 108
KEEP_OUTPUTS = 2  # outputs (environments) whose state one server keeps in memory
COMMANDS = ("build", "publish")  # what it runs: a publish gains its imports (botocore's too)


def enabled() -> bool:
    return os.environ.get("BOOTGEN_RESIDENT", "1") != "0" and sys.platform.startswith("linux")


def socket_path(repository_state: Path) -> Path:
    """One server per repository and bootgen installation (interpreter and package)."""
    package = os.path.dirname(os.path.realpath(__file__))
    key = hashlib.sha256(f"{os.path.realpath(sys.executable)}\0{package}".encode()).hexdigest()[:16]
    return Path(repository_state) / "resident" / f"{key}.sock"


# ---------------------------------------------------------------- client

def forward(argv: list[str]) -> int | None:
    """Run `bootgen build` or `bootgen publish` (argv without the program name) in the resident
    builder; its exit code, or None when there is none to run it (the caller then runs it)."""
    if not argv or argv[0] not in COMMANDS or not enabled():
        return None
    path = socket_path(_repository_state(argv[1:]))
    if not path.exists():
        return None
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        conn.settimeout(CONNECT_TIMEOUT)
        conn.connect(str(path))
        _send_request(conn, argv)
        conn.settimeout(ACCEPT_TIMEOUT)
        replies = conn.makefile("rb")
        reply = _line(replies)
    except OSError:
        reply = ""
    if not reply.startswith("ok "):
        conn.close()
        return None  # none answered, or declined: new code, another user, or busy with a build of its own
    server_pid = int(reply.split()[1])
    conn.settimeout(None)  # the build takes as long as it takes; a dead server closes the socket
    try:
        done = _line(replies)
    except KeyboardInterrupt:
        _interrupt(server_pid, conn, replies)
        return 130
    except OSError:
        done = ""
    finally:
        replies.close()
        conn.close()
    if done.startswith("exit "):
        return int(done.split()[1])
    print("bootgen: the resident builder stopped during the build; building in this process", file=sys.stderr)
    return None


def _repository_state(args: list[str]) -> Path:
    """`.bootgen` beside the output link, as bootgen.build.Paths places it. Only picks the
    socket: the server parses the arguments itself, so a wrong guess costs speed, not truth."""
    out, env = _option(args, "--out") or "build", _option(args, "--env")
    if env and out == "build":
        out = f"build-{env}"
    return Path(os.path.abspath(out)).parent / ".bootgen"


def _option(args: list[str], name: str) -> str | None:
    for i, arg in enumerate(args):
        if arg == name and i + 1 < len(args):
            return args[i + 1]
        if arg.startswith(name + "="):
            return arg[len(name) + 1:]
    return None


def _send_request(conn: socket.socket, argv: list[str]) -> None:
    umask = os.umask(0o022)
    os.umask(umask)
    request = json.dumps({"argv": argv, "cwd": os.getcwd(), "env": dict(os.environ), "umask": umask,
                          "encoding": [_encoding(sys.stdout), _encoding(sys.stderr)]}).encode()
    socket.send_fds(conn, [struct.pack("!I", len(request))], [0, 1, 2])
    conn.sendall(request)


def _encoding(stream) -> tuple[str, str]:
    return (getattr(stream, "encoding", None) or "utf-8", getattr(stream, "errors", None) or "strict")


def _interrupt(server_pid: int, conn: socket.socket, replies) -> None:
    """Ctrl-C: interrupt the build where it runs, and wait (bounded) for it to say so."""
    try:
        os.kill(server_pid, signal.SIGINT)
        conn.settimeout(10)
        _line(replies)
    except (OSError, ValueError, KeyboardInterrupt):
        pass


def _line(replies) -> str:
    """One line from the server ("" if it hung up first)."""
    line = replies.readline(4096)
    return line.decode() if line.endswith(b"\n") else ""


# ---------------------------------------------------------------- start

def start(repository_state: Path, argv: list[str]) -> None:
    """Start a resident builder for this repository in the background, unless one runs (it
    takes a lock); it loads what the build `argv` would need, ready for the next one."""
    if not enabled() or _serving:
        return
    path = socket_path(repository_state)
    if path.exists() or len(os.fsencode(path)) >= SOCKET_PATH_MAX:
        return
    import subprocess

    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    package_root = str(Path(__file__).resolve().parent.parent)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [package_root, os.environ.get("PYTHONPATH")]))}
    subprocess.Popen([sys.executable, "-m", "bootgen.resident", str(path), os.getcwd(), json.dumps(argv)],
                     start_new_session=True, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                     stderr=subprocess.DEVNULL, env=env, cwd="/")


def stop(repository_state: Path) -> bool:
    """Ask the resident builder of this repository to stop; True if one answered."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
            conn.settimeout(CONNECT_TIMEOUT)
            conn.connect(str(socket_path(repository_state)))
            socket.send_fds(conn, [struct.pack("!I", 0)], [])
            return _line(conn.makefile("rb")).startswith("stopped")
    except OSError:
        return False


# ---------------------------------------------------------------- server

_serving = False  # True in the server process: its builds never start another one
_warm: dict = {}  # state directory -> _WarmState, most recently used last


class _WarmState:
    """A build state kept in memory, with what the disk held when it was last in step with it."""

    def __init__(self, state, state_dir: Path):
        self.state, self.seen = state, _disk_marks(state_dir)


def _disk_marks(state_dir: Path) -> tuple:
    """The stamp file's bytes and the records' root identity: every build that saves state
    replaces both, so any other process's build (or rollback) changes them."""
    from .incremental import RECORDS_DIR, ROOT_FILE, STAMP_FILE

    try:
        stamp = (state_dir / STAMP_FILE).read_bytes()
    except OSError:
        stamp = None
    try:
        root = os.stat(state_dir / RECORDS_DIR / ROOT_FILE)
        root_id = (root.st_ino, root.st_mtime_ns, root.st_size)
    except OSError:
        root_id = None
    return stamp, root_id


def warm_state(paths):
    """In the server: the state to build `paths` from (kept in memory, if still the disk's),
    else None (a fresh process loads it from disk)."""
    if not _serving:
        return None
    from .incremental import BuildState
    from .write import live_build_id

    held = _warm.pop(paths.state, None)
    if held is None or held.seen != _disk_marks(paths.state) \
            or live_build_id(paths.out, paths.state) != held.state.build_id:
        held = _WarmState(BuildState.load_stamp(paths.state), paths.state)
    _warm[paths.state] = held
    while len(_warm) > KEEP_OUTPUTS:
        _warm.pop(next(iter(_warm)))
    return held.state


def build_done(paths, succeeded: bool) -> None:
    """In the server, after a build: keep its state (now the disk's), or drop it after a
    failure (whatever it half-learnt is not trusted; the next build loads it from disk)."""
    if not _serving:
        return
    held = _warm.get(paths.state)
    if held is None:
        return
    if succeeded:
        held.seen = _disk_marks(paths.state)
    else:
        del _warm[paths.state]


def serve(sock: str, cwd: str, argv: list[str]) -> None:
    """The server process: warm up for the build `argv`, then run builds until idle."""
    import fcntl

    global _serving
    _serving = True
    lock = open(sock + ".lock", "w")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return  # one runs already
    lock.write(f"{os.getpid()}\n")  # who holds it, for `kill` and tests
    lock.flush()
    from . import cli
    from .incremental import code_stamp
    from .monitor import connections, is_ours, listen_at, remove_if_ours

    code = code_stamp()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # only a build is interrupted (below)
    home = os.path.dirname(os.path.dirname(sock))
    # Bound before the warm-up: a build asking meanwhile waits for it (it would load the same itself).
    server, ours = listen_at(sock)
    with server:
        _warm_up(cli, cwd, argv)
        for conn in connections(server, IDLE, lambda: os.path.isdir(home) and is_ours(sock, ours)):
            if _handle(conn, cli, code) == "stop":
                break
    remove_if_ours(sock, ours)


def _warm_up(cli, cwd: str, argv: list[str]) -> None:
    """Load the modules, and the state and site of the build that started this server."""
    try:
        os.chdir(cwd)
        ctx = cli.build.make_context("build", list(argv[1:]))
        params = ctx.params
        paths = cli.output_paths(params["site"], params["nodes"], params["out"], params["env"])
        from .build import warm_up_for_fresh_build

        warm_up_for_fresh_build(paths, warm_state(paths), fetch=not params["offline"])
    except BaseException:  # noqa: BLE001  (a warm-up that fails leaves the first build to load it all)
        _warm.clear()
    finally:
        os.chdir("/")


def _handle(conn: socket.socket, cli, code: str) -> str | None:
    conn.settimeout(CONNECT_TIMEOUT)
    try:
        message, fds, _, _ = socket.recv_fds(conn, 4, 3)
    except OSError:
        return None
    try:
        if len(message) != 4:
            return None
        size = struct.unpack("!I", message)[0]
        if size == 0:  # stop
            conn.sendall(b"stopped\n")
            return "stop"
        request = json.loads(_read_exactly(conn, size))
        creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
        _, uid, _ = struct.unpack("3i", creds)
        from .incremental import code_stamp
        from .secrets import reset

        command = request["argv"][0] if request["argv"] else ""
        if uid != os.getuid() or len(fds) != 3 or command not in COMMANDS:
            conn.sendall(b"decline only build and publish, only for this user\n")
            return None
        if code_stamp.__wrapped__() != code:  # (cached in-process: read the files again)
            conn.sendall(b"decline new bootgen code\n")
            return "stop"
        conn.sendall(f"ok {os.getpid()}\n".encode())
        reset()  # no secret value known at the start of a build, as in a fresh process
        status = _run(cli, request, fds)
        conn.sendall(f"exit {status}\n".encode())
    except (OSError, ValueError):
        return None
    finally:
        for fd in fds:
            os.close(fd)
    return None


def _read_exactly(conn: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = conn.recv(size - len(data))
        if not chunk:
            raise ValueError("request cut short")
        data += chunk
    return data


def _run(cli, request: dict, fds: list[int]) -> int:
    """Run the client's `bootgen build` here, in its directory, environment and umask, printing
    to its standard streams; its exit code."""
    saved_env, saved_umask = dict(os.environ), os.umask(request["umask"])
    saved_fds = [os.dup(fd) for fd in (0, 1, 2)]
    saved_streams = sys.stdin, sys.stdout, sys.stderr
    (out_encoding, out_errors), (err_encoding, err_errors) = request["encoding"]
    status = 0
    try:
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        for target, fd in zip((0, 1, 2), fds):
            os.dup2(fd, target)
        sys.stdin = open(0, "r", closefd=False)
        sys.stdout = open(1, "w", encoding=out_encoding, errors=out_errors, closefd=False,
                          buffering=1 if os.isatty(1) else -1)
        sys.stderr = open(2, "w", encoding=err_encoding, errors="backslashreplace", closefd=False, buffering=1)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        try:
            cli.main(args=request["argv"], prog_name="bootgen", standalone_mode=True)
        except SystemExit as exc:
            status = _exit_status(exc.code)
        except KeyboardInterrupt:
            status = 130
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):
                pass
        sys.stdin, sys.stdout, sys.stderr = saved_streams
        for target, fd in zip((0, 1, 2), saved_fds):
            os.dup2(fd, target)
            os.close(fd)
        os.environ.clear()
        os.environ.update(saved_env)
        os.umask(saved_umask)
        os.chdir("/")
    return status


def _exit_status(code) -> int:
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    print(code, file=sys.stderr)
    return 1


if __name__ == "__main__":
    # Through the package's module, not this __main__ copy: the build asks it whether it is served.
    from bootgen import resident

    resident.serve(sys.argv[1], sys.argv[2], json.loads(sys.argv[3]))
