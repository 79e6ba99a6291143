"""Publish what `bootgen init` + `bootgen build --offline` really produce (contract check with build)."""
from __future__ import annotations

import os
import subprocess
import sys

from publish_synth import is_index, references

from bootgen.publish import publish
from bootgen.publish.manifest import load_tree, verify_tree


def _build_example(tmp_path):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    for args in (["init", "site"], ["build", "--offline"]):
        cwd = tmp_path if args[0] == "init" else tmp_path / "site"
        subprocess.run([sys.executable, "-m", "bootgen", *args], cwd=cwd, env=env, check=True,
                       capture_output=True, timeout=120)
    return (tmp_path / "site" / "build").resolve()


def test_a_real_build_publishes_to_a_docroot_with_every_reference_served(tmp_path):
    tree = _build_example(tmp_path)
    manifest = load_tree(tree)
    verify_tree(tree, manifest)  # build and publish agree on the index: entries and SHA256SUMS lines
    report = publish(tree, str(tmp_path / "www"))
    assert sum(not is_index(a.path) for a in report.actions if a.verb == "copy") == len(manifest.files)
    current = tmp_path / "www" / "current"
    checked = 0
    for entry in (f for f in manifest.files if not f.immutable and f.path.startswith(("ipxe/", "pxelinux.cfg/"))):
        for ref in references((current / entry.path).read_text()):
            assert (current / ref).is_file(), f"{entry.path} names missing {ref}"
            checked += 1
    assert checked, "no entry point named a content-addressed object; the check proved nothing"
    assert publish(tree, str(tmp_path / "www")).uploaded == 0


def test_a_one_node_edit_uploads_only_the_shards_it_changed(example, seaweed, bucket, monkeypatch):
    import json

    import bootgen.plan as plan
    from bootgen.build import build
    from publish_servers import s3_client

    monkeypatch.setattr(plan, "CHUNK", 4)  # the example's files in about twenty shards
    monkeypatch.setattr(plan, "CHUNK_SPREAD", 2)
    destination = f"s3://{bucket}/site"
    first = build(example, fetch=False).write.tree
    publish(first, destination, endpoint_url=seaweed.endpoint, progress=False)
    node = example.nodes / "node-2.yaml"
    node.write_text(node.read_text() + "kernel_args: [edited=1]\n")
    second = build(example, fetch=False).write.tree
    report = publish(second, destination, endpoint_url=seaweed.endpoint, progress=False)
    before, after = load_tree(first).index_files(), load_tree(second).index_files()
    uploaded = [a.path for a in report.actions if a.verb == "upload" and (a.path.startswith("index/")
                                                                          or a.path == "manifest.json")]
    assert uploaded == [name for name in after if name not in before] + ["manifest.json"]
    assert 2 < len(uploaded) < len(after) / 2
    client = s3_client(seaweed.endpoint)
    root = json.loads(client.get_object(Bucket=bucket, Key="site/manifest.json")["Body"].read())
    pages = [json.loads(client.get_object(Bucket=bucket, Key=f"site/index/{page['id']}.page.json")["Body"].read())
             for page in root["pages"]]
    for shard in (shard for page in pages for shard in page["shards"]):  # every shard the live root names
        body = client.get_object(Bucket=bucket, Key=f"site/index/{shard['id']}.json")["Body"].read()
        assert body == (second / "index" / f"{shard['id']}.json").read_bytes()
