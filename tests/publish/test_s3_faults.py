"""A publish killed at any point leaves a consistent bucket, and a rerun finishes it (moto, in-process)."""
from __future__ import annotations

import json
from typing import Callable

import pytest
from publish_synth import as_format_1, is_index, make_tree, references

from bootgen.publish.manifest import parse_index
from bootgen.publish.stores.s3 import publish_s3

DEST = "s3://boot/site"
ENTRY_DIRS = ("pxelinux.cfg/", "ipxe/", "boot.ipxe")


class Killed(BaseException):
    """Stands for SIGKILL: not an Exception, so nothing in publish may swallow it."""


def _bucket(client) -> dict[str, bytes]:
    pages = client.get_paginator("list_objects_v2").paginate(Bucket="boot", Prefix="site/")
    keys = [o["Key"] for page in pages for o in page.get("Contents", [])]
    return {k.removeprefix("site/"): client.get_object(Bucket="boot", Key=k)["Body"].read() for k in keys}


def assert_consistent(objects: dict[str, bytes]) -> None:
    """What boot firmware relies on: every entry point, and the live manifest, name only existing objects."""
    for path, body in objects.items():
        if path.startswith(ENTRY_DIRS):
            missing = references(body.decode()) - objects.keys()
            assert not missing, f"{path} refers to missing {missing}"
    if "manifest.json" in objects:
        index = parse_index(objects["manifest.json"], "manifest.json", lambda rel: (objects[rel], rel))
        assert {f.path for f in index.files} | set(index.index_files()) <= objects.keys()


def _kill_on(client, operation: str, nth: int):
    """Raise Killed at the nth call of operation; returns the function that disarms it."""
    return _hook(client, operation, nth, [])


def _count(client, operation: str) -> tuple[list, Callable]:
    calls: list = []
    return calls, _hook(client, operation, 0, calls)


def _hook(client, operation: str, nth: int, calls: list):
    def hook(**_kwargs):
        calls.append(1)
        if len(calls) == nth:
            raise Killed(f"{operation} #{nth}")

    event = f"before-parameter-build.s3.{operation}"
    client.meta.events.register(event, hook)
    return lambda: client.meta.events.unregister(event, hook)


@pytest.fixture
def two_builds(tmp_path):
    """Build a (6 nodes) and b: new image, 4 changed configs, node 5 removed, so every entry point changes."""
    a = make_tree(tmp_path / "a", 6, image_size=2048, image_seed=1)
    b = make_tree(tmp_path / "b", 5, image_size=2048, image_seed=2, revisions={n: 1 for n in range(4)})
    return a, b


# b's writes in order: 5 objects, 10 entry points, its new shards (.json, .sha256), the archive copy of
# its root, manifest.json, the history; a negative nth counts from the end (-1: the history)
@pytest.mark.parametrize("operation, nth", [
    ("PutObject", 1), ("PutObject", 4), ("PutObject", 6), ("PutObject", 12), ("PutObject", 16),
    ("PutObject", -5), ("PutObject", -4), ("PutObject", -3), ("PutObject", -2), ("PutObject", -1),
    ("DeleteObjects", 1)])
def test_killed_publish_is_consistent_and_rerun_completes_it(moto_client, two_builds, operation, nth):
    a, b = two_builds
    if nth < 0:
        publish_s3(a.root, "s3://boot/count", moto_client, jobs=4)
        calls, disarm = _count(moto_client, operation)
        publish_s3(b.root, "s3://boot/count", moto_client, jobs=4)
        disarm()
        nth += len(calls) + 1
    publish_s3(a.root, DEST, moto_client, jobs=4)
    before = _bucket(moto_client)
    disarm = _kill_on(moto_client, operation, nth)
    with pytest.raises(Killed):
        publish_s3(b.root, DEST, moto_client, jobs=4)
    disarm()
    during = _bucket(moto_client)
    assert_consistent(during)
    assert json.loads(during["manifest.json"])["build_id"] in (a.build_id, b.build_id)

    rerun = publish_s3(b.root, DEST, moto_client, jobs=4)
    done_before_kill = {p for p in during if during[p] != before.get(p)}
    redone = {x.path for x in rerun.actions if x.verb == "upload" and not is_index(x.path)}
    assert not redone & done_before_kill, "the rerun uploaded objects the killed run had finished"
    after = _bucket(moto_client)
    assert_consistent(after)
    assert {p: after[p] for p in b.files} == b.files
    assert after["manifest.json"] == (b.root / "manifest.json").read_bytes()
    assert not any(p.endswith("52-54-00-00-00-05.ipxe") or p.endswith("01-52-54-00-00-00-05") for p in after)
    assert json.loads(after[".bootgen/index.json"])["builds"] == [a.build_id, b.build_id]
    assert publish_s3(b.root, DEST, moto_client).requests == 2


def test_corrupt_remote_manifest_counts_as_empty(moto_client, two_builds):
    a, _b = two_builds
    publish_s3(a.root, DEST, moto_client)
    moto_client.put_object(Bucket="boot", Key="site/manifest.json", Body=b"{garbage")
    report = publish_s3(a.root, DEST, moto_client)
    assert report.actions and all(is_index(x.path) for x in report.actions)  # objects found by listing
    assert report.actions[-1].path == "manifest.json"
    assert _bucket(moto_client)["manifest.json"] == (a.root / "manifest.json").read_bytes()


def test_republishing_an_old_build_moves_it_to_the_end_of_the_index(moto_client, two_builds):
    a, b = two_builds
    for tree in (a, b, a):
        publish_s3(tree.root, DEST, moto_client)
    index = json.loads(_bucket(moto_client)[".bootgen/index.json"])
    assert index["builds"] == [b.build_id, a.build_id]


def test_unknown_profile_is_a_publish_error(aws_env, two_builds, monkeypatch):
    from bootgen.errors import PublishError
    from bootgen.publish import publish

    a, _b = two_builds
    monkeypatch.setenv("AWS_PROFILE", "no-such-profile")
    with pytest.raises(PublishError, match="S3 client setup failed"):
        publish(a.root, DEST, progress=False)


def test_server_errors_after_retries_are_a_publish_error(moto_client, two_builds, monkeypatch):
    """A server that answers 500 to every write: the retries run out and the user gets one problem."""
    from botocore.awsrequest import AWSResponse

    from bootgen.errors import PublishError
    from bootgen.publish.stores.s3 import make_client

    a, _b = two_builds
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "2")  # keep the backoff short
    client = make_client(None, 1)  # same moto backend as moto_client
    sent: list[str] = []

    class Body:
        def stream(self):
            yield b"<Error><Code>InternalError</Code><Message>disk on fire</Message></Error>"

    def broken(request, **_kwargs):
        if request.method == "PUT":
            sent.append(request.url)
            return AWSResponse(request.url, 500, {}, Body())
        return None

    client.meta.events.register("before-send.s3", broken)
    with pytest.raises(PublishError, match="InternalError"):
        publish_s3(a.root, DEST, client, jobs=1)
    assert sent and all(sent.count(url) == 2 for url in sent)  # one retry each, then a clear error
    assert "manifest.json" not in _bucket(moto_client)


def test_a_missing_published_shard_makes_the_publish_check_every_file(moto_client, two_builds):
    a, b = two_builds
    publish_s3(a.root, DEST, moto_client)
    shard = next(k for k in _bucket(moto_client) if k.startswith("index/") and k.endswith(".json"))
    moto_client.delete_object(Bucket="boot", Key=f"site/{shard}")
    publish_s3(b.root, DEST, moto_client)
    after = _bucket(moto_client)
    assert_consistent(after)
    assert {p: after[p] for p in b.files} == b.files


def test_shards_of_trees_kept_on_this_machine_are_not_fetched(moto_client, tmp_path):
    """Kept trees (.bootgen/builds/<id>) hold the live build's shards: same id, same bytes."""
    builds = tmp_path / ".bootgen" / "builds"
    make_tree(builds / "one", 40, image_size=1024)
    two = make_tree(builds / "two", 40, image_size=1024, revisions={3: 1})
    publish_s3(builds / "one", DEST, moto_client)
    fetched: list[str] = []
    moto_client.meta.events.register("before-parameter-build.s3.GetObject",
                                     lambda params, **_: fetched.append(params["Key"]))
    report = publish_s3(builds / "two", DEST, moto_client)
    assert {a.path for a in report.actions if not is_index(a.path)} == two.node_paths(3)
    assert fetched == ["site/manifest.json", "site/.bootgen/index.json"]


def test_a_bucket_published_before_shards_moves_to_them(moto_client, two_builds):
    a, b = two_builds
    as_format_1(a)
    publish_s3(a.root, DEST, moto_client)
    assert "SHA256SUMS" in _bucket(moto_client)
    report = publish_s3(b.root, DEST, moto_client)
    after = _bucket(moto_client)
    assert_consistent(after)
    assert {p: after[p] for p in b.files} == b.files
    assert "SHA256SUMS" not in after and "delete SHA256SUMS" in map(str, report.actions)
    assert publish_s3(b.root, DEST, moto_client).requests == 2


def _as_format_2(root: bytes, objects: dict[str, bytes]) -> bytes:
    """A format-3 root rewritten as bootgen wrote it before pages: the root names every shard."""
    doc = json.loads(root)
    shards = [s for page in doc.pop("pages") for s in json.loads(objects[f"index/{page['id']}.page.json"])["shards"]]
    return json.dumps(doc | {"format": 2, "shards": shards}, indent=2).encode()


def test_a_bucket_serving_a_format_2_root_is_compared_with_nothing_and_loses_nothing(moto_client, two_builds):
    a, b = two_builds
    publish_s3(a.root, DEST, moto_client)
    before = _bucket(moto_client)
    old_root = _as_format_2(before["manifest.json"], before)
    for key in ("manifest.json", f".bootgen/manifests/{a.build_id}.json"):
        moto_client.put_object(Bucket="boot", Key=f"site/{key}", Body=old_root)
    writes: list[str] = []
    moto_client.meta.events.register("before-parameter-build.s3.PutObject",
                                     lambda params, **_: writes.append(params["Key"].removeprefix("site/")))
    report = publish_s3(b.root, DEST, moto_client)
    after = _bucket(moto_client)
    assert_consistent(after)
    assert {p: after[p] for p in b.files} == b.files
    assert not [x for x in report.actions if x.verb == "delete"]
    assert set(before) - {"manifest.json"} <= set(after)  # a's objects and index stay for clients mid-boot
    assert writes[-2:] == [f".bootgen/manifests/{b.build_id}.json", ".bootgen/index.json"]  # the root is copied
    assert json.loads(after["manifest.json"])["format"] == 3
    assert publish_s3(b.root, DEST, moto_client).requests == 2


def test_a_missing_published_page_makes_the_publish_check_every_file(moto_client, two_builds):
    a, b = two_builds
    publish_s3(a.root, DEST, moto_client)
    page = next(k for k in _bucket(moto_client) if k.endswith(".page.json"))
    moto_client.delete_object(Bucket="boot", Key=f"site/{page}")
    report = publish_s3(b.root, DEST, moto_client)
    after = _bucket(moto_client)
    assert_consistent(after)
    assert {p: after[p] for p in b.files} == b.files
    assert page not in after or page in {x.path for x in report.actions}
