"""The resident builder: `bootgen build` handed to a warm process builds exactly what a
fresh process builds, prints where the user sees it, exits as it would, and steps
aside (the client builds itself) whenever it cannot be trusted."""
from __future__ import annotations

import json
import os
import shutil
import socket
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from bootgen import resident

ROOT = Path(__file__).resolve().parents[2]
WAIT = 30  # seconds a resident builder gets to start (it loads the site first)
RUN = 120  # seconds any one bootgen process may take


def _env(**extra) -> dict:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "BOOTGEN_RESIDENT": "1", "BOOTGEN_MONITOR": "0", **extra}
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return env


def _bootgen(cwd: Path, *args: str, env: dict | None = None, package: Path = ROOT) -> subprocess.CompletedProcess:
    env = env or _env()
    env["PYTHONPATH"] = str(package)
    return subprocess.run([sys.executable, "-m", "bootgen", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=RUN)


def _start(cwd: Path, package: Path = ROOT) -> Path:
    """A resident builder for the repository at `cwd` (as a large fleet's build starts one)."""
    code = ("import sys; from pathlib import Path; from bootgen import resident; "
            "resident.start(Path('.bootgen').absolute(), sys.argv[1:])")
    subprocess.run([sys.executable, "-c", code, "build", "--site", "site", "--nodes", "nodes", "--out", "build",
                    "--offline"], cwd=cwd, env={**_env(), "PYTHONPATH": str(package)}, check=True, timeout=RUN)
    sock = _socket(cwd, package)
    deadline = time.monotonic() + WAIT
    while not sock.exists():
        assert time.monotonic() < deadline, "the resident builder did not start"
        time.sleep(0.05)
    return sock


def _socket(cwd: Path, package: Path = ROOT) -> Path:
    code = "from pathlib import Path; from bootgen import resident; print(resident.socket_path(Path('.bootgen').absolute()))"
    return Path(subprocess.run([sys.executable, "-c", code], cwd=cwd, env={**_env(), "PYTHONPATH": str(package)},
                               capture_output=True, text=True, check=True, timeout=RUN).stdout.strip())


def _server_pid(sock: Path) -> int:
    return int(Path(str(sock) + ".lock").read_text())


def _tree(out: Path) -> dict[str, bytes]:
    tree = out.resolve()
    return {str(p.relative_to(tree)): p.read_bytes() for p in sorted(tree.rglob("*")) if p.is_file()}


def _clean_tree(repo: Path, tmp: Path) -> dict[str, bytes]:
    """The tree a fresh process makes from scratch of the same files."""
    clean = tmp / "clean"
    shutil.rmtree(clean, ignore_errors=True)
    shutil.copytree(repo / "site", clean / "site")
    shutil.copytree(repo / "nodes", clean / "nodes")
    done = _bootgen(clean, "build", "--offline", env=_env(BOOTGEN_RESIDENT="0"))
    assert done.returncode == 0, done.stderr
    return _tree(clean / "build")


def _edit(repo: Path, args: str) -> None:
    node = repo / "nodes" / "node-2.yaml"
    node.write_text(node.read_text().split("\nkernel_args:")[0].rstrip("\n") + f"\nkernel_args: [{args}]\n")


@pytest.fixture
def repo(example):
    """The example site, built once by a fresh process, with a resident builder for it."""
    repo = Path.cwd()
    first = _bootgen(repo, "build", "--offline", env=_env(BOOTGEN_RESIDENT="0"))
    assert first.returncode == 0, first.stderr
    sock = _start(repo)
    yield repo
    resident.stop(repo / ".bootgen")
    deadline = time.monotonic() + WAIT
    while sock.exists() and time.monotonic() < deadline:
        time.sleep(0.05)


def test_a_build_handed_over_equals_a_fresh_build_from_scratch(repo, tmp_path):
    for round_ in range(3):
        _edit(repo, f"quiet loglevel={round_}")
        done = _bootgen(repo, "build", "--offline")
        assert done.returncode == 0, done.stderr
        assert "1 nodes rendered" in done.stdout  # the warm process built it, incrementally
        assert _tree(repo / "build") == _clean_tree(repo, tmp_path)


def test_the_server_prints_to_the_clients_streams_and_speaks_json(repo):
    _edit(repo, "quiet")
    done = _bootgen(repo, "build", "--offline", "--format", "json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["build_id"] == os.readlink(repo / "build").rsplit("/", 1)[-1]


def test_a_user_error_is_reported_as_ever_and_the_next_build_starts_clean(repo, tmp_path):
    before = os.readlink(repo / "build")
    node = repo / "nodes" / "node-2.yaml"
    good = node.read_text()
    node.write_text(good + "interfaces: 7\n")
    failed = _bootgen(repo, "build", "--offline")
    assert failed.returncode == 1
    assert "node-2.yaml" in failed.stderr and "Traceback" not in failed.stderr
    assert os.readlink(repo / "build") == before
    node.write_text(good + "kernel_args: [after-a-failure]\n")
    done = _bootgen(repo, "build", "--offline")
    assert done.returncode == 0, done.stderr
    assert _tree(repo / "build") == _clean_tree(repo, tmp_path)


def test_the_build_sees_the_clients_environment_not_the_servers(repo):
    _edit(repo, "quiet")
    missing = repo / "no-such-secrets.yaml"
    failed = _bootgen(repo, "build", "--offline", env=_env(BOOTGEN_SECRETS=str(missing)))
    assert failed.returncode == 1
    assert "no-such-secrets.yaml" in failed.stderr  # the client's BOOTGEN_SECRETS, not the server's
    assert _bootgen(repo, "build", "--offline").returncode == 0


def test_another_processs_build_in_between_is_not_overlooked(repo, tmp_path):
    _edit(repo, "first")
    assert _bootgen(repo, "build", "--offline").returncode == 0
    _edit(repo, "by-another-process")
    other = _bootgen(repo, "build", "--offline", env=_env(BOOTGEN_RESIDENT="0"))
    assert other.returncode == 0, other.stderr
    (repo / "nodes" / "tink-worker.yaml").unlink()
    done = _bootgen(repo, "build", "--offline")
    assert done.returncode == 0, done.stderr
    assert _tree(repo / "build") == _clean_tree(repo, tmp_path)


def test_new_bootgen_code_makes_it_decline_and_stop(example, tmp_path):
    """The server runs the code it started with: once the package's files change it steps
    aside, and the client builds with the new code."""
    package = tmp_path / "package"
    shutil.copytree(ROOT / "bootgen", package / "bootgen", ignore=shutil.ignore_patterns("__pycache__"))
    repo = Path.cwd()
    assert _bootgen(repo, "build", "--offline", env=_env(BOOTGEN_RESIDENT="0"), package=package).returncode == 0
    sock = _start(repo, package)
    pid = _server_pid(sock)
    marker = package / "bootgen" / "osconfig" / "__init__.py"
    marker.write_text(marker.read_text() + "\n# changed\n")
    _edit(repo, "new-code")
    done = _bootgen(repo, "build", "--offline", package=package)
    assert done.returncode == 0, done.stderr
    assert "nodes rendered" in done.stdout
    deadline = time.monotonic() + WAIT
    while _alive(pid):
        assert time.monotonic() < deadline, "the resident builder kept running old code"
        time.sleep(0.05)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().split(") ")[1][0] != "Z"
    except OSError:
        return False


def _fake_server(path: Path, replies: list[bytes], hang_up_when: Path | None = None) -> threading.Thread:
    """A socket that takes one request and sends `replies`, then hangs up (a server that
    declines, or dies during the build); with `hang_up_when`, once that file exists. Its
    `replied` event is set once the replies are sent."""
    path.parent.mkdir(parents=True, exist_ok=True)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    listener.listen(1)
    listener.settimeout(10)

    def run():
        with listener:
            conn, _ = listener.accept()
            with conn:
                conn.settimeout(10)
                size = struct.unpack("!I", socket.recv_fds(conn, 4, 3)[0])[0]
                while size > 0:
                    size -= len(conn.recv(size))
                for reply in replies:
                    conn.sendall(reply)
                thread.replied.set()
                deadline = time.monotonic() + 10
                while hang_up_when is not None and not hang_up_when.exists() and time.monotonic() < deadline:
                    time.sleep(0.02)

    thread = threading.Thread(target=run, daemon=True)
    thread.replied = threading.Event()
    thread.start()
    return thread


@pytest.mark.parametrize("replies, said", [
    ([b"decline new bootgen code\n"], ""),
    ([f"ok {os.getpid()}\n".encode()], "the resident builder stopped during the build; building in this process"),
])
def test_a_declining_or_dying_server_leaves_the_build_to_the_client(tmp_path, monkeypatch, capsys, replies, said):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("BOOTGEN_RESIDENT", "1")
    thread = _fake_server(resident.socket_path(tmp_path / ".bootgen"), replies)
    assert resident.forward(["build", "--offline"]) is None
    thread.join(10)
    assert said in capsys.readouterr().err


def test_the_exit_code_is_the_servers(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("BOOTGEN_RESIDENT", "1")
    thread = _fake_server(resident.socket_path(tmp_path / ".bootgen"), [f"ok {os.getpid()}\n".encode(), b"exit 3\n"])
    assert resident.forward(["build"]) == 3
    thread.join(10)


def test_only_build_and_publish_are_handed_over_and_never_when_turned_off(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    thread = _fake_server(resident.socket_path(tmp_path / ".bootgen"), [])  # never asked
    monkeypatch.setenv("BOOTGEN_RESIDENT", "0")
    assert resident.forward(["build"]) is None
    monkeypatch.setenv("BOOTGEN_RESIDENT", "1")
    assert resident.forward(["check"]) is None
    assert resident.forward([]) is None
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:  # let the fake server finish
        conn.connect(str(resident.socket_path(tmp_path / ".bootgen")))
        socket.send_fds(conn, [struct.pack("!I", 0)], [])
    thread.join(10)


def test_the_socket_is_found_from_out_and_env(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert resident._repository_state([]) == tmp_path / ".bootgen"
    assert resident._repository_state(["--out", "x/build"]) == tmp_path / "x" / ".bootgen"
    assert resident._repository_state(["--out=y/b", "--env", "lab"]) == tmp_path / "y" / ".bootgen"
    assert resident._repository_state(["--env=lab"]) == tmp_path / ".bootgen"


def test_the_server_keeps_its_state_warm_only_while_the_disk_agrees(example, monkeypatch):
    """In the server, a build after its own last one loads nothing again (not even the site);
    after another process's build it loads the state from disk, as a fresh process does."""
    from click.testing import CliRunner

    from bootgen import cli, load
    from bootgen.build import build

    monkeypatch.setattr(resident, "_serving", True)
    monkeypatch.setattr(resident, "_warm", {})
    runner = CliRunner()
    assert runner.invoke(cli.main, ["build", "--offline"]).exit_code == 0
    repo = Path.cwd()

    def site_loaded_again(*args, **kwargs):
        raise AssertionError("the site was loaded again")

    with monkeypatch.context() as mp:
        mp.setattr(load, "load_site_with_nodes", site_loaded_again)
        _edit(repo, "warm")
        done = runner.invoke(cli.main, ["build", "--offline"])
        assert done.exit_code == 0, done.output
        assert "1 nodes rendered" in done.output
    _edit(repo, "by-another-process")
    build(example, fetch=False)  # another process: its own state, from disk
    with monkeypatch.context() as mp:
        mp.setattr(load, "load_site_with_nodes", site_loaded_again)
        _edit(repo, "after-it")
        assert runner.invoke(cli.main, ["build", "--offline"]).exit_code == 3  # it had to load the site
    assert runner.invoke(cli.main, ["build", "--offline"]).exit_code == 0  # and a failure drops what it held


def test_a_publish_handed_over_publishes_and_a_second_is_a_no_op(repo, tmp_path):
    docroot = tmp_path / "docroot"
    first = _bootgen(repo, "publish", str(docroot), "--format", "json")
    assert first.returncode == 0, first.stderr
    live = os.readlink(repo / "build").rsplit("/", 1)[-1]
    assert json.loads(first.stdout)["build_id"] == live
    assert (docroot / "current" / "manifest.json").is_file()
    again = _bootgen(repo, "publish", str(docroot), "--format", "json")
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["uploaded"] == 0
    _edit(repo, "not-built-yet")
    stale = _bootgen(repo, "publish", str(docroot))
    assert stale.returncode == 1 and "build" in stale.stderr  # inputs edited since the build: refused, as ever


def test_ctrl_c_in_the_client_interrupts_the_build_where_it_runs(tmp_path, monkeypatch):
    """The client passes SIGINT on to the server (here a stand-in that records it) and exits 130."""
    flag = tmp_path / "interrupted"
    stand_in = subprocess.Popen([sys.executable, "-c", "import signal, sys, time\n"
                                 "signal.signal(signal.SIGINT, lambda *a: (open(sys.argv[1], 'w').close(), sys.exit()))\n"
                                 "print('ready', flush=True)\ntime.sleep(60)", str(flag)], stdout=subprocess.PIPE)
    assert stand_in.stdout.readline() == b"ready\n"
    monkeypatch.chdir(tmp_path)
    sock = resident.socket_path(tmp_path / ".bootgen")
    thread = _fake_server(sock, [f"ok {stand_in.pid}\n".encode()], hang_up_when=flag)
    client = subprocess.Popen([sys.executable, "-c", "import sys; from bootgen import resident; "
                               "sys.exit(resident.forward(['build']))"],
                              cwd=tmp_path, env=_env(), stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + WAIT
        while not thread.replied.is_set():
            assert time.monotonic() < deadline, "the client did not connect"
            time.sleep(0.02)
        time.sleep(0.2)  # the client now waits for the build's end
        client.send_signal(2)
        assert client.wait(timeout=RUN) == 130
        assert flag.exists()
    finally:
        client.kill()
        stand_in.kill()
        stand_in.wait(timeout=RUN)
        thread.join(10)
