"""Publishing to a local docroot: releases, hard links, the atomic `current` switch, nginx."""
from __future__ import annotations

import os
import shutil
import threading
import time
from pathlib import Path

import pytest
from publish_servers import free_port, http_get, start_nginx
from publish_synth import as_format_1, is_index, make_tree, references

from bootgen.errors import PublishError
from bootgen.publish import publish, render_nginx_server


def _current(docroot: Path) -> str:
    return Path(os.readlink(docroot / "current")).name


def test_first_publish_creates_a_release_and_points_current_at_it(tmp_path):
    tree = make_tree(tmp_path / "a", 3)
    report = publish(tmp_path / "a", str(tmp_path / "www"))
    release = tmp_path / "www/releases" / tree.build_id
    assert _current(tmp_path / "www") == tree.build_id
    assert os.readlink(tmp_path / "www/current") == f"releases/{tree.build_id}"  # relative: docroot can move
    for path, content in tree.files.items():
        assert (tmp_path / "www/current" / path).read_bytes() == content
    assert (release / "manifest.json").read_bytes() == (tmp_path / "a/manifest.json").read_bytes()
    assert {a.path for a in report.actions if a.verb == "copy" and not is_index(a.path)} == set(tree.files)
    assert report.skipped == 0


def test_unchanged_files_are_hard_linked_and_old_objects_carried(tmp_path):
    a = make_tree(tmp_path / "a", 4)
    b = make_tree(tmp_path / "b", 4, revisions={2: 1})
    www = tmp_path / "www"
    publish(a.root, str(www))
    report = publish(b.root, str(www))
    old, new = www / "releases" / a.build_id, www / "releases" / b.build_id
    changed = b.node_paths(2)
    for path in b.files:
        same_inode = (old / path).exists() and (old / path).stat().st_ino == (new / path).stat().st_ino
        assert same_inode == (path not in changed), path
    assert {x.path for x in report.actions if x.verb == "copy" and not is_index(x.path)} == changed
    old_config = next(p for p in a.node_paths(2) if p.startswith("configs/"))
    assert (new / old_config).stat().st_ino == (old / old_config).stat().st_ino  # for in-flight clients


def test_publishing_the_served_build_again_changes_nothing(tmp_path):
    tree = make_tree(tmp_path / "a", 2)
    www = tmp_path / "www"
    publish(tmp_path / "a", str(www))
    stamp = (www / "current").lstat().st_mtime_ns
    report = publish(tmp_path / "a", str(www))
    assert (report.uploaded, report.skipped, report.deleted, report.actions) == (0, len(tree.files), 0, ())
    assert (www / "current").lstat().st_mtime_ns == stamp


def test_only_the_last_k_releases_are_kept_and_rollback_is_a_switch(tmp_path):
    www = tmp_path / "www"
    builds = [make_tree(tmp_path / f"t{i}", 2, revisions={0: i}) for i in range(4)]
    for tree in builds:
        publish(tree.root, str(www), keep=2)
    assert sorted(p.name for p in (www / "releases").iterdir() if not p.name.startswith(".")) == \
        sorted(t.build_id for t in builds[2:])
    report = publish(builds[2].root, str(www), keep=2)  # roll back to a kept release
    assert _current(www) == builds[2].build_id
    assert report.uploaded == 0 and report.deleted == 0


def test_keep_one_never_deletes_current(tmp_path):
    www = tmp_path / "www"
    for i in range(3):
        tree = make_tree(tmp_path / f"t{i}", 1, revisions={0: i})
        publish(tree.root, str(www), keep=1)
        assert _current(www) == tree.build_id
        assert (www / "current/manifest.json").is_file()


def test_a_docroot_published_before_shards_moves_to_them(tmp_path):
    a, b = make_tree(tmp_path / "a", 3), make_tree(tmp_path / "b", 3, revisions={1: 1})
    as_format_1(a)
    www = tmp_path / "www"
    publish(a.root, str(www))
    publish(b.root, str(www))
    current = www / "current"
    assert _current(www) == b.build_id and not (current / "SHA256SUMS").exists()
    assert all((current / p).read_bytes() == c for p, c in b.files.items())
    assert (current / "manifest.json").read_bytes() == (b.root / "manifest.json").read_bytes()
    assert {p.name for p in (current / "index").iterdir()} == set(os.listdir(b.root / "index"))


def test_dry_run_writes_nothing(tmp_path):
    make_tree(tmp_path / "a", 2)
    report = publish(tmp_path / "a", str(tmp_path / "www"), dry_run=True)
    assert report.dry_run and report.uploaded > 0
    assert not (tmp_path / "www").exists()


def test_a_crash_while_staging_leaves_current_alone(tmp_path, monkeypatch):
    a, b = make_tree(tmp_path / "a", 3), make_tree(tmp_path / "b", 3, revisions={0: 1, 1: 1})
    www = tmp_path / "www"
    publish(a.root, str(www))
    real_copy, calls = shutil.copyfile, []

    def dying_copy(src, dst, *args, **kwargs):
        calls.append(src)
        if len(calls) == 2:
            raise KeyboardInterrupt  # stands for a kill in the middle of the copy
        return real_copy(src, dst, *args, **kwargs)

    monkeypatch.setattr(shutil, "copyfile", dying_copy)
    with pytest.raises(KeyboardInterrupt):
        publish(b.root, str(www))
    monkeypatch.setattr(shutil, "copyfile", real_copy)
    assert _current(www) == a.build_id
    assert all((www / "current" / p).read_bytes() == c for p, c in a.files.items())
    publish(b.root, str(www))
    assert _current(www) == b.build_id
    assert not list((www / "releases").glob(".staging-*"))


def test_a_tree_that_does_not_match_its_manifest_is_refused(tmp_path):
    make_tree(tmp_path / "a", 2)
    (tmp_path / "a/boot.ipxe").write_text("#!ipxe\nshell\n")
    with pytest.raises(PublishError, match="does not match|size is"):
        publish(tmp_path / "a", str(tmp_path / "www"))
    assert not (tmp_path / "www/current").exists() and not (tmp_path / "www/releases").exists()


@pytest.fixture
def nginx(tmp_path):
    port = free_port()
    docroot = tmp_path / "www"
    server = start_nginx(tmp_path / "nginx", render_nginx_server(docroot, listen=f"127.0.0.1:{port}"), port)
    yield server, docroot
    server.stop()


@pytest.mark.parametrize("path, content_type, cache", [
    ("boot.ipxe", "text/plain; charset=utf-8", "no-cache"),
    ("pxelinux.cfg/01-52-54-00-00-00-00", "text/plain; charset=utf-8", "no-cache"),
    ("configs/", "application/json", "public, max-age=31536000, immutable"),
    ("images/", "application/octet-stream", "public, max-age=31536000, immutable"),
    ("pxelinux.0", "application/octet-stream", "no-cache"),
    ("user.ign", "application/json", "no-cache"),
    ("grub/x86_64-efi/", "application/octet-stream", "no-cache"),
])
def test_nginx_serves_current_with_types_and_caching(nginx, tmp_path, path, content_type, cache):
    server, docroot = nginx
    tree = make_tree(tmp_path / "a", 1, image_size=1024, extra={"user.ign": b"{}", "grub/x86_64-efi/http.mod": b"\x7fELF"})
    publish(tree.root, str(docroot))
    path = next(p for p in sorted(tree.files) if p.startswith(path))
    status, headers, body = http_get(f"{server.endpoint}/{path}")
    assert (status, body) == (200, tree.files[path])
    assert headers["Content-Type"] == content_type
    assert headers["Cache-Control"] == cache


def test_clients_never_miss_a_file_while_publishes_alternate(nginx, tmp_path):
    """A client reads an entry point, then every object it names, while `current` flips between builds."""
    server, docroot = nginx
    builds = [make_tree(tmp_path / f"t{i}", 4, image_size=8192, image_seed=i, revisions={n: i for n in range(4)})
              for i in range(3)]
    publish(builds[0].root, str(docroot))
    stop, publishes, errors = threading.Event(), [0], []

    def publisher():
        i = 1
        while not stop.is_set():
            try:
                publish(builds[i % 3].root, str(docroot), keep=2)
            except Exception as exc:  # noqa: BLE001 - surfaced by the assertion below
                errors.append(exc)
                return
            publishes[0] += 1
            i += 1
            time.sleep(0.01)

    thread = threading.Thread(target=publisher)
    thread.start()
    failures, requests, deadline = [], 0, time.monotonic() + 20
    try:
        while (requests < 300 or publishes[0] < 20) and time.monotonic() < deadline:
            entry = f"ipxe/52-54-00-00-00-0{requests % 4}.ipxe"
            status, _h, body = http_get(f"{server.endpoint}/{entry}")
            requests += 1
            if status != 200:
                failures.append((entry, status))
                continue
            for ref in sorted(references(body.decode())):
                status = http_get(f"{server.endpoint}/{ref}")[0]
                requests += 1
                if status != 200:
                    failures.append((ref, status))
    finally:
        stop.set()
        thread.join(timeout=30)
    assert not errors
    assert publishes[0] >= 10, "the publisher hardly ran; the test proved nothing"
    assert not failures


@pytest.mark.parametrize("inside", ["current/extra", "releases/{id}/more", "releases/new"])
def test_a_docroot_inside_a_published_docroot_is_refused(tmp_path, inside):
    """Publishing into another docroot's served releases would write into a tree being served."""
    a = make_tree(tmp_path / "a", 2)
    b = make_tree(tmp_path / "b", 2, revisions={1: 1})
    www = tmp_path / "www"
    publish(a.root, str(www))
    before = sorted(str(p.relative_to(www)) for p in www.rglob("*"))
    with pytest.raises(PublishError, match="inside the published releases"):
        publish(b.root, str(www / inside.format(id=a.build_id)))
    assert sorted(str(p.relative_to(www)) for p in www.rglob("*")) == before


def test_a_docroot_inside_the_tree_being_published_is_refused(tmp_path):
    make_tree(tmp_path / "a", 2)
    with pytest.raises(PublishError, match="inside the tree being published"):
        publish(tmp_path / "a", str(tmp_path / "a" / "www"))
    assert not (tmp_path / "a" / "www").exists()
