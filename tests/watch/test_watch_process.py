"""A real `bootgen watch` process: profile edits are seen, a user's template error is reported
with its file and line, and the process keeps serving the last good tree. Every wait is bounded."""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml

from bootgen.incremental import BuildState

WAIT = 60


class WatchProcess:
    def __init__(self, root: Path):
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen([sys.executable, "-m", "bootgen", "watch", "--offline"], cwd=root, env=env,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.lines: list[str] = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    def wait_for(self, predicate, what: str, start: int = 0) -> str:
        deadline = time.monotonic() + WAIT
        while time.monotonic() < deadline:
            for line in self.lines[start:]:
                if predicate(line):
                    return line
            if self.proc.poll() is not None:
                raise AssertionError(f"watch exited ({self.proc.returncode}) waiting for {what}:\n" +
                                     "\n".join(self.lines))
            time.sleep(0.05)
        raise AssertionError(f"timed out waiting for {what}:\n" + "\n".join(self.lines))

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=WAIT)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=WAIT)


@pytest.fixture
def running(example, tmp_path):
    watcher = WatchProcess(tmp_path)
    try:
        watcher.wait_for(lambda line: "files for" in line, "the first build")
        yield example, watcher
    finally:
        watcher.stop()


def _edit_yaml(path: Path, change) -> None:
    data = yaml.safe_load(path.read_text())
    change(data)
    path.write_text(yaml.safe_dump(data, sort_keys=False))


def _stage1_unit(paths) -> str:
    import json

    tree = paths.out.resolve()
    stage1 = json.loads(next((tree / "configs" / "node-2").glob("*/install.ign")).read_text())
    return stage1["systemd"]["units"][0]["contents"]


def test_profile_edit_new_profile_and_broken_profile_in_watch(running, tmp_path):
    paths, watcher = running
    assert "-d /dev/sda " in _stage1_unit(paths)

    mark = len(watcher.lines)
    _edit_yaml(paths.site / "profiles" / "flatcar-install.yaml", lambda d: d.update(install={"disk": "/dev/vdb"}))
    watcher.wait_for(lambda line: "-> build" in line, "a rebuild after the profile edit", mark)
    assert "-d /dev/vdb " in _stage1_unit(paths)

    mark = len(watcher.lines)
    (paths.site / "profiles" / "flatcar-live.yaml").write_text(
        (paths.site / "profiles" / "flatcar-install.yaml").read_text())
    _edit_yaml(paths.nodes / "node-2.yaml", lambda d: d.update(profile="flatcar-live", boot="live"))
    watcher.wait_for(lambda line: "-> build" in line or "error" in line, "the new profile", mark)
    assert not any("unknown profile" in line for line in watcher.lines[mark:])
    assert "flatcar-live" in (paths.out / "pxelinux.cfg" / "0A000047").read_text()

    mark = len(watcher.lines)
    good = paths.out.resolve()
    (paths.site / "profiles" / "flatcar-live.yaml").write_text("images: flatcar-stable\nos_confg: ignition\n")
    watcher.wait_for(lambda line: "build failed" in line, "the broken profile to be reported", mark)
    assert any("site/profiles/flatcar-live.yaml:2:1: error at $.os_confg" in line for line in watcher.lines[mark:])
    assert paths.out.resolve() == good

    watcher.stop()
    # After watch stops, a fresh build must agree with a clean build of the same inputs.
    (paths.site / "profiles" / "flatcar-live.yaml").write_text(
        (paths.site / "profiles" / "flatcar-install.yaml").read_text())
    done = subprocess.run([sys.executable, "-m", "bootgen", "build", "--offline"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=WAIT)
    assert done.returncode == 0, done.stderr
    assert "-d /dev/vdb " in next((paths.out / "configs" / "node-1").glob("*/install.ign")).read_text()


def test_user_template_runtime_error_is_reported_and_watch_keeps_serving(running):
    paths, watcher = running
    good = paths.out.resolve()
    templates = paths.site / "templates"
    templates.mkdir()
    mark = len(watcher.lines)
    (templates / "node.ipxe.j2").write_text("#!ipxe\n# {{ title }}\n{{ 1 + 'a' }}\nexit\n")
    watcher.wait_for(lambda line: "build failed" in line, "the template error", mark)
    output = "\n".join(watcher.lines[mark:])
    assert "site/templates/node.ipxe.j2:3" in output
    assert "bug in bootgen" not in output and "Traceback" not in output
    assert paths.out.resolve() == good

    mark = len(watcher.lines)
    (templates / "node.ipxe.j2").write_text("#!ipxe\n# fixed {{ title }}\nexit\n")
    watcher.wait_for(lambda line: "-> build" in line, "the fix", mark)
    assert "# fixed" in (paths.out / "ipxe" / "00-1e-06-45-0a-01.ipxe").read_text()
    assert watcher.proc.poll() is None


def test_user_template_runtime_error_exits_1_in_build(example, tmp_path):
    templates = example.site / "templates"
    templates.mkdir()
    (templates / "grub.cfg-node.j2").write_text("set timeout=0\n{{ (1 / 0) }}\n")
    done = subprocess.run([sys.executable, "-m", "bootgen", "build", "--offline"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=WAIT)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "site/templates/grub.cfg-node.j2:2" in done.stderr
    assert "node" in done.stderr
    assert "bug in bootgen" not in done.stderr and "Traceback" not in done.stderr


# Beside other bootgen processes on one repository: the state watch keeps in memory never
# overwrites the saved state of a tree another process switched to, and watch continues from
# that process's state instead of rebuilding every node.

def _other_bootgen(root, *args: str) -> None:
    done = subprocess.run([sys.executable, "-m", "bootgen", *args], cwd=root, capture_output=True, text=True,
                          timeout=WAIT)
    assert done.returncode == 0, done.stdout + done.stderr


def _edit(example, name: str, value: str) -> None:
    node = example.nodes / name
    kept = [line for line in node.read_text().splitlines(keepends=True) if "other.process=" not in line]
    node.write_text("".join(kept) + f"kernel_args: [other.process={value}]\n")


def _built(watcher: WatchProcess, start: int) -> str:
    return watcher.wait_for(lambda line: "files for" in line, "a build", start=start)


def _watch_stopped_before_saving(example, tmp_path) -> tuple[WatchProcess, str]:
    """Build from the command line, then let watch build two edits and stop it (SIGSTOP) at once
    after the second, before it saves its state at the next pause; returns it and its tree's id."""
    _other_bootgen(tmp_path, "build", "--offline")
    watcher = WatchProcess(tmp_path)
    _built(watcher, 0)
    for name in ("node-1.yaml", "node-2.yaml"):  # the first may be seen only by the idle check
        before = example.out.resolve().name[:12]
        _edit(example, name, "1")
        watcher.wait_for(lambda line: "-> build " in line and f"-> build {before}" not in line, f"{name} built")
    os.kill(watcher.proc.pid, signal.SIGSTOP)
    return watcher, example.out.resolve().name


def test_watch_does_not_save_its_state_over_a_tree_another_process_switched_to(example, tmp_path):
    watcher, built_by_watch = _watch_stopped_before_saving(example, tmp_path)
    try:
        _other_bootgen(tmp_path, "rollback")
    finally:
        os.kill(watcher.proc.pid, signal.SIGCONT)
    watcher.stop()  # saves its state on the way out
    assert watcher.proc.returncode == 0
    live = example.out.resolve().name
    assert live != built_by_watch
    assert BuildState.load_stamp(example.state).build_id != built_by_watch  # a state for a tree not live


def test_watch_continues_from_the_state_of_a_build_another_process_made(example, tmp_path):
    watcher, _ = _watch_stopped_before_saving(example, tmp_path)
    try:
        seen = len(watcher.lines)
        try:
            _edit(example, "node-1.yaml", "2")
            _other_bootgen(tmp_path, "build", "--offline")
        finally:
            os.kill(watcher.proc.pid, signal.SIGCONT)
        line = _built(watcher, seen)  # the edit's events, seen once it runs again
        rendered = int(re.search(r"\((\d+) nodes rendered", line).group(1)) if "rendered" in line else 0
        assert rendered == 0, line  # the tree is the other process's; not every node rendered again
    finally:
        watcher.stop()
    assert BuildState.load_stamp(example.state).build_id == example.out.resolve().name
