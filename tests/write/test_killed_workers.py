"""A build killed with SIGKILL while its workers render leaves no worker behind, and no pages of
worker tracebacks on the terminal."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest


def _bootgen_processes(cwd: Path) -> list[int]:
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            same_dir = os.readlink(f"/proc/{pid}/cwd") == str(cwd)
        except OSError:
            continue
        if same_dir and b"bootgen" in cmdline and b"-m" in cmdline:
            found.append(int(pid))
    return found


@pytest.mark.timeout(120)
def test_workers_end_with_a_killed_build(example, tmp_path):
    for i in range(1200):  # enough to be spread over worker processes
        (example.nodes / f"w{i:05d}.yaml").write_text(f"interfaces:\n  - mac: 52:54:01:00:{i // 256:02x}:{i % 256:02x}\n")
    build = subprocess.Popen([sys.executable, "-m", "bootgen", "build", "--offline"], cwd=tmp_path,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and len(_bootgen_processes(tmp_path)) < 2 and build.poll() is None:
        time.sleep(0.02)
    assert build.poll() is None, "the build ended before its workers could be seen"
    assert len(_bootgen_processes(tmp_path)) >= 2, "no worker processes were started"
    os.kill(build.pid, signal.SIGKILL)
    build.wait(timeout=30)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and _bootgen_processes(tmp_path):
        time.sleep(0.05)
    assert _bootgen_processes(tmp_path) == []
    errors = build.stderr.read().decode(errors="replace")  # the workers shared it: they must say nothing
    assert "Traceback" not in errors, errors[:2000]


def _children(pid: int) -> list[int]:
    try:
        return [int(child) for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


@pytest.mark.timeout(150)
def test_a_worker_killed_mid_build_fails_the_build_instead_of_hanging(example, tmp_path):
    """A worker lost mid-task (the OOM killer, an operator's kill) once left the build waiting
    forever for a result that could never come; now the build stops with a reason and keeps the
    previous tree live."""
    previous = subprocess.run([sys.executable, "-m", "bootgen", "build", "--offline"], cwd=tmp_path,
                              capture_output=True, timeout=120)
    assert previous.returncode == 0, previous.stderr.decode()
    live = os.readlink(tmp_path / "build")
    for i in range(1200):
        (example.nodes / f"w{i:05d}.yaml").write_text(f"interfaces:\n  - mac: 52:54:01:00:{i // 256:02x}:{i % 256:02x}\n")
    build = subprocess.Popen([sys.executable, "-m", "bootgen", "build", "--offline"], cwd=tmp_path,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not _children(build.pid) and build.poll() is None:
        time.sleep(0.01)
    workers = _children(build.pid)
    assert workers, "the build ended before its workers could be seen"
    os.kill(workers[0], signal.SIGKILL)
    try:
        out, err = build.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        build.kill()
        build.communicate()
        pytest.fail("the build waited for its killed worker")
    assert build.returncode == 1, err.decode()
    assert "render worker died" in err.decode()
    assert "Traceback" not in err.decode()
    assert os.readlink(tmp_path / "build") == live
