"""Two bootgen processes that meet: publishes to one destination take turns, and a tree being
published is neither recycled nor pruned by the builds that run meanwhile."""
from __future__ import annotations

import os
import subprocess
import sys
import time

from bootgen.build import build
from bootgen.publish.lock import destination_lock, lock_path
from bootgen.write import KEPT_TREES, pinned_tree

WAIT = 60  # seconds: every wait below is bounded


def _edit(example, i: int) -> None:
    (example.nodes / "node-2.yaml").write_text(
        f"hostname: node-2\ninterfaces:\n  - mac: 00:1e:06:45:0a:02\nkernel_args: [round={i}]\n")


def _trees(example) -> list:
    builds = example.state / "builds"
    return sorted((p for p in builds.iterdir() if not p.name.startswith(".")), key=lambda p: p.stat().st_mtime)


def _files(tree) -> dict[str, bytes]:
    return {str(p.relative_to(tree)): p.read_bytes() for p in sorted(tree.rglob("*")) if p.is_file()}


def test_a_second_publish_to_one_docroot_waits_for_the_first_and_says_so(example, tmp_path):
    build(example, fetch=False)
    www = tmp_path / "www"
    www.mkdir()
    with destination_lock(str(www)):  # a publish in progress
        proc = subprocess.Popen([sys.executable, "-m", "bootgen", "publish", str(www)], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        try:
            first = proc.stderr.readline()  # blocks until the waiting line (or the end of a failure)
            assert first == f"waiting for another publish to {www} to finish\n"
            time.sleep(0.3)
            assert proc.poll() is None and not (www / "current").exists()  # nothing written while it waits
        except BaseException:
            proc.kill()
            raise
    out, err = proc.communicate(timeout=WAIT)
    assert proc.returncode == 0, out + err
    assert (www / "current").resolve().name == example.out.resolve().name


def test_a_bucket_prefix_has_its_own_lock_per_endpoint(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    a = lock_path("s3://boot/prod", "http://127.0.0.1:8333")
    assert a == lock_path("s3://boot/prod/", "http://127.0.0.1:8333")
    assert len({a, lock_path("s3://boot/lab", "http://127.0.0.1:8333"), lock_path("s3://boot/prod", None)}) == 3
    assert a.parent == tmp_path / "bootgen" / "publish-locks"
    assert lock_path("/srv/bootgen", None) == tmp_path.root / __import__("pathlib").Path("srv/bootgen") / \
        ".bootgen-publish.lock"


def test_a_tree_being_published_is_neither_recycled_nor_pruned(example):
    for i in range(KEPT_TREES + 1):
        _edit(example, i)
        build(example, fetch=False)
    oldest = _trees(example)[0]  # the tree beyond the releases: the next build would recycle it
    before = _files(oldest)
    with pinned_tree(oldest) as present:
        assert present
        for i in range(10, 13):  # builds while it is read: each makes a new tree instead
            _edit(example, i)
            build(example, fetch=False)
            assert oldest.is_dir() and _files(oldest) == before
    for i in range(20, 20 + KEPT_TREES + 1):  # once released, later builds recycle or prune it
        _edit(example, i)
        build(example, fetch=False)
    assert not oldest.exists()
    assert len(_trees(example)) == KEPT_TREES
    assert not any(p.name.startswith(".pin-") and p.name[5:] == oldest.name
                   for p in (example.state / "builds").iterdir())


def _served_as(seaweed, bucket: str, tree) -> bool:
    """Whether the bucket serves every public file of `tree` (below its index) with its bytes."""
    from publish_servers import http_get

    from bootgen.secrets_tree import secret_paths

    secret = set(secret_paths(tree))
    for path, data in _files(tree).items():
        if "/" in path and path not in secret:
            status, _headers, body = http_get(f"{seaweed.endpoint}/{bucket}/site/{path}")
            if (status, body) != (200, data):
                return False
    return True


def test_two_publishes_to_one_bucket_take_turns_and_leave_one_whole_tree(example, seaweed, bucket):
    """Two `bootgen publish` processes of different trees to one bucket prefix at once."""
    build(example, fetch=False)
    older = example.out.resolve()
    _edit(example, 1)
    build(example, fetch=False)
    newer = example.out.resolve()
    destination = f"s3://{bucket}/site"
    argv = [sys.executable, "-m", "bootgen", "publish", destination, "--endpoint-url", seaweed.endpoint]
    with destination_lock(destination, seaweed.endpoint):  # both start while a publish is in progress
        procs = [subprocess.Popen(argv + extra, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for extra in (["--release", older.name], [])]
        try:
            for proc in procs:
                assert proc.stderr.readline() == f"waiting for another publish to {destination} to finish\n"
        except BaseException:
            for proc in procs:
                proc.kill()
            raise
    for proc in procs:
        out, err = proc.communicate(timeout=WAIT)
        assert proc.returncode == 0, out + err
    assert _served_as(seaweed, bucket, older) or _served_as(seaweed, bucket, newer)
