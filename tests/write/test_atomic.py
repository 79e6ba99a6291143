"""The output switch: atomic, idempotent, deterministic, and safe to kill."""
import json
from dataclasses import asdict
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bootgen.build import Paths, build
from bootgen.errors import OutputError, RenderError
from bootgen.plan import Artifact, Plan, listing_dir
from bootgen.plan import is_index_path
from bootgen.publish.manifest import load_tree
from bootgen.secrets_tree import secret_paths
import bootgen.write as write_module


def _manifest(out: Path) -> dict:
    """The tree's index as one document: its root's build id and every entry of its shards."""
    manifest = load_tree(out)
    return {"build_id": manifest.build_id, "files": [asdict(entry) for entry in manifest.files]}


def _mtimes(tree: Path) -> dict[str, int]:
    return {str(p): p.stat().st_mtime_ns for p in tree.rglob("*")}


def test_output_is_a_symlink_to_a_complete_tree(example, tree_files):
    result = build(example, fetch=False)
    assert example.out.is_symlink()
    assert example.out.resolve() == result.write.tree.resolve()
    check = subprocess.run("cat index/*.sha256 | sha256sum --quiet -c", shell=True, cwd=example.out,
                           capture_output=True, text=True, timeout=60)
    assert check.returncode == 0, check.stdout + check.stderr
    listed = {f["path"] for f in _manifest(listing_dir(example.out))["files"]}  # the full listing
    on_disk = {path for path in tree_files(example.out) if not is_index_path(path)}
    assert listed == on_disk
    public = {f["path"] for f in _manifest(example.out)["files"]}
    assert listed - public == set(secret_paths(example.out)) != set()  # the Ubuntu node's configs, the fence
    assert not any(p.is_symlink() for p in example.out.resolve().rglob("*")), "buckets cannot hold symlinks"


def test_noop_rebuild_writes_nothing(example):
    first = build(example, fetch=False)
    before = _mtimes(first.write.tree)
    second = build(example, fetch=False)
    assert not second.write.changed and second.write.written == 0
    assert second.write.build_id == first.write.build_id
    assert _mtimes(first.write.tree) == before


def test_one_node_edit_writes_only_that_node(example):
    build(example, fetch=False)
    node = example.nodes / "node-2.yaml"
    node.write_text(node.read_text().replace("dns: [10.0.0.1]", "dns: [10.0.0.2]"))
    result = build(example, fetch=False)
    changed = {f["path"] for f in _manifest(example.out)["files"] if f["node"] == "node-2"}
    assert result.write.changed
    assert 0 < result.write.written <= len(changed)


def test_same_inputs_give_identical_bytes_whatever_the_order_or_locale(example, tmp_path, tree_files):
    first = build(example, fetch=False)
    other = tmp_path / "other"
    (other / "nodes").mkdir(parents=True)
    for path in sorted(example.nodes.iterdir(), reverse=True):  # different creation order
        (other / "nodes" / path.name).write_bytes(path.read_bytes())
        time.sleep(0.01)
    env = dict(os.environ, LC_ALL="C", TZ="Pacific/Kiritimati", PYTHONHASHSEED="7")
    subprocess.run([sys.executable, "-m", "bootgen", "build", "--site", str(example.site.resolve()),
                    "--nodes", "nodes", "--out", "build"], cwd=other, env=env, check=True, timeout=120,
                   capture_output=True)
    assert tree_files(other / "build") == tree_files(first.write.tree)


def test_failure_midway_leaves_previous_tree_intact(example, monkeypatch, tree_files):
    build(example, fetch=False)
    before = tree_files(example.out)
    node = example.nodes / "node-1.yaml"
    node.write_text(node.read_text().replace("node-1\n", "node-one\n"))
    calls = {"n": 0}
    real = write_module.write_bytes

    def fail_after_three(target, data):
        calls["n"] += 1
        if calls["n"] > 3:
            raise OSError(28, "No space left on device", str(target))
        real(target, data)

    monkeypatch.setattr(write_module, "write_bytes", fail_after_three)
    with pytest.raises(OutputError) as err:
        build(example, fetch=False)
    assert "No space left on device" in str(err.value)
    assert tree_files(example.out) == before
    assert not list((example.state / "builds").glob(".partial-*"))


def _big_site(root: Path, count: int) -> None:
    (root / "nodes").mkdir(parents=True, exist_ok=True)
    for i in range(count):
        (root / "nodes" / f"n{i:05d}.yaml").write_text(
            f"interfaces:\n  - mac: 02:00:00:00:{i // 256:02x}:{i % 256:02x}\n    address: 10.1.{i // 250}.{i % 250 + 1}/16\n")


@pytest.mark.parametrize("delay", [0.3, 0.8, 1.5])
def test_killed_build_leaves_previous_tree_intact(example, delay, tree_files):
    _big_site(Path("."), 1500)
    build(example, fetch=False)
    before = tree_files(example.out)
    (example.site / "profiles" / "flatcar-install.yaml").write_text(
        (example.site / "profiles" / "flatcar-install.yaml").read_text().replace("/dev/sda", "/dev/vda"))
    proc = subprocess.Popen([sys.executable, "-m", "bootgen", "build"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    time.sleep(delay)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    after = tree_files(example.out)
    assert after == before or _manifest(example.out)["build_id"] != json.loads(before["manifest.json"])["build_id"]
    check = subprocess.run("cat index/*.sha256 | sha256sum --quiet -c", shell=True, cwd=example.out,
                           capture_output=True, timeout=120)
    assert check.returncode == 0
    build(example, fetch=False)  # the next build cleans up and completes
    assert not list((example.state / "builds").glob(".partial-*"))


def test_refuses_to_replace_a_real_directory(example):
    example.out.mkdir()
    (example.out / "precious").write_text("keep me")
    with pytest.raises(OutputError) as err:
        build(example, fetch=False)
    assert "exists and is not a bootgen output link" in str(err.value)
    assert (example.out / "precious").read_text() == "keep me"


def test_two_outputs_claiming_one_path_is_an_error():
    plan = Plan()
    plan.add(Artifact.from_bytes("ipxe/a.ipxe", b"one", target="ipxe", node="a"))
    plan.add(Artifact.from_bytes("ipxe/a.ipxe", b"two", target="ipxe", node="b"))
    with pytest.raises(RenderError) as err:
        plan.check()
    assert "two outputs claim this path: ipxe for node 'a' and ipxe for node 'b'" in str(err.value)


def test_old_trees_are_pruned_but_live_one_kept(example):
    for i in range(5):
        (example.nodes / "node-2.yaml").write_text(
            f"hostname: node-2\ninterfaces:\n  - mac: 00:1e:06:45:0a:02\nvars: {{n: {i}}}\nkernel_args: [x={i}]\n")
        build(example, fetch=False)
    trees = [p for p in (example.state / "builds").iterdir() if not p.name.startswith(".")]
    assert len(trees) == write_module.KEPT_TREES  # the releases and one tree to recycle
    assert example.out.resolve() in [t.resolve() for t in trees]


def test_discarded_trees_are_removed_by_one_background_process(example):
    builds = example.state / "builds"
    builds.mkdir(parents=True)
    for name in ("old-a", "old-b"):
        (builds / name / "sub").mkdir(parents=True)
        (builds / name / "sub" / "file").write_text(name)
    lock = open(builds / ".trash.lock", "w")
    import fcntl
    fcntl.flock(lock, fcntl.LOCK_EX)  # as if a remover were at work
    writer = write_module.TreeWriter(example.out, example.state)
    writer._discard([builds / "old-a"])
    time.sleep(0.5)
    assert len(list(builds.glob(".trash-*"))) == 1  # left to the running remover
    lock.close()
    writer._discard([builds / "old-b"])
    deadline = time.monotonic() + 30
    while list(builds.glob(".trash-*")) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not list(builds.glob(".trash-*"))  # the new remover took both
    writer.close()


def _files(tree: Path) -> dict[str, bytes]:
    return {str(p.relative_to(tree)): p.read_bytes() for p in tree.rglob("*") if p.is_file()}


def _wait_for(condition, what: str) -> None:
    deadline = time.monotonic() + 30
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def _spares(example) -> list[Path]:
    return sorted((example.state / "builds").glob(f"{write_module.SPARE_PREFIX}*"))


def test_after_a_build_from_scratch_copies_are_made_for_each_edit_until_old_trees_can_be_recycled(
        example, tmp_path, monkeypatch):
    monkeypatch.setattr(write_module, "SPARE_MIN_FILES", 0)  # the example is small; 10,000 nodes are not
    first = build(example, fetch=False)  # from scratch: the only tree, nothing to recycle
    write_module.wait_for_spare(example.state / "builds", timeout=WAIT)
    spares = _spares(example)
    assert len(spares) == write_module.KEPT_TREES - 1  # one for each edit before an old tree is recycled
    live_files = {path: data for path, data in _files(example.out.resolve()).items() if path != "manifest.json"}
    assert any(is_index_path(path) for path in live_files)  # its shards too: the index's root alone is new
    for spare in spares:
        assert spare.name.startswith(f"{write_module.SPARE_PREFIX}{first.write.build_id}.")
        assert _files(spare) == live_files

    node = example.nodes / "node-2.yaml"
    original = node.read_text()
    for round_ in range(write_module.KEPT_TREES - 1):  # one edit at once after another
        node.write_text(original + f"kernel_args: [spare={round_}]\n")
        result = build(example, fetch=False)
        assert result.write.linked < 10  # a copy recycled: the drift and this node, not a link per file
        assert len(_spares(example)) == write_module.KEPT_TREES - 2 - round_  # and no new copy wanted
    clean = Paths(example.site, example.nodes, tmp_path / "clean" / "build")
    build(clean, fetch=False)
    assert _files(example.out.resolve()) == _files(clean.out.resolve())  # what a clean build makes


WAIT = 60  # seconds: every wait below is bounded


def test_a_build_started_while_a_copy_is_being_made_does_not_wait_for_it(example, tmp_path):
    build(example, fetch=False)
    copier = write_module.start_spare(example.out, example.state, example.state)
    assert copier is not None
    os.kill(copier.pid, signal.SIGSTOP)  # a copy in progress that will not finish by itself
    try:
        node = example.nodes / "node-2.yaml"
        node.write_text(node.read_text() + "kernel_args: [during.copy=1]\n")
        started = time.monotonic()
        done = subprocess.run([sys.executable, "-m", "bootgen", "build", "--offline"], cwd=tmp_path,
                              capture_output=True, text=True, timeout=WAIT)
        assert done.returncode == 0, done.stderr
        assert time.monotonic() - started < 20  # it made its tree itself (a wait would last SPARE_WAIT)
        assert "during.copy=1" in (example.out / "pxelinux.cfg" / "0A000047").read_text()
        check = subprocess.run("cat index/*.sha256 | sha256sum --quiet -c", shell=True, cwd=example.out,
                               capture_output=True, text=True, timeout=WAIT)
        assert check.returncode == 0, check.stdout + check.stderr
        assert copier.poll() is None  # the copy was neither waited for nor taken over
    finally:
        os.kill(copier.pid, signal.SIGCONT)
        copier.wait(timeout=WAIT)
    write_module.wait_for_spare(example.state / "builds", timeout=WAIT)


def test_copies_pause_while_a_build_runs(example):
    from bootgen.write import build_lock

    build(example, fetch=False)
    with build_lock(example.state):  # a build is running
        copier = write_module.start_spare(example.out, example.state, example.state)
        try:
            time.sleep(1.5)
            assert copier.poll() is None and not _spares(example)  # paused before its first link
            assert not list((example.state / "builds").glob(".sparework-*"))
        except BaseException:
            copier.kill()
            raise
    assert copier.wait(timeout=WAIT) == 0
    assert len(_spares(example)) == write_module.KEPT_TREES - 1


def test_the_copy_is_locked_before_the_build_that_started_it_returns(example, monkeypatch):
    import fcntl

    monkeypatch.setattr(write_module, "SPARE_MIN_FILES", 0)
    build(example, fetch=False)
    with open(example.state / "builds" / ".sparework.lock", "a") as probe:
        try:
            fcntl.flock(probe, fcntl.LOCK_EX | fcntl.LOCK_NB)
            held = False
        except BlockingIOError:
            held = True
    assert held or _spares(example)  # being made, or already done: never a moment when neither shows
    write_module.wait_for_spare(example.state / "builds", timeout=WAIT)
    assert _spares(example)


def test_state_paths_that_are_not_directories_are_a_user_error(example):
    from bootgen.build import build
    from bootgen.errors import OutputError

    first = build(example, fetch=False).write.build_id
    node = example.nodes / "node-2.yaml"
    node.write_text(node.read_text() + "# edited\n")
    for name in ("cache", "builds"):
        path = example.state / name
        moved = path.with_name(name + ".real")
        path.rename(moved) if path.exists() else None
        path.write_text("a stray file\n")
        with pytest.raises(OutputError) as err:
            build(example, fetch=False)
        assert err.value.problems[0].format().startswith(f".bootgen/{name}: error: is not a directory")
        assert example.out.resolve().name == first
        path.unlink()
        moved.rename(path) if moved.exists() else None


def test_a_dangling_symlink_among_the_nodes_is_a_problem(example):
    from bootgen.build import build
    from bootgen.errors import InputError

    build(example, fetch=False)
    (example.nodes / "gone.yaml").symlink_to("/nonexistent/gone.yaml")
    with pytest.raises(InputError) as err:
        build(example, fetch=False)
    assert [p.location.file for p in err.value.problems] == ["nodes/gone.yaml"]
