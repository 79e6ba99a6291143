"""Reading and verifying a tree against its manifest."""
from __future__ import annotations

import json

import pytest
from publish_synth import make_tree

from bootgen.errors import PublishError
from bootgen.publish.manifest import load_tree, parse_manifest, verify_tree


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
