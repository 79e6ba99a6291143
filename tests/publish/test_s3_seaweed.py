"""Publishing to a real S3 server (SeaweedFS on loopback), read back by independent clients."""
from __future__ import annotations

import os
import shutil
import subprocess

import pytest
from publish_servers import free_port, http_get, rclone_env, rclone_s3_args, s3_client
from publish_synth import is_index, make_tree

from bootgen.errors import PublishError
from bootgen.publish import publish
from bootgen.publish.stores.s3 import make_client, publish_s3


def _url(seaweed, bucket, path, prefix="site"):
    return f"{seaweed.endpoint}/{bucket}/{prefix}/{path}"


def test_first_publish_is_served_over_plain_http(seaweed, bucket, tmp_path):
    tree = make_tree(tmp_path / "tree", 5, image_size=3 << 20)
    report = publish(tmp_path / "tree", f"s3://{bucket}/site", endpoint_url=seaweed.endpoint, progress=False)
    assert {a.path for a in report.actions if not is_index(a.path)} == set(tree.files)
    index = [a.path for a in report.actions if is_index(a.path)]
    assert index[-1] == "manifest.json" and report.actions[-1].path == "manifest.json"  # the root goes last
    assert index[:-1] and all(p.startswith("index/") for p in index[:-1])
    for path, content in tree.files.items():  # anonymous GETs, as iPXE does them
        status, _headers, body = http_get(_url(seaweed, bucket, path))
        assert (status, body) == (200, content), path
    status, _h, body = http_get(_url(seaweed, bucket, "manifest.json"))
    assert body == (tmp_path / "tree/manifest.json").read_bytes()


@pytest.mark.parametrize("kind, content_type, cache", [
    ("configs/", "application/json", "public, max-age=31536000, immutable"),
    ("images/", "application/octet-stream", "public, max-age=31536000, immutable"),
    ("ipxe/52", "text/plain; charset=utf-8", "no-cache"),
    ("pxelinux.cfg/", "text/plain; charset=utf-8", "no-cache"),
    ("manifest.json", "application/json", "no-cache"),
])
def test_headers_per_kind(seaweed, bucket, tmp_path, kind, content_type, cache):
    tree = make_tree(tmp_path / "tree", 1, image_size=1024)
    publish(tmp_path / "tree", f"s3://{bucket}/site", endpoint_url=seaweed.endpoint, progress=False)
    path = next(p for p in sorted(tree.files) + ["manifest.json"] if p.startswith(kind))
    _status, headers, _body = http_get(_url(seaweed, bucket, path))
    assert headers["Content-Type"] == content_type
    assert headers["Cache-Control"] == cache


@pytest.mark.skipif(shutil.which("rclone") is None, reason="Debian package rclone not installed")
def test_rclone_check_agrees_with_the_tree(seaweed, bucket, tmp_path):
    make_tree(tmp_path / "tree", 20)
    publish(tmp_path / "tree", f"s3://{bucket}/site", endpoint_url=seaweed.endpoint, progress=False)
    result = subprocess.run(
        ["rclone", "check", str(tmp_path / "tree"), f":s3:{bucket}/site", "--one-way",
         *rclone_s3_args(seaweed.endpoint)], capture_output=True, text=True, timeout=60, env=rclone_env())
    assert result.returncode == 0, result.stderr
    assert "0 differences found" in result.stderr


def test_multipart_image_round_trips(seaweed, bucket, tmp_path):
    tree = make_tree(tmp_path / "tree", 1, image_size=11 << 20)
    client = make_client(seaweed.endpoint, 4)
    publish_s3(tmp_path / "tree", f"s3://{bucket}/site", client, multipart_threshold=5 << 20)
    image = next(p for p in tree.files if p.startswith("images/"))
    head = s3_client(seaweed.endpoint).head_object(Bucket=bucket, Key=f"site/{image}")
    assert head["ETag"].strip('"').endswith("-3")  # three 5 MiB parts
    assert http_get(_url(seaweed, bucket, image))[2] == tree.files[image]


def _seed_with_rclone(seaweed, bucket, tree) -> bool:
    """Copy a tree's objects (not its manifest) with rclone, which is much faster than boto3 here."""
    if shutil.which("rclone") is None:
        return False
    subprocess.run(["rclone", "copy", str(tree), f":s3:{bucket}/site", "--transfers", "16", "--checkers", "16",
                    "--exclude", "manifest.json", "--exclude", "index/**", "--no-check-dest",
                    "--s3-no-check-bucket", *rclone_s3_args(seaweed.endpoint)],
                   check=True, capture_output=True, timeout=120, env=rclone_env())
    return True


def test_objects_already_in_the_bucket_are_adopted_not_uploaded(seaweed, bucket, tmp_path):
    """No remote manifest (e.g. a first publish that died before its switch): list, upload what lacks."""
    tree = make_tree(tmp_path / "a", 30, image_size=4096)
    if not _seed_with_rclone(seaweed, bucket, tmp_path / "a"):
        pytest.skip("Debian package rclone not installed")
    ipxe = "ipxe/52-54-00-00-00-04.ipxe"
    s3_client(seaweed.endpoint).put_object(Bucket=bucket, Key=f"site/{ipxe}", Body=b"stale")
    report = publish(tmp_path / "a", f"s3://{bucket}/site", endpoint_url=seaweed.endpoint, progress=False)
    assert [a.path for a in report.actions if not is_index(a.path)] == [ipxe]
    assert http_get(_url(seaweed, bucket, ipxe))[2] == tree.files[ipxe]


def _publish_counted(tree, dest, endpoint, **options) -> tuple[object, int]:
    """Publish with a client whose requests' bodies are counted: (report, bytes sent)."""
    client = make_client(endpoint, 4)
    sent = []
    client.meta.events.register("before-send.s3",
                                lambda request, **_: sent.append(int(request.headers.get("Content-Length") or 0)))
    report = publish_s3(tree, dest, client, **options)
    assert len(sent) == report.requests  # the report counts every request the client made
    return report, sum(sent)


def _one_node_change(seaweed, bucket, tmp_path, nodes: int):
    tree = make_tree(tmp_path / "a", nodes, image_size=4096)
    dest = f"s3://{bucket}/site"
    seeded = nodes >= 1000 and _seed_with_rclone(seaweed, bucket, tmp_path / "a")
    first = publish(tmp_path / "a", dest, endpoint_url=seaweed.endpoint, jobs=12, progress=False)
    assert {a.path for a in first.actions if not is_index(a.path)} == (set() if seeded else set(tree.files))
    changed = make_tree(tmp_path / "b", nodes, image_size=4096, revisions={7: 1})
    report, sent = _publish_counted(tmp_path / "b", dest, seaweed.endpoint)
    assert {a.path for a in report.actions if not is_index(a.path)} == changed.node_paths(7)
    assert all(a.verb == "upload" for a in report.actions)
    return report, sent


def test_a_one_node_change_costs_the_same_requests_and_bytes_at_1000_and_3000_nodes(seaweed, aws_env, tmp_path,
                                                                                   monkeypatch):
    """Shards of 64 files instead of 512, and pages of 8 shards instead of 32, give these small fleets
    the shape of large ones: a node's three files (config, iPXE script, pxelinux file) fall in three
    different shards and two pages at both sizes, and the root names several pages."""
    monkeypatch.setattr("bootgen.plan.CHUNK", 64)
    monkeypatch.setattr("bootgen.plan.PAGE", 8)
    costs = {}
    for nodes in (1000, 3000):
        bucket = f"scale-{os.getpid()}-{nodes}"
        s3_client(seaweed.endpoint).create_bucket(Bucket=bucket)
        report, sent = _one_node_change(seaweed, bucket, tmp_path / str(nodes), nodes)
        costs[nodes] = (report.requests, sent)
    print(f"one-node change (requests, bytes sent): {costs}")
    (small_requests, small_bytes), (large_requests, large_bytes) = costs[1000], costs[3000]
    assert large_requests == small_requests, costs
    # bytes: the node's files, the three shards they fall in (whose size is set by where the cuts fall,
    # not by the fleet), the page naming them (about 32 shards at any size past a few thousand files)
    # and the root (about 160 bytes per page: 1/32 of the fleet's shards); never the fleet's index
    index = sum(p.stat().st_size for p in (tmp_path / "3000/b/index").iterdir())
    assert large_bytes < index / 10 and abs(large_bytes - small_bytes) <= small_bytes / 10, (costs, index)


def test_a_noop_publish_reads_only_the_root_and_makes_at_most_three_requests(seaweed, bucket, tmp_path):
    make_tree(tmp_path / "a", 300, image_size=4096)
    dest = f"s3://{bucket}/site"
    publish(tmp_path / "a", dest, endpoint_url=seaweed.endpoint, jobs=12, progress=False)
    root_only = tmp_path / "root-only"  # the tree with nothing but its root: any other read would fail
    root_only.mkdir()
    shutil.copyfile(tmp_path / "a/manifest.json", root_only / "manifest.json")
    report, _sent = _publish_counted(root_only, dest, seaweed.endpoint)
    assert (report.uploaded, report.deleted, report.actions) == (0, 0, ())
    assert report.requests <= 3


def test_dry_run_lists_changes_and_only_reads(seaweed, bucket, tmp_path):
    make_tree(tmp_path / "a", 10, image_size=1024)
    dest = f"s3://{bucket}/site"
    publish(tmp_path / "a", dest, endpoint_url=seaweed.endpoint, progress=False)
    changed = make_tree(tmp_path / "b", 9, image_size=1024, revisions={3: 1})  # node 9 removed
    client = make_client(seaweed.endpoint, 4)
    methods: list[str] = []
    client.meta.events.register("before-send.s3", lambda request, **_: methods.append(request.method))
    report = publish_s3(tmp_path / "b", dest, client, dry_run=True)
    assert set(methods) <= {"GET", "HEAD"}
    uploads = {a.path for a in report.actions if a.verb == "upload"}
    deletes = {a.path for a in report.actions if a.verb == "delete"}
    assert {p for p in uploads if not is_index(p)} == changed.node_paths(3)
    assert "manifest.json" in uploads
    assert deletes == {"ipxe/52-54-00-00-00-09.ipxe", "pxelinux.cfg/01-52-54-00-00-00-09"}
    assert http_get(_url(seaweed, bucket, "manifest.json"))[2] == (tmp_path / "a/manifest.json").read_bytes()


def test_removed_node_entry_points_are_deleted_after_the_switch(seaweed, bucket, tmp_path):
    old = make_tree(tmp_path / "a", 3, image_size=1024)
    dest = f"s3://{bucket}/site"
    publish(tmp_path / "a", dest, endpoint_url=seaweed.endpoint, progress=False)
    make_tree(tmp_path / "b", 2, image_size=1024)
    report = publish(tmp_path / "b", dest, endpoint_url=seaweed.endpoint, progress=False)
    paths = [str(a) for a in report.actions]
    assert paths.index("upload manifest.json") < paths.index("delete ipxe/52-54-00-00-00-02.ipxe")
    assert http_get(_url(seaweed, bucket, "ipxe/52-54-00-00-00-02.ipxe"))[0] == 404
    node2_config = next(p for p in old.node_paths(2) if p.startswith("configs/"))
    assert http_get(_url(seaweed, bucket, node2_config))[0] == 200  # content-addressed: kept until --prune


def _keys(seaweed, bucket):
    pages = s3_client(seaweed.endpoint).get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix="site/")
    return {o["Key"].removeprefix("site/") for page in pages for o in page.get("Contents", [])}


def test_prune_keeps_objects_of_the_last_k_builds(seaweed, bucket, tmp_path):
    dest = f"s3://{bucket}/site"
    trees = []
    for rev in range(4):  # four builds that differ in node 1's config and the image
        trees.append(make_tree(tmp_path / f"t{rev}", 3, image_size=1024, image_seed=rev, revisions={1: rev}))
        report = publish(tmp_path / f"t{rev}", dest, endpoint_url=seaweed.endpoint, prune=rev == 3,
                         keep=2, progress=False)
    immutables = lambda t: set(t.immutable)  # noqa: E731
    keys = _keys(seaweed, bucket)
    assert immutables(trees[2]) | immutables(trees[3]) <= keys
    gone = (immutables(trees[0]) | immutables(trees[1])) - immutables(trees[2]) - immutables(trees[3])
    assert gone and not gone & keys
    assert {a.path for a in report.actions if a.verb == "delete"} >= gone
    archived = {k for k in keys if k.startswith(".bootgen/manifests/")}
    assert archived == {f".bootgen/manifests/{t.build_id}.json" for t in trees[2:]}
    shards = lambda t: {f"index/{name}" for name in os.listdir(t.root / "index")}  # noqa: E731
    assert shards(trees[2]) | shards(trees[3]) <= keys  # the index of every kept build stays whole
    dropped = (shards(trees[0]) | shards(trees[1])) - shards(trees[2]) - shards(trees[3])
    assert dropped and not dropped & keys


def test_prune_after_rollback_never_touches_the_live_build(seaweed, bucket, tmp_path):
    dest = f"s3://{bucket}/site"
    old = make_tree(tmp_path / "a", 3, image_size=1024, image_seed=1)
    new = make_tree(tmp_path / "b", 3, image_size=1024, image_seed=2, revisions={0: 5})
    for name in ("a", "b", "a"):
        publish(tmp_path / name, dest, endpoint_url=seaweed.endpoint, prune=True, keep=1, progress=False)
    keys = _keys(seaweed, bucket)
    assert set(old.files) <= keys
    assert not (new.immutable - old.immutable) & keys


def test_missing_bucket_is_a_publish_error(seaweed, aws_env, tmp_path):
    make_tree(tmp_path, 1, image_size=16)
    with pytest.raises(PublishError, match="bucket does not exist"):
        publish(tmp_path, "s3://no-such-bucket-here/site", endpoint_url=seaweed.endpoint, progress=False)


def test_refused_credentials_are_a_publish_error(seaweed, bucket, tmp_path, monkeypatch):
    make_tree(tmp_path, 1, image_size=16)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wrong")
    with pytest.raises(PublishError, match="refused the credentials"):
        publish(tmp_path, f"s3://{bucket}/site", endpoint_url=seaweed.endpoint, progress=False)


def test_unreachable_endpoint_is_a_publish_error(aws_env, tmp_path, monkeypatch):
    make_tree(tmp_path, 1, image_size=16)
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "2")
    with pytest.raises(PublishError, match="unreachable after retries") as err:
        publish(tmp_path, "s3://boot/site", endpoint_url=f"http://127.0.0.1:{free_port()}", progress=False)
    assert err.value.problems[0].location.file == "s3://boot/site"
