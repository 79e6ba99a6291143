"""The node-file monitor: a fresh build told what changed reads only that, and still
builds exactly what a clean build of the same files builds."""
import os
import shutil
import time
from pathlib import Path

import pytest

from bootgen import monitor
from bootgen.build import Paths, build
from bootgen.incremental import InputStamps

WAIT = 15  # seconds a monitor gets to start


@pytest.fixture
def monitored(example, monkeypatch):
    """The example site with a monitor that starts at any fleet size; stopped afterwards."""
    monkeypatch.setattr(monitor, "MONITOR_MIN_NODES", 1)
    monkeypatch.setenv("BOOTGEN_MONITOR", "1")
    yield example
    monitor.stop(example.repository_state, example.nodes)


def _wait_for_monitor(paths: Paths) -> None:
    deadline = time.monotonic() + WAIT
    while monitor.ask(paths.repository_state, paths.nodes, "") is None:
        assert time.monotonic() < deadline, "the monitor did not start"
        time.sleep(0.05)


def _first_monitored_build(paths: Paths) -> None:
    """Scan, start the monitor, then a build that takes its first number (still a scan)."""
    build(paths, fetch=False)
    _wait_for_monitor(paths)
    build(paths, fetch=False)  # the state of this one carries the monitor's number
    assert _token(paths)


def _token(paths: Paths) -> str:
    token = (paths.state / "stamp").read_text().split()[-1]
    return "" if token == "-" else token


def _no_scan(monkeypatch):
    def scan(*args, **kwargs):
        raise AssertionError("a build told what changed must not scan nodes/")

    monkeypatch.setattr(InputStamps, "take", scan)


def _tree(out: Path) -> dict[str, bytes]:
    tree = out.resolve()
    return {str(p.relative_to(tree)): p.read_bytes() for p in sorted(tree.rglob("*")) if p.is_file()}


def _clean(paths: Paths, tmp: Path) -> dict[str, bytes]:
    """The tree a build from scratch makes of the same files."""
    clean = tmp / "clean"
    shutil.copytree(paths.site, clean / "site")
    shutil.copytree(paths.nodes, clean / "nodes")
    cwd = os.getcwd()
    os.chdir(clean)
    try:
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("BOOTGEN_MONITOR", "0")
            build(Paths(Path("site"), Path("nodes"), Path("build")), fetch=False)
        return _tree(clean / "build")
    finally:
        os.chdir(cwd)


def test_ask_numbers_changes_and_refuses_unknown_numbers(monitored):
    monitor.start(monitored.repository_state, monitored.nodes)
    _wait_for_monitor(monitored)
    first = monitor.ask(monitored.repository_state, monitored.nodes, "")
    assert first.changed is None  # no number: unknown, scan
    node = monitored.nodes / "node-2.yaml"
    node.write_text(node.read_text() + "kernel_args: [quiet]\n")
    second = monitor.ask(monitored.repository_state, monitored.nodes, first.token)
    assert second.changed == ("node-2.yaml",)
    assert monitor.ask(monitored.repository_state, monitored.nodes, second.token).changed == ()
    epoch, number = second.token.split(":")
    assert monitor.ask(monitored.repository_state, monitored.nodes, f"{'0' * len(epoch)}:{number}").changed is None


def test_edit_add_remove_rename_without_a_scan_equal_a_clean_build(monitored, monkeypatch, tmp_path):
    _first_monitored_build(monitored)
    nodes = monitored.nodes
    edited = nodes / "node-2.yaml"
    edited.write_text(edited.read_text() + "kernel_args: [quiet]\n")
    added = nodes / "node-9.yaml"
    added.write_text((nodes / "node-2.yaml").read_text().replace("00:1e:06:45:0a:02", "00:1e:06:45:0a:29")
                     .replace("node-2", "node-9").replace("10.0.0.71", "10.0.0.79"))
    (nodes / "tink-worker.yaml").unlink()
    os.rename(nodes / "node-1.yaml", nodes / "node-one.yaml")
    with monkeypatch.context() as mp:
        _no_scan(mp)
        result = build(monitored, fetch=False)
    assert result.write.changed and result.rendered >= 3
    assert _tree(monitored.out) == _clean(monitored, tmp_path)


def test_nothing_changed_is_known_without_a_scan(monitored, monkeypatch):
    _first_monitored_build(monitored)
    _no_scan(monkeypatch)
    result = build(monitored, fetch=False)
    assert not result.write.changed and result.rendered == 0


def test_a_stopped_monitor_means_a_scan_then_a_new_monitor(monitored, tmp_path):
    _first_monitored_build(monitored)
    assert monitor.stop(monitored.repository_state, monitored.nodes)
    edited = monitored.nodes / "node-2.yaml"
    edited.write_text(edited.read_text() + "kernel_args: [quiet]\n")  # made while nothing watched
    assert build(monitored, fetch=False).rendered == 1  # scanned
    _wait_for_monitor(monitored)  # started again by that build
    assert _tree(monitored.out) == _clean(monitored, tmp_path)


def test_small_fleets_start_no_monitor(example, monkeypatch):
    monkeypatch.setenv("BOOTGEN_MONITOR", "1")
    started = []
    monkeypatch.setattr(monitor, "start", lambda *args: started.append(args))
    build(example, fetch=False)
    assert started == [] and len(list(example.nodes.glob("*.yaml"))) < monitor.MONITOR_MIN_NODES


def test_a_failed_build_keeps_the_number_of_the_live_state(monitored, monkeypatch, tmp_path):
    _first_monitored_build(monitored)
    before = _token(monitored)
    broken = monitored.nodes / "node-2.yaml"
    good = broken.read_text()
    broken.write_text(good + "kernel_args: 7\n")
    with pytest.raises(Exception):
        build(monitored, fetch=False)
    assert _token(monitored) == before
    broken.write_text(good + "kernel_args: [quiet]\n")
    with monkeypatch.context() as mp:
        _no_scan(mp)
        assert build(monitored, fetch=False).rendered == 1
    assert _tree(monitored.out) == _clean(monitored, tmp_path)


def test_publish_sees_an_edit_through_the_monitor(monitored, tmp_path, monkeypatch):
    """`publish` refuses a tree whose inputs changed since it was built, also when it is told
    what changed instead of scanning."""
    from bootgen.errors import PublishError
    from bootgen.releases import check_publishable

    _first_monitored_build(monitored)
    edited = monitored.nodes / "node-2.yaml"
    with monkeypatch.context() as mp:
        _no_scan(mp)
        check_publishable(monitored.out, monitored, env=None, chosen=False)  # current
        edited.write_text(edited.read_text() + "kernel_args: [quiet]\n")
        with pytest.raises(PublishError, match="inputs changed"):
            check_publishable(monitored.out, monitored, env=None, chosen=False)
