"""`bootgen watch` driven by real file edits, with bounded waits."""
import threading
import time

import pytest

from bootgen.incremental import InputStamps
from bootgen.watch import watch
from bootgen.publish.manifest import load_tree

WAIT = 30  # seconds; a rebuild takes well under one


def _wait_for(condition, what):
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
def watcher(example):
    lines: list[str] = []
    stop, ready = threading.Event(), threading.Event()
    thread = threading.Thread(target=watch, args=(example, lines.append),
                              kwargs={"fetch": False, "stop": stop, "ready": ready}, daemon=True)
    thread.start()
    assert ready.wait(WAIT), "watcher did not start"
    yield example, lines
    stop.set()
    thread.join(timeout=WAIT)
    assert not thread.is_alive()


def _build_id(paths):
    return paths.out.resolve().name


def test_watch_follows_edits_deletes_and_survives_a_broken_edit(watcher):
    paths, lines = watcher
    first = _build_id(paths)

    node = paths.nodes / "node-2.yaml"
    node.write_text(node.read_text() + "kernel_args: [watch=1]\n")
    _wait_for(lambda: len(lines) >= 2, "a rebuild after a node edit")
    assert "watch=1" in (paths.out / "pxelinux.cfg" / "0A000047").read_text()
    assert "(1 nodes rendered" in lines[-1]
    assert _build_id(paths) != first

    templates = paths.site / "templates"
    templates.mkdir()
    (templates / "node.ipxe.j2").write_text("#!ipxe\n# from the site's template\nexit\n")
    _wait_for(lambda: "from the site's template" in (paths.out / "ipxe" / "00-1e-06-45-0a-01.ipxe").read_text(),
              "a template edit")

    (paths.nodes / "tink-worker.yaml").unlink()
    _wait_for(lambda: not (paths.out / "ipxe" / "08-00-27-00-00-01.ipxe").exists(), "a node deletion")

    good_tree = _build_id(paths)
    broken = paths.nodes / "node-1.yaml"
    good = broken.read_text()
    broken.write_text(good.replace("00:1e:06:45:0a:01", "not-a-mac"))
    _wait_for(lambda: any("build failed" in line for line in lines), "the broken edit to be reported")
    assert any("nodes/node-1.yaml:5:10: error at $.interfaces[0].mac: 'not-a-mac' is not a MAC address" in line
               for line in lines)
    assert _build_id(paths) == good_tree  # the last good tree is still served

    failed_at = len(lines)
    broken.write_text(good + "# fixed\n")
    _wait_for(lambda: any("files for" in line for line in lines[failed_at:]), "the fix to be built")
    assert _build_id(paths) == good_tree  # same inputs as the last good build: the same tree
    assert "node-1" in {f.node for f in load_tree(paths.out).files}


def test_a_saved_node_file_is_the_only_input_looked_at_again(watcher, monkeypatch):
    """An editor's save also reports nodes/ as modified; that must not mean a scan of every node."""
    paths, lines = watcher
    scans = []
    take = InputStamps.take.__func__
    monkeypatch.setattr(InputStamps, "take", classmethod(lambda cls, *args: scans.append(args) or take(cls, *args)))
    node = paths.nodes / "node-2.yaml"
    node.write_text(node.read_text() + "kernel_args: [fast=1]\n")
    _wait_for(lambda: len(lines) >= 2, "a rebuild after a node edit")
    assert "(1 nodes rendered" in lines[-1]
    assert scans == []


def test_watch_saves_state_for_the_next_cli_build(watcher):
    paths, lines = watcher
    node = paths.nodes / "node-2.yaml"
    node.write_text(node.read_text() + "kernel_args: [saved=1]\n")
    _wait_for(lambda: "saved=1" in (paths.out / "pxelinux.cfg" / "0A000047").read_text(), "a node edit")
    _wait_for(lambda: (paths.state / "stamp").is_file() and
              (paths.state / "stamp").read_text().split()[3] == _build_id(paths), "the state to be saved")


def test_a_change_no_event_reported_is_found_when_edits_pause(example):
    """Watch builds stat only the files events name; the idle check catches the rest."""
    from bootgen.watch import Rebuilder

    rebuilder = Rebuilder(example, lambda line: None, fetch=False)
    first = rebuilder.rebuild()
    assert not rebuilder.missed_changes()
    node = example.nodes / "node-2.yaml"
    node.write_text(node.read_text() + "kernel_args: [unseen=1]\n")
    assert rebuilder.rebuild(set()).write.build_id == first.write.build_id  # no event named it
    assert rebuilder.missed_changes()
    rebuilder.rebuild()  # what the idle check does
    assert "unseen=1" in (example.out / "pxelinux.cfg" / "0A000047").read_text()
    assert not rebuilder.missed_changes()


def test_a_failed_build_is_not_remembered_as_built(example):
    """The state saved after a broken edit must not make the next build think it is done."""
    from bootgen.build import build
    from bootgen.errors import InputError
    from bootgen.watch import Rebuilder

    rebuilder = Rebuilder(example, lambda line: None, fetch=False)
    rebuilder.rebuild()
    node = example.nodes / "node-1.yaml"
    node.write_text(node.read_text().replace("00:1e:06:45:0a:01", "not-a-mac"))
    assert rebuilder.rebuild({str(node)}) is None
    rebuilder.save_state()
    with pytest.raises(InputError):
        build(example, fetch=False)


def test_the_wait_after_a_save_is_short_once_the_file_is_closed_or_renamed_into_place():
    from watchdog.events import DirModifiedEvent, FileClosedEvent, FileModifiedEvent, FileMovedEvent

    from bootgen.watch import QUIET_SECONDS, SETTLED_SECONDS, _Changes

    changes = _Changes()
    changes.dispatch(FileModifiedEvent("nodes/a.yaml"))
    assert changes.quiet == QUIET_SECONDS  # more of the save may follow
    changes.dispatch(FileClosedEvent("nodes/a.yaml"))
    assert changes.quiet == SETTLED_SECONDS
    changes.dispatch(FileMovedEvent("nodes/.a.yaml.tmp", "nodes/b.yaml"))
    assert changes.quiet == SETTLED_SECONDS
    changes.dispatch(DirModifiedEvent("nodes"))  # sent beside the others; says nothing new
    assert changes.take() == {"nodes/a.yaml", "nodes/.a.yaml.tmp", "nodes/b.yaml"}


def test_watch_loads_what_an_edit_needs_before_the_first_edit(example):
    """A watch that starts on a built tree has nothing to build; the first save must not
    then pay for reading the records, the listing and the site."""
    from bootgen.build import build
    from bootgen.watch import Rebuilder

    build(example, fetch=False)
    rebuilder = Rebuilder(example, lambda line: None, fetch=False)
    assert rebuilder.rebuild().rendered == 0
    assert rebuilder.state.listing is None and rebuilder.state.site_cache is None
    rebuilder.warm_up()
    assert rebuilder.state.records and rebuilder.state.listing is not None
    assert rebuilder.state.site_cache is not None
    node = example.nodes / "node-2.yaml"
    node.write_text(node.read_text() + "kernel_args: [warm=1]\n")
    assert rebuilder.rebuild({str(node)}).rendered == 1
    assert "warm=1" in (example.out / "pxelinux.cfg" / "0A000047").read_text()
