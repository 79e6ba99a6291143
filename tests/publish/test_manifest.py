"""Reading and verifying a tree against its manifest."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from publish_synth import make_tree

from bootgen.errors import PublishError
from bootgen.publish.manifest import load_full, load_tree, parse_manifest, read_root, read_shard, verify_tree


def test_intact_tree_verifies(tmp_path):
    tree = make_tree(tmp_path, 3)
    manifest = load_tree(tmp_path)
    verify_tree(tmp_path, manifest)
    assert manifest.build_id == tree.build_id
    assert {f.path for f in manifest.files} == set(tree.files)
    assert {f.path for f in manifest.files if f.immutable} == tree.immutable


def test_every_corruption_is_reported_at_once(tmp_path):
    tree = make_tree(tmp_path, 3)
    config = sorted(p for p in tree.files if p.startswith("configs/"))[0]
    entry = "boot.ipxe"
    data = bytearray((tmp_path / config).read_bytes())
    data[0] ^= 1  # same size, different hash
    (tmp_path / config).write_bytes(bytes(data))
    (tmp_path / entry).write_bytes(b"short")
    (tmp_path / "ipxe/default.ipxe").unlink()
    with pytest.raises(PublishError) as err:
        verify_tree(tmp_path, load_tree(tmp_path))
    messages = {p.location.file.removeprefix(str(tmp_path) + "/"): p.message for p in err.value.problems}
    assert messages[config] == "sha256 does not match manifest.json"
    assert messages[entry].startswith("size is 5")
    assert "unreadable" in messages["ipxe/default.ipxe"]
    assert len(err.value.problems) == 3


def test_sums_must_agree_with_manifest(tmp_path):
    make_tree(tmp_path, 2)
    sums = next((tmp_path / "index").glob("*.sha256"))
    sums.write_text("0" * 64 + "  boot.ipxe\n")
    with pytest.raises(PublishError, match="does not match the entries"):
        verify_tree(tmp_path, load_tree(tmp_path))


def test_missing_manifest_is_a_publish_error(tmp_path):
    with pytest.raises(PublishError, match="no manifest.json in the tree"):
        load_tree(tmp_path)


def test_bad_entries_are_collected_with_field_paths():
    doc = {"build_id": "ab" * 32, "files": [
        {"path": "../etc/passwd", "size": 1, "sha256": "a" * 64, "immutable": False, "content_type": "text/plain"},
        {"path": "ok", "size": -1, "sha256": "xyz", "immutable": "yes", "content_type": "text/plain"},
        {"path": "ok", "size": 1, "sha256": "b" * 64, "immutable": True, "content_type": "a\nb"}]}
    with pytest.raises(PublishError) as err:
        parse_manifest(json.dumps(doc).encode(), "m.json")
    paths = sorted(p.path for p in err.value.problems)
    assert paths == ["$.files[0].path", "$.files[1].immutable", "$.files[1].sha256",
                     "$.files[1].size", "$.files[2].content_type", "$.files[2].path"]


def test_invalid_json_names_the_file():
    with pytest.raises(PublishError) as err:
        parse_manifest(b"{not json", "remote/manifest.json")
    assert err.value.problems[0].location.file == "remote/manifest.json"


def test_progress_is_quiet_unless_asked(monkeypatch):
    import io
    import sys

    from bootgen.publish.progress import NullProgress, RichProgress, make_progress

    monkeypatch.setattr(sys, "stderr", io.StringIO())  # not a terminal
    assert isinstance(make_progress(False), NullProgress)
    assert isinstance(make_progress(None), NullProgress)
    bar = make_progress(True)
    assert isinstance(bar, RichProgress)
    bar.start(100, "test")
    bar.advance(40)
    bar.advance(60)
    bar.stop()
    assert bar._bar.tasks[0].completed == 100


# --- index format 3: a root, pages and content-addressed shards, as `bootgen build` writes them ---

def _built(example) -> Path:
    from bootgen.build import build

    return build(example, fetch=False).write.tree


def test_a_built_tree_is_read_shard_by_shard_and_verified(example):
    tree = _built(example)
    root = read_root(tree)
    manifest = load_tree(tree)
    assert manifest.root == root and manifest.build_id == root.build_id == tree.name
    assert root.file_count == len(manifest.files) == sum(s.count for s in root.shards)
    index = manifest.index_files()
    assert index[-1] == "manifest.json" and len(index) == 2 * len(root.shards) + len(root.pages) + 1
    assert index[-1 - len(root.pages):-1] == [f"index/{page.id}.page.json" for page in root.pages]
    assert sum(page.shards for page in root.pages) == len(root.shards)
    assert index[:2] == [f"index/{root.shards[0].id}.json", f"index/{root.shards[0].id}.sha256"]
    assert read_shard(tree, root.shards[0])[0].path == root.shards[0].first
    verify_tree(tree, manifest)
    full, where = load_full(tree)  # the example has secret-bearing files: its full index is kept apart
    verify_tree(tree, full, sums_dir=where)
    assert len(full.files) > len(manifest.files)


def test_a_damaged_shard_is_a_problem_naming_it(example):
    tree = _built(example)
    shard = tree / load_tree(tree).index_files()[0]
    data = shard.read_bytes()
    shard.unlink()  # shared by hard link with the kept listing: never written in place
    shard.write_bytes(data.replace(b'"size": ', b'"size":  ', 1))
    with pytest.raises(PublishError) as err:
        load_tree(tree)
    assert err.value.problems[0].location.file == str(shard)
    assert "do not hash to its name" in err.value.problems[0].message


def test_a_root_naming_a_missing_shard_is_a_problem_naming_it(example):
    tree = _built(example)
    shard = tree / load_tree(tree).index_files()[0]
    shard.unlink()
    with pytest.raises(PublishError) as err:
        load_tree(tree)
    assert (err.value.problems[0].location.file, err.value.problems[0].message) == (
        str(shard), "the index names this shard but it is missing")


def _page_of(tree: Path) -> Path:
    page = json.loads((tree / "manifest.json").read_bytes())["pages"][0]
    return tree / "index" / f"{page['id']}.page.json"


def test_a_missing_page_is_a_problem_naming_it(example):
    tree = _built(example)
    page = _page_of(tree)
    page.unlink()
    with pytest.raises(PublishError) as err:
        load_tree(tree)
    assert (err.value.problems[0].location.file, err.value.problems[0].message) == (
        str(page), "the index names this page but it is missing")


@pytest.mark.parametrize("damage", ["bytes", "count"])
def test_a_damaged_page_is_a_problem_naming_it_and_its_field(example, damage):
    import hashlib

    tree = _built(example)
    page = _page_of(tree)
    data = page.read_bytes()
    page.unlink()
    if damage == "bytes":
        page.write_bytes(data.replace(b'"count": ', b'"count":  ', 1))
    else:  # well-formed, named by its bytes, but not what the root says of it
        data = data.replace(b'"count": ', b'"count": 1', 1)
        renamed = page.with_name(hashlib.sha256(data).hexdigest() + ".page.json")
        renamed.write_bytes(data)
        root = (tree / "manifest.json").read_bytes().replace(page.name.encode()[:64], renamed.name.encode()[:64])
        (tree / "manifest.json").unlink()
        (tree / "manifest.json").write_bytes(root)
        page = renamed
    with pytest.raises(PublishError) as err:
        load_tree(tree)
    problem = err.value.problems[0]
    assert problem.location.file == str(page)
    assert "page of the index is damaged" in problem.message
    if damage == "bytes":
        assert "do not hash to its name" in problem.message
    else:
        assert problem.path == "$.shards"


def test_a_tree_of_index_format_2_is_refused_with_a_hint(tmp_path):
    (tmp_path / "manifest.json").write_text(json.dumps({"build_id": "ab" * 32, "file_count": 0, "format": 2,
                                                          "shards": []}))
    with pytest.raises(PublishError) as err:
        load_tree(tmp_path)
    assert (err.value.problems[0].path, err.value.problems[0].hint) == (
        "$.format", "rebuild the tree with this version of bootgen")


def test_shard_sums_must_agree_with_the_shard(example):
    tree = _built(example)
    sums = tree / load_tree(tree).index_files()[1]
    sums.unlink()
    sums.write_text("0" * 64 + "  boot.ipxe\n")
    with pytest.raises(PublishError) as err:
        verify_tree(tree, load_tree(tree))
    assert [p.location.file for p in err.value.problems] == [str(sums)]
    assert "does not match the entries it goes with" in err.value.problems[0].message


def test_a_damaged_root_is_refused_with_its_field(example):
    tree = _built(example)
    root = tree / "manifest.json"
    doc = json.loads(root.read_bytes())
    doc["file_count"] += 1
    root.unlink()
    root.write_text(json.dumps(doc))
    with pytest.raises(PublishError) as err:
        load_tree(tree)
    assert err.value.problems[0].path == "$.file_count"


def test_publish_of_a_damaged_tree_exits_1_without_a_traceback(example, tmp_path):
    import subprocess
    import sys

    tree = _built(example)
    shard = tree / load_tree(tree).index_files()[0]
    shard.unlink()
    done = subprocess.run([sys.executable, "-m", "bootgen", "publish", str(tmp_path / "www")],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 1, done.stdout + done.stderr
    assert f"{shard}: error: the index names this shard but it is missing" in done.stderr
    assert "Traceback" not in done.stderr and not (tmp_path / "www" / "current").exists()
