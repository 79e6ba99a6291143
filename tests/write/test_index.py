"""The tree's index on disk: a root (manifest.json), content-addressed pages and shards (index/).

An edit writes only the shards it touches; every other shard is the same inode
in every kept tree; a recycled tree keeps no shard its root does not name; a
damaged index is a clear problem, never a traceback (a build makes every file anew
past it, as past a file of the live tree changed by hand)."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import bootgen.plan as plan
from bootgen.build import build
from bootgen.incremental import BuildState
from bootgen.plan import IndexDamaged, Listing
from bootgen.publish.manifest import load_tree
from bootgen.write import KEPT_TREES


@pytest.fixture(autouse=True)
def small_shards(monkeypatch):
    """Shards of a few files each, so that the example's 80 files make about twenty, and pages
    of a few shards."""
    monkeypatch.setattr(plan, "CHUNK", 4)
    monkeypatch.setattr(plan, "CHUNK_SPREAD", 2)
    monkeypatch.setattr(plan, "PAGE", 4)


def _pages(tree: Path) -> list[str]:
    return [page["id"] for page in json.loads((tree / "manifest.json").read_bytes())["pages"]]


def _shard_refs(tree: Path) -> list[dict]:
    """The shards the root names through its pages, in path order."""
    return [shard for page in _pages(tree)
            for shard in json.loads((tree / "index" / f"{page}.page.json").read_bytes())["shards"]]


def _shards(tree: Path) -> dict[str, int]:
    """Shard id -> inode of the .json file, for every shard the root names."""
    return {s["id"]: (tree / "index" / f"{s['id']}.json").stat().st_ino for s in _shard_refs(tree)}


def _edit(example, round_: int) -> None:
    node = example.nodes / "node-2.yaml"
    text = node.read_text().split("kernel_args")[0]
    node.write_text(text + f"kernel_args: [round={round_}]\n")


def test_an_edit_writes_only_the_shards_it_touches_and_links_the_rest(example):
    first = build(example, fetch=False)
    before = _shards(first.write.tree)
    assert len(before) > 8
    _edit(example, 1)
    second = build(example, fetch=False)
    after = _shards(second.write.tree)
    new = {shard for shard in after if shard not in before}
    node_files = {f.path for f in _entries(second.write.tree) if f.node == "node-2"}
    assert 0 < len(new) <= len(node_files) + 2  # its files' shards, and a neighbour where a cut moved
    pages_before, pages_after = set(_pages(first.write.tree)), _pages(second.write.tree)
    assert len(pages_after) > 3 and 0 < len([p for p in pages_after if p not in pages_before]) <= len(new)
    for shard, inode in after.items():
        if shard in before:
            assert inode == before[shard], "an unchanged shard is a link to the live tree's, not a copy"
    old = {ino for ino, _ in _index_files(first.write.tree).values()}
    made = {ino: size for ino, size in _index_files(second.write.tree).values() if ino not in old}
    roots = [second.write.tree / "manifest.json", plan.private_dir(second.write.tree) / "manifest.json"]
    assert second.write.index_bytes == sum(made.values()) + sum(root.stat().st_size for root in roots)


def test_kept_trees_share_unchanged_shards_and_a_recycled_tree_holds_only_its_own(example):
    build(example, fetch=False)
    for round_ in range(KEPT_TREES + 3):  # enough builds that old trees are recycled as staging trees
        _edit(example, round_)
        result = build(example, fetch=False)
        assert result.write.changed
        trees = [p for p in (example.state / "builds").iterdir() if not p.name.startswith(".")]
        inodes: dict[str, set[int]] = {}
        for tree in trees:
            shards = _shards(tree)
            names = {f"{s}{suffix}" for s in shards for suffix in (".json", ".sha256")}
            names |= {f"{page}.page.json" for page in _pages(tree)}
            assert set(os.listdir(tree / "index")) == names, "a file the root does not name was left behind"
            for shard, inode in shards.items():
                inodes.setdefault(shard, set()).add(inode)
        assert all(len(found) == 1 for found in inodes.values()), "one shard, one inode in every kept tree"
    check = subprocess.run("cat index/*.sha256 | sha256sum --quiet -c", shell=True, cwd=example.out,
                           capture_output=True, text=True, timeout=60)
    assert check.returncode == 0, check.stdout + check.stderr


def test_a_live_shard_changed_by_hand_makes_the_build_start_afresh(example):
    build(example, fetch=False)
    live = example.out.resolve()
    touched = next(f.path for f in _entries(live) if f.node == "node-2")
    shard = _shard_holding(plan.listing_dir(live), touched)  # the full index, which the build reads
    data = shard.read_bytes()
    shard.unlink()  # its inode may be shared with a kept tree: never write in place
    shard.write_bytes(data.replace(b'"size": ', b'"size":  ', 1))
    with pytest.raises(IndexDamaged) as caught:
        Listing.read(live).lookup(touched)
    problem = caught.value.problems[0]
    assert problem.location.file == str(shard) and "the live tree's index is damaged" in problem.message
    _edit(example, 1)
    result = build(example, fetch=False)  # as for a file of the live tree changed by hand
    assert result.write.changed and result.rendered == 7
    load_tree(plan.listing_dir(result.write.tree))  # every shard of the new tree is what its name says


def test_a_root_naming_a_missing_shard_makes_the_next_build_start_afresh(example):
    build(example, fetch=False)
    listing = plan.listing_dir(example.out.resolve())  # the full index, which the build reads
    first = _shard_refs(listing)[0]["id"]
    (listing / "index" / f"{first}.json").unlink()
    _edit(example, 1)
    result = build(example, fetch=False)
    assert result.write.changed and result.rendered == 7  # the live listing cannot be read: all nodes
    _shards(example.out)  # the new tree holds every shard its root names


def test_a_fresh_process_rebuilds_past_a_damaged_shard_without_a_traceback(example):
    build(example, fetch=False)
    live = example.out.resolve()
    touched = next(f.path for f in _entries(live) if f.node == "node-2")
    shard = _shard_holding(plan.listing_dir(live), touched)
    shard.unlink()
    shard.write_bytes(b'{"files": []}\n')
    _edit(example, 1)
    done = subprocess.run([sys.executable, "-m", "bootgen", "build", "--offline"], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "(7 nodes rendered" in done.stdout and "Traceback" not in done.stderr


def test_a_listing_kept_in_memory_outlives_the_tree_its_shards_were_read_from(example):
    """As in watch: the live listing is read once, lazily; its shards stay readable after the
    tree they were read from is recycled by later builds."""
    build(example, fetch=False)
    state = BuildState.load_stamp(example.state)
    for round_ in range(KEPT_TREES + 2):  # the first tree is recycled meanwhile
        _edit(example, round_)
        assert build(example, fetch=False, state=state).rendered == 1
    node = example.nodes / "node-1.yaml"
    node.write_text(node.read_text() + "kernel_args: [late=1]\n")  # shards no edit touched so far
    result = build(example, fetch=False, state=state)
    assert result.write.changed and result.rendered == 1


def _index_files(tree: Path) -> dict[Path, tuple[int, int]]:
    """(inode, size) of each shard file of the tree and of its full index kept outside it."""
    found = {}
    for index in (tree / "index", plan.private_dir(tree) / "index"):  # the example has secret-bearing files
        for name in os.listdir(index):
            st = (index / name).stat()
            found[index / name] = (st.st_ino, st.st_size)
    return found


def _entries(tree: Path):
    return load_tree(tree).files


def _shard_holding(tree: Path, path: str) -> Path:
    shard = [s for s in _shard_refs(tree) if s["first"] <= path][-1]
    return tree / "index" / f"{shard['id']}.json"


def test_a_public_shard_changed_by_hand_is_written_anew_not_linked(example):
    build(example, fetch=False)
    live = example.out.resolve()
    shard = live / "index" / f"{_shard_refs(live)[0]['id']}.sha256"
    shard.unlink()
    shard.write_text("0" * 64 + "  boot.ipxe\n")
    _edit(example, 1)
    build(example, fetch=False)
    check = subprocess.run("cat index/*.sha256 | sha256sum --quiet -c", shell=True, cwd=example.out,
                           capture_output=True, text=True, timeout=60)
    assert check.returncode == 0, check.stdout + check.stderr


def test_a_root_naming_a_missing_page_makes_the_next_build_start_afresh(example):
    build(example, fetch=False)
    listing = plan.listing_dir(example.out.resolve())
    (listing / "index" / f"{_pages(listing)[0]}.page.json").unlink()
    _edit(example, 1)
    result = build(example, fetch=False)
    assert result.write.changed and result.rendered == 7  # the live listing cannot be read: all nodes
    load_tree(plan.listing_dir(result.write.tree))  # the new tree holds every page and shard its root names


def test_a_live_tree_of_index_format_2_is_listed_anew(example):
    """A tree written before pages: its root names shards, which this version does not read."""
    build(example, fetch=False)
    for listing in {example.out.resolve(), plan.listing_dir(example.out.resolve())}:
        root = json.loads((listing / "manifest.json").read_bytes())
        shards = _shard_refs(listing)
        old = {k: v for k, v in root.items() if k != "pages"} | {"format": 2, "shards": shards}
        (listing / "manifest.json").unlink()
        (listing / "manifest.json").write_text(json.dumps(old))
    assert Listing.read(example.out) is None
    _edit(example, 1)
    result = build(example, fetch=False)
    assert result.write.changed and result.rendered == 7
    assert json.loads((result.write.tree / "manifest.json").read_bytes())["format"] == 3
    load_tree(plan.listing_dir(result.write.tree))
