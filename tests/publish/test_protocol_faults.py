"""The publish protocol under a store that fails on command at every write, delete and switch.

For each store (a docroot on disk, a bucket in moto, the in-memory store of
memory_store.py) a publish of build b over build a is killed at its 1st, 2nd,
... write: the destination must still serve a or b completely, and the same
publish run again must finish b without redoing what the killed one wrote.
"""
from __future__ import annotations

import hashlib
import threading

import pytest
from memory_store import MemoryStore
from publish_synth import make_tree, references

from bootgen.publish import publish_with_store
from bootgen.publish.index import Index
from bootgen.publish.stores.docroot import DocrootStore
from bootgen.publish.stores.s3 import S3Store

WRITES = ("begin", "carry", "upload", "put_index", "archive", "switch", "delete", "record", "retain")


class Killed(BaseException):
    """Stands for SIGKILL: not an Exception, so nothing in publish may swallow it."""


class FailingStore:
    """Passes every call to `store`, and raises Killed at the `fail_at`-th write (0: never)."""

    def __init__(self, store, fail_at: int = 0):
        self._store, self._fail_at, self.writes = store, fail_at, []
        self.index_files: list[str] = []  # the paths put_index was given, in order
        self._lock = threading.Lock()

    def __getattr__(self, name):
        attr = getattr(self._store, name)
        if name not in WRITES:
            return attr

        def write(*args, **kwargs):
            with self._lock:
                self.writes.append(name)
                if name == "put_index":
                    self.index_files.append(args[0])
                if len(self.writes) == self._fail_at:
                    raise Killed(f"{name} (write #{self._fail_at})")
            return attr(*args, **kwargs)
        return write


@pytest.fixture
def builds(tmp_path):
    """a (6 nodes), then b: new image, 4 changed configs, node 5 removed: every kind of write happens."""
    a = make_tree(tmp_path / "a", 6, image_size=2048, image_seed=1)
    b = make_tree(tmp_path / "b", 5, image_size=2048, image_seed=2, revisions={n: 1 for n in range(4)})
    return a, b


class Docroot:
    whole_releases = True

    def __init__(self, tmp_path):
        self.tmp, self.count = tmp_path, 0

    def fresh(self):
        self.count += 1
        return DocrootStore(self.tmp / f"www{self.count}")

    def served(self, store) -> dict[str, bytes]:
        current = store.root / "current"
        return {str(p.relative_to(current)): p.read_bytes() for p in current.rglob("*") if p.is_file()}


class Bucket:
    whole_releases = False

    def __init__(self, client):
        self.client, self.count = client, 0

    def fresh(self):
        self.count += 1
        self.client.create_bucket(Bucket=f"boot{self.count}")
        return S3Store(f"s3://boot{self.count}/site", self.client).__enter__()

    def served(self, store) -> dict[str, bytes]:
        pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=store.loc.bucket, Prefix="site/")
        keys = [o["Key"] for page in pages for o in page.get("Contents", [])]
        return {k.removeprefix("site/"): self.client.get_object(Bucket=store.loc.bucket, Key=k)["Body"].read()
                for k in keys}


class Memory:
    whole_releases = False

    def fresh(self):
        return MemoryStore()

    def served(self, store) -> dict[str, bytes]:
        return dict(store.files)


@pytest.fixture(params=["docroot", "bucket", "memory"])
def target(request, tmp_path):
    if request.param == "docroot":
        return Docroot(tmp_path)
    if request.param == "bucket":
        return Bucket(request.getfixturevalue("moto_client"))
    return Memory()


def _served_build(served: dict[str, bytes]) -> Index:
    """The served root, whose every listed file must be there (objects with their exact content)."""
    listing = Index.from_root(served["manifest.json"], "served",
                                lambda shard: served.get(f"index/{shard}.json"))
    return listing


def assert_serves_one_build_completely(target, store, builds) -> str:
    served = target.served(store)
    listing = _served_build(served)
    tree = next(t for t in builds if t.build_id == listing.build_id)
    for entry in listing.files():
        content = served.get(entry.path)
        assert content is not None, f"{entry.path} listed by the served root is missing"
        if entry.immutable or target.whole_releases:  # a bucket's entry points are replaced in place
            assert hashlib.sha256(content).hexdigest() == entry.sha256, entry.path
            assert content == tree.files[entry.path]
    for path, body in served.items():  # what firmware relies on: an entry point names only existing objects
        if path.startswith(("ipxe/", "pxelinux.cfg/")):
            assert references(body.decode()) <= served.keys(), path
    return listing.build_id


def test_killed_at_every_write_the_destination_serves_a_whole_build_and_a_rerun_finishes(target, builds):
    a, b = builds
    counting = FailingStore(target.fresh())
    publish_with_store(counting._store, a.root, jobs=1)
    publish_with_store(counting, b.root, jobs=1)
    points = len(counting.writes)
    assert {"switch", "upload", "delete", "record", "archive"} <= set(counting.writes)
    for fail_at in range(1, points + 1):
        store = target.fresh()
        publish_with_store(store, a.root, jobs=1)
        failing = FailingStore(store, fail_at)
        with pytest.raises(Killed):
            publish_with_store(failing, b.root, jobs=1)
        assert assert_serves_one_build_completely(target, store, (a, b)) in (a.build_id, b.build_id)
        before_rerun = target.served(store)

        rerun = publish_with_store(store, b.root, jobs=1)
        assert assert_serves_one_build_completely(target, store, (a, b)) == b.build_id, f"killed at {fail_at}"
        if not target.whole_releases:  # a docroot rebuilds its staged release; a bucket keeps what was sent
            redone = {x.path for x in rerun.actions if x.verb == "upload" and x.path in b.files}
            assert not {p for p in redone if before_rerun.get(p) == b.files[p]}, f"killed at {fail_at}"
        served = target.served(store)
        assert {p: served.get(p) for p in b.files} == b.files
        assert not any(p.endswith(("52-54-00-00-00-05.ipxe", "01-52-54-00-00-00-05")) for p in served)
        assert list(store.history())[-2:] == [a.build_id, b.build_id]
        again = publish_with_store(store, b.root, jobs=1)
        assert (again.uploaded, again.deleted) == (0, 0)


def test_a_kill_during_retention_keeps_the_live_release(target, builds, tmp_path):
    """Retention (--prune, or a docroot's old releases) killed part-way: the live build is untouched."""
    a, b = builds
    c = make_tree(tmp_path / "c", 5, image_size=2048, image_seed=3, revisions={0: 2})
    store = target.fresh()
    for tree in (a, b):
        publish_with_store(store, tree.root, jobs=1, keep=1, prune=True)
    failing = FailingStore(store, 0)
    publish_with_store(failing, c.root, jobs=1, keep=1, prune=True)
    kill_at = failing.writes.index("retain") + 1
    store = target.fresh()
    for tree in (a, b):
        publish_with_store(store, tree.root, jobs=1, keep=1, prune=True)
    with pytest.raises(Killed):
        publish_with_store(FailingStore(store, kill_at), c.root, jobs=1, keep=1, prune=True)
    assert assert_serves_one_build_completely(target, store, (a, b, c)) == c.build_id
    publish_with_store(store, c.root, jobs=1, keep=1, prune=True)
    served = target.served(store)
    assert {p: served.get(p) for p in c.files} == c.files
    if target.whole_releases:
        assert [p.name for p in store.release_dirs()] == [c.build_id]
    else:
        gone = {p for p in a.immutable | b.immutable if p not in c.files}
        assert gone and not gone & served.keys()



def test_a_kill_among_parallel_uploads_stops_the_publish_before_its_switch(target, builds):
    """With uploads on a thread pool, a kill in one worker still ends the publish before the switch."""
    a, b = builds
    store = target.fresh()
    publish_with_store(store, a.root, jobs=4)
    failing = FailingStore(store, 4)
    with pytest.raises(Killed):
        publish_with_store(failing, b.root, jobs=4)
    assert "switch" not in failing.writes
    assert assert_serves_one_build_completely(target, store, (a, b)) == a.build_id
    publish_with_store(store, b.root, jobs=4)
    assert assert_serves_one_build_completely(target, store, (a, b)) == b.build_id


def test_pages_go_up_after_the_shards_they_name_and_a_kill_at_a_page_keeps_the_old_build(target, builds):
    a, b = builds
    store = target.fresh()
    publish_with_store(store, a.root, jobs=1)
    counting = FailingStore(store)
    publish_with_store(counting, b.root, jobs=4)
    pages = [i for i, path in enumerate(counting.index_files) if path.endswith(".page.json")]
    shards = [i for i, path in enumerate(counting.index_files) if not path.endswith(".page.json")]
    assert pages and shards and max(shards) < min(pages)
    store = target.fresh()
    publish_with_store(store, a.root, jobs=1)
    at_page = [i for i, name in enumerate(counting.writes) if name == "put_index"][min(pages)] + 1
    with pytest.raises(Killed):
        publish_with_store(FailingStore(store, at_page), b.root, jobs=1)
    assert assert_serves_one_build_completely(target, store, (a, b)) == a.build_id
    publish_with_store(store, b.root, jobs=1)
    assert assert_serves_one_build_completely(target, store, (a, b)) == b.build_id
