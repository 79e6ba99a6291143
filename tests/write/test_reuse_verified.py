"""What a build reuses from the live tree is checked first: a file changed there by hand
(its size differs from the listing, or it was written after the tree's manifest) is made
again, or the build stops with the previous tree untouched, instead of being carried into
a new tree that would fail its own SHA256SUMS. Files named by a source (images, boot
loaders) are copied and hashed, never hard-linked."""
from __future__ import annotations

import hashlib
import os
import subprocess
import time
from pathlib import Path

import pytest

from bootgen.build import build
from bootgen.errors import OutputError
from bootgen.plan import Listing, listing_lines
from bootgen.write import copy_verified, listed_sizes, make_spare, manifest_sizes, tree_sizes, write_listing

pytestmark = pytest.mark.timeout(120)

NODE2_FILE = "pxelinux.cfg/01-00-1e-06-45-0a-02"


def tree_checks(tree: Path) -> None:
    done = subprocess.run("cat index/*.sha256 | sha256sum --quiet -c", shell=True, cwd=tree, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr


def edit_node(example, name: str, marker: str) -> None:
    node = example.nodes / name
    text = node.read_text().split("kernel_args: [mark")[0]
    node.write_text(text + f"kernel_args: [mark={marker}]\n")


def alter_in_place(path: Path, *, same_size: bool = True, keep_mtime: bool = False) -> None:
    """Someone edits a live file (every tree sharing its inode sees the edit)."""
    time.sleep(0.02)  # a hand edit comes after the build, not within its last clock tick
    before = path.stat()
    data = path.read_bytes()
    new = data.replace(b"LABEL", b"LABEX") if same_size else data + b"# hand edit\n"
    assert new != data
    with open(path, "r+b") as handle:
        handle.write(new)
    if keep_mtime:
        os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))


def live_state(example) -> tuple:
    tree = example.out.resolve()
    return os.readlink(example.out), {str(p.relative_to(tree)): p.read_bytes() for p in tree.rglob("*") if p.is_file()}


@pytest.mark.parametrize("how", ["same size, new mtime", "new size, mtime set back"])
def test_a_node_file_changed_in_the_live_tree_is_rendered_again(example, how):
    first = build(example, fetch=False)
    original = (example.out / NODE2_FILE).read_bytes()
    alter_in_place(example.out / NODE2_FILE, same_size=how.startswith("same"), keep_mtime=how.endswith("back"))
    edit_node(example, "node-1.yaml", "1")  # a new tree, made by linking unchanged files from the live one

    result = build(example, fetch=False)

    assert result.write.changed and result.write.build_id != first.write.build_id
    assert result.rendered == 2  # node-1 (edited) and node-2 (its live file was not as written)
    assert (example.out / NODE2_FILE).read_bytes() == original
    tree_checks(example.out.resolve())


def test_a_shared_file_changed_in_the_live_tree_is_made_again(example):
    build(example, fetch=False)
    alter_in_place(example.out / "pxelinux.cfg" / "default")
    edit_node(example, "node-1.yaml", "1")
    build(example, fetch=False)
    tree_checks(example.out.resolve())


def test_a_recycled_tree_never_takes_a_changed_live_file(example):
    for i in range(4):  # from here on, the oldest kept tree is recycled as the staging tree
        edit_node(example, "node-2.yaml" if i % 2 else "ubuntu-4f62c7.yaml", str(i))
        build(example, fetch=False)
    alter_in_place(example.out / NODE2_FILE)  # node-2 differs between the oldest tree and the live one
    edit_node(example, "ubuntu-4f62c7.yaml", "9")
    before = live_state(example)

    build(example, fetch=False)  # the recycled tree is given up: every file is made anew
    assert live_state(example) != before
    tree_checks(example.out.resolve())


def test_no_background_copy_is_made_of_a_changed_live_tree(example):
    first = build(example, fetch=False)
    alter_in_place(example.out / NODE2_FILE)
    assert make_spare(example.state, first.write.build_id) is False
    assert not list((example.state / "builds").glob(".spare-*"))


def test_images_and_boot_loaders_are_copies_not_links(example):
    build(example, fetch=False)
    tree = example.out.resolve()
    loaders = [tree / "pxelinux.0", tree / "ipxe.efi", tree / "grubnetx64.efi"]
    for path in loaders:
        assert path.stat().st_nlink == 1, path  # its own inode: not /usr/lib's, nor shared with anything


def test_copy_verified_refuses_bytes_that_are_not_the_verified_ones(tmp_path):
    source = tmp_path / "cache-file"
    data = os.urandom(3 * (1 << 20) + 5)
    source.write_bytes(data)
    digest = hashlib.sha256(data).hexdigest()

    copy_verified(source, str(tmp_path / "good"), digest, len(data))
    assert (tmp_path / "good").read_bytes() == data
    assert not os.path.samefile(source, tmp_path / "good")

    source.write_bytes(os.urandom(len(data)))  # changed since it was verified, same size
    with pytest.raises(OutputError, match="changed since it was verified"):
        copy_verified(source, str(tmp_path / "bad"), digest, len(data))
    assert not (tmp_path / "bad").exists()
    with pytest.raises(OutputError, match="changed since it was verified"):
        copy_verified(source, str(tmp_path / "short"), digest, len(data) + 1)
    assert not (tmp_path / "short").exists()


def test_sizes_are_read_from_manifest_entries_whatever_the_path(tmp_path):
    paths = {"a": 1, 'we"ird\\path': 22, "ünïcode/f": 333, "x/y z": 4444, 'n/"size": 5, "target": "x"': 6}
    lines = {p: listing_lines(p, "0" * 64, size, False, None, "t") for p, size in paths.items()}
    listing = Listing.of_lines(lines)
    assert manifest_sizes(listing.entries_bytes()) == paths
    assert listed_sizes(listing, ["a", "x/y z", "missing"]) == {"a": 1, "x/y z": 4444}
    write_listing(tmp_path, listing, listing.build_id(), set(), tmp_path)
    assert tree_sizes(tmp_path) == paths
