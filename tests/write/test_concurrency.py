"""Builds on one repository never interleave: the lock covers reading the state to the switch.

Every wait is bounded; after each round the live tree must verify against its own SHA256SUMS lines (index/*.sha256)."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from bootgen.write import build_lock

WAIT = 120


def _bootgen(cwd: Path, *args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "bootgen", *args], cwd=cwd, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _verifies(tree: Path) -> None:
    done = subprocess.run("cat index/*.sha256 | sha256sum --quiet -c", shell=True, cwd=tree, capture_output=True,
                          text=True, timeout=WAIT)
    assert done.returncode == 0, done.stdout + done.stderr


def test_a_second_build_waits_with_a_message_and_sees_the_inputs_of_its_time(example, tmp_path):
    first = subprocess.run([sys.executable, "-m", "bootgen", "build", "--offline"], cwd=tmp_path,
                           capture_output=True, text=True, timeout=WAIT)
    assert first.returncode == 0, first.stderr
    with build_lock(example.state):
        waiting = _bootgen(tmp_path, "build", "--offline")
        deadline = time.monotonic() + WAIT
        while time.monotonic() < deadline and waiting.poll() is None:
            time.sleep(0.2)
            if (tmp_path / ".bootgen").exists() and waiting.poll() is None:
                break
        time.sleep(1.0)
        assert waiting.poll() is None, "the second build did not wait for the lock"
        node = example.nodes / "node-2.yaml"
        node.write_text(node.read_text() + "kernel_args: [while.waiting=1]\n")
    out, err = waiting.communicate(timeout=WAIT)
    assert waiting.returncode == 0, err
    assert "waiting for another build of this repository to finish" in err
    assert "while.waiting=1" in (example.out / "pxelinux.cfg" / "0A000047").read_text()
    _verifies(example.out.resolve())


def test_builds_paused_at_random_points_never_expose_a_tree_that_fails_its_checksums(example, tmp_path):
    """Two builds and a watch on one repository, one build paused (SIGSTOP) for a moment at
    different points while the other runs to completion; bounded rounds."""
    assert subprocess.run([sys.executable, "-m", "bootgen", "build", "--offline"], cwd=tmp_path,
                          capture_output=True, timeout=WAIT).returncode == 0
    watch = _bootgen(tmp_path, "watch", "--offline")
    try:
        node = example.nodes / "node-1.yaml"
        original = node.read_text()
        for round_ in range(6):
            node.write_text(original + f"kernel_args: [round={round_}]\n")
            paused = _bootgen(tmp_path, "build", "--offline")
            time.sleep(0.05 * (round_ + 1))
            os.kill(paused.pid, signal.SIGSTOP)  # a loaded machine, standing still for a moment
            other = _bootgen(tmp_path, "build", "--offline")
            time.sleep(0.1 + 0.05 * round_)
            os.kill(paused.pid, signal.SIGCONT)
            for process in (paused, other):
                out, err = process.communicate(timeout=WAIT)
                assert process.returncode == 0, err
            _verifies(example.out.resolve())
            assert f"round={round_}" in (example.out / "pxelinux.cfg" / "0A000046").read_text()
        assert watch.poll() is None
    finally:
        watch.terminate()
        try:
            watch.wait(timeout=WAIT)
        except subprocess.TimeoutExpired:
            watch.kill()
            watch.wait(timeout=WAIT)
