"""The listing (manifest entries and SHA256SUMS lines in chunks, one shard of the tree's
index each, named by pages of shard references): patching a few files, or reading a tree's
index back, gives exactly what building it anew gives, chunk for chunk and page for page."""
import hashlib
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import bootgen.plan as plan
from bootgen.plan import IndexDamaged, Listing, listing_lines
from bootgen.write import write_listing

NAMES = st.text(alphabet="abcz019-._/é", min_size=1, max_size=12).filter(lambda p: not p.startswith("/"))


def _lines(path: str, version: int) -> tuple[bytes, bytes]:
    digest = hashlib.sha256(f"{path}{version}".encode()).hexdigest()
    return listing_lines(path, digest, version, False, f"node-{version % 3}" if version % 4 else None, "ipxe")


def _files(paths, version=0) -> dict:
    return {path: _lines(path, version) for path in paths}


def _same(listing: Listing, expected: dict) -> None:
    clean = Listing.of_lines(expected)
    assert listing.checksums_bytes() == clean.checksums_bytes()
    assert listing.root_bytes("ab" * 32) == clean.root_bytes("ab" * 32)  # the same shards
    assert listing.entries_bytes() == clean.entries_bytes()
    assert listing.paths() == sorted(expected)
    assert len(listing) == len(expected)
    assert listing.build_id() == clean.build_id()
    assert [page.page_bytes() for page in listing.pages()] == [page.page_bytes() for page in clean.pages()]
    assert listing.build_id() == hashlib.sha256(
        b"bootgen index 3\n" + b"".join(f"{c.id}\n".encode() for c in clean.chunks)).hexdigest()
    entries = json.loads(b"[" + listing.entries_bytes() + b"]")
    assert [f["path"] for f in entries] == sorted(expected)


@pytest.fixture(autouse=True)
def small_chunks(monkeypatch):
    """Chunks of a few files, pages of a few chunks, and low caps, so that changes cross chunk
    and page boundaries and caps."""
    monkeypatch.setattr(plan, "CHUNK", 4)
    monkeypatch.setattr(plan, "MAX_CHUNK_FACTOR", 2)
    monkeypatch.setattr(plan, "PAGE", 4)
    monkeypatch.setattr(plan, "MAX_PAGE_FACTOR", 2)


@settings(max_examples=80, deadline=None)
@given(st.sets(NAMES, max_size=60), st.sets(NAMES, max_size=15), st.sets(NAMES, max_size=15),
       st.integers(min_value=1, max_value=6))
def test_patched_equals_built_anew(before, changed, removed, chunk):
    plan.CHUNK = chunk
    listing = Listing.of_lines(_files(before))
    upserts = _files(changed, version=1)
    patched = listing.patched(upserts, removed - changed)
    expected = {**{p: v for p, v in _files(before).items() if p not in removed - changed}, **upserts}
    _same(patched, expected)
    assert set(listing.differing(upserts)) == changed
    assert listing.differing(_files(before)) == {}
    assert listing.holding(changed | removed) == (changed | removed) & before


def test_chunks_are_cut_by_path_so_an_edit_touches_only_its_chunks():
    """Chunks of 128 files: a floor of 112 and a 1-in-16 chance (a cut moved by an edit moves the
    next one too as often as a path between the two floors ends a chunk: the chance sets that)."""
    plan.CHUNK, plan.MAX_CHUNK_FACTOR = 128, 8
    paths = [f"dir{i % 7}/file-{i:05d}" for i in range(24000)]
    listing = Listing.of_lines(_files(paths))
    assert 24000 / 128 / 1.5 < len(listing.chunks) < 24000 / 128 * 1.5
    assert min(chunk.count for chunk in listing.chunks[:-1]) >= 112
    assert max(chunk.count for chunk in listing.chunks) <= 128 * 8
    edited = listing.patched(_files(["dir3/file-01234"], version=1) | _files(["dir5/new"]), ["dir1/file-00001"])
    old_ids = {chunk.id for chunk in listing.chunks}
    new = [chunk for chunk in edited.chunks if chunk.id not in old_ids]
    assert 1 <= len(new) <= 6  # the chunks of three paths, and a neighbour where a cut moved
    assert len(edited.chunks) - len(new) >= len(listing.chunks) - 6


@settings(max_examples=40, deadline=None)
@given(st.sets(NAMES, max_size=60), st.sets(NAMES, max_size=8), st.integers(min_value=1, max_value=7))
def test_a_tree_index_reads_back_as_written(tmp_path_factory, paths, private, chunk):
    plan.CHUNK = chunk
    written = Listing.of_lines(_files(paths | private))
    tree = tmp_path_factory.mktemp("state") / "builds" / written.build_id()  # private/ is named so too
    tree.mkdir(parents=True)
    write_listing(tree, written, written.build_id(), private - paths, tree.parent.parent)
    read = Listing.read(tree)
    assert read is not None
    _same(read, _files(paths | private))
    assert read.build_id() == written.build_id()
    for path in paths:
        assert read.lookup(path) == _lines(path, 0)
    shards = b"".join((tree / "index" / f"{shard['id']}.sha256").read_bytes() for shard in _shard_refs(tree))
    assert shards == Listing.of_lines(_files(paths | private)).without(private - paths).checksums_bytes()


def _shard_refs(tree) -> list[dict]:
    """The shards a tree's index names, read through its pages."""
    root = json.loads((tree / "manifest.json").read_bytes())
    return [shard for page in root["pages"]
            for shard in json.loads((tree / "index" / f"{page['id']}.page.json").read_bytes())["shards"]]


def test_reading_a_tree_reads_only_the_root_and_the_shards_asked_about(tmp_path, monkeypatch):
    plan.CHUNK = 16
    listing = Listing.of_lines(_files([f"f{i:04d}" for i in range(2000)]))
    write_listing(tmp_path, listing, listing.build_id(), set(), tmp_path)
    read = Listing.read(tmp_path)
    assert all(chunk._entries is None and chunk._sums is None for chunk in read.chunks)
    assert read.build_id() == listing.build_id() and len(read) == 2000  # from the root alone
    assert read.differing(_files(["f0007"], version=1)) == _files(["f0007"], version=1)
    assert sum(chunk._entries is not None for chunk in read.chunks) == 1
    assert read.holding(["f1999", "nope"]) == {"f1999"}
    assert sum(chunk._sums is not None for chunk in read.chunks) == 2


def test_a_damaged_index_is_not_trusted(tmp_path):
    plan.CHUNK = 64
    listing = Listing.of_lines(_files([f"f{i}" for i in range(2000)]))
    write_listing(tmp_path, listing, listing.build_id(), set(), tmp_path)
    root = (tmp_path / "manifest.json").read_bytes()
    first, second = _shard_refs(tmp_path)[:2]
    shard = tmp_path / "index" / f"{second['id']}.json"
    data = shard.read_bytes()
    shard.unlink()
    assert Listing.read(tmp_path) is None  # the root names a missing shard
    shard.write_bytes(data.replace(b'"size": 0', b'"size": 1', 1))
    damaged = Listing.read(tmp_path)  # the root alone does not show it ...
    with pytest.raises(IndexDamaged) as caught:  # ... the shard does, when it is read
        damaged.lookup(second["first"])
    assert "do not hash to its name" in caught.value.problems[0].message
    assert str(shard) == caught.value.problems[0].location.file
    (tmp_path / "index" / f"{first['id']}.sha256").write_bytes(b"")
    with pytest.raises(IndexDamaged):
        Listing.read(tmp_path).holding([first["first"]])
    for case in (b"{}", b"not json", root.replace(b'"format": 3', b'"format": 2'),
                 root.replace(b'"file_count": 2000', b'"file_count": 1999')):
        (tmp_path / "manifest.json").write_bytes(case)
        assert Listing.read(tmp_path) is None, case


@settings(max_examples=40, deadline=None)
@given(st.lists(st.sets(NAMES, max_size=25), max_size=5), st.integers(min_value=1, max_value=5))
def test_merged_runs_equal_one_listing_and_report_shared_paths(runs, chunk):
    plan.CHUNK = chunk
    listing, clashes = Listing.merged([Listing.of_lines(_files(run)) for run in runs])
    everything = set().union(*runs)
    _same(listing, _files(everything))
    assert sorted(json.loads(a)["path"] for a, _ in clashes) == sorted(
        p for p in everything for _ in range(sum(p in run for run in runs) - 1))


@settings(max_examples=40, deadline=None)
@given(st.lists(st.sets(NAMES, max_size=25), min_size=1, max_size=5), st.sets(NAMES, max_size=8),
       st.integers(min_value=1, max_value=5))
def test_a_packed_listing_holds_fewer_bytes_and_gives_the_same_shards(runs, changed, chunk):
    plan.CHUNK = chunk
    packed, _ = Listing.merged([Listing.of_lines(_files(run), packed=True) for run in runs])
    everything = set().union(*runs)
    assert all(c.packed for c in packed.chunks)
    _same(packed, _files(everything))
    for path in everything:
        assert packed.lookup(path) == _lines(path, 0)
    upserts = _files(changed, version=1)
    assert set(packed.differing(upserts)) == changed
    _same(packed.patched(upserts, ()), {**_files(everything), **upserts})


def test_packing_shrinks_a_large_listing_to_a_third():
    plan.CHUNK = 512
    files = _files([f"nodes/n{i:06d}/ignition.json" for i in range(20_000)])
    plain, packed = Listing.of_lines(files), Listing.of_lines(files, packed=True)
    held = lambda listing: sum(len(c._entries) + len(c._sums) for c in listing.chunks)  # noqa: E731
    assert held(packed) * 2.5 < held(plain)
    assert packed.build_id() == plain.build_id()


def test_a_first_build_forgets_its_lines_once_written_and_reads_them_back(tmp_path):
    plan.CHUNK = 16
    paths = [f"f{i:04d}" for i in range(500)]
    listing = Listing.of_lines(_files(paths), packed=True)
    tree = tmp_path / "builds" / listing.build_id()
    tree.mkdir(parents=True)
    write_listing(tree, listing, listing.build_id(), {"f0003"}, tmp_path)  # no live tree
    assert all(c._entries is None and c._sums is None for c in listing.chunks)
    listing.kept_in(tmp_path / "private" / listing.build_id())  # as TreeWriter.commit does
    _same(listing, _files(paths))
    assert listing.lookup("f0003") == _lines("f0003", 0)


def test_a_build_with_a_live_tree_keeps_its_lines(tmp_path):
    """Its listing shares chunks with the live tree's listing, which must stay as it was if
    this build fails."""
    plan.CHUNK = 16
    listing = Listing.of_lines(_files([f"f{i:04d}" for i in range(200)]))
    live = tmp_path / "live"
    live.mkdir()
    tree = tmp_path / "new"
    tree.mkdir()
    write_listing(tree, listing, listing.build_id(), set(), tmp_path, live=live)
    assert all(c._entries is not None and c.source is None for c in listing.chunks)


def test_a_damaged_or_missing_page_makes_the_index_unusable(tmp_path):
    plan.CHUNK, plan.PAGE = 16, 4
    listing = Listing.of_lines(_files([f"f{i:04d}" for i in range(2000)]))
    write_listing(tmp_path, listing, listing.build_id(), set(), tmp_path)
    pages = json.loads((tmp_path / "manifest.json").read_bytes())["pages"]
    assert len(pages) > 3 and sum(p["shards"] for p in pages) == len(listing.chunks)
    page = tmp_path / "index" / f"{pages[1]['id']}.page.json"
    data = page.read_bytes()
    page.write_bytes(data.replace(b'"count": ', b'"count": 1', 1))  # no longer its name's bytes
    assert Listing.read(tmp_path) is None
    page.unlink()
    assert Listing.read(tmp_path) is None
    page.write_bytes(data)
    assert Listing.read(tmp_path).build_id() == listing.build_id()


def test_pages_are_cut_by_first_paths_so_an_edit_rewrites_only_its_page():
    plan.CHUNK, plan.MAX_CHUNK_FACTOR, plan.PAGE, plan.MAX_PAGE_FACTOR = 64, 8, 8, 4
    paths = [f"dir{i % 7}/file-{i:05d}" for i in range(24000)]
    listing = Listing.of_lines(_files(paths))
    pages = listing.pages()
    assert len(listing.chunks) / 8 / 3 < len(pages) < len(listing.chunks) / 8 * 3
    assert max(page.shards for page in pages) <= 8 * 4
    edited = listing.patched(_files(["dir3/file-01234"], version=1), [])
    old_pages, old_shards = {p.id for p in pages}, {c.id for c in listing.chunks}
    assert len([p for p in edited.pages() if p.id not in old_pages]) == 1
    assert len([c for c in edited.chunks if c.id not in old_shards]) == 1
    assert len(edited.pages()) == len(pages)


def _fleet(nodes: int) -> Listing:
    """A fleet's listing as the benchmark's sites have it: four files a node, in four directories."""
    lines = {}
    for n in range(nodes):
        for path in (f"configs/n{n:06d}/{n:016x}/ignition.json", f"ipxe/n{n:06d}.ipxe",
                     f"pxelinux.cfg/01-52-54-{n:06x}", f"nodes/n{n:06d}/meta.json"):
            lines[path] = listing_lines(path, hashlib.sha256(path.encode()).hexdigest(), 300, False, f"n{n:06d}",
                                        "ipxe")
    return Listing.of_lines(lines, consume=True)


def _edit_cost(listing: Listing, path: str) -> tuple[int, int]:
    """The index files a one-file edit writes (what its publish uploads of the index) and their bytes."""
    edited = listing.patched({path: listing_lines(path, "0" * 64, 301, False, None, "ipxe")}, ())
    shards, pages = {c.id for c in listing.chunks}, {p.id for p in listing.pages()}
    new_shards = [c for c in edited.chunks if c.id not in shards]
    new_pages = [p for p in edited.pages() if p.id not in pages]
    size = sum(len(c.shard_bytes()) + len(c.sums) for c in new_shards) + sum(len(p.page_bytes()) for p in new_pages)
    return 2 * len(new_shards) + len(new_pages) + 1, size + len(edited.root_bytes(edited.build_id()))


def test_a_one_node_edit_costs_the_same_index_files_and_bytes_at_3000_and_30000_nodes():
    """With the build's own sizes (shards of about 512 files, pages of about 32 shards): the shard an
    edited file falls in, with its .sha256, its page and the root, whatever the fleet's size. Bytes
    are the median over every file of the fleet taken as the edited one: a shard's size is set by
    where its cuts fall, so five files edited in turn may differ by 15 % between two fleets."""
    plan.CHUNK, plan.MAX_CHUNK_FACTOR, plan.PAGE, plan.MAX_PAGE_FACTOR = 512, 8, 32, 4
    costs = {}
    for nodes in (3000, 30000):
        listing = _fleet(nodes)
        per_file = sorted(len(c.shard_bytes()) + len(c.sums) + len(page.page_bytes())
                          for page in listing.pages() for c in page.chunks for _ in range(c.count))
        root = len(listing.root_bytes(listing.build_id()))
        edits = [_edit_cost(listing, f"ipxe/n{int(nodes * f):06d}.ipxe") for f in (0.1, 0.3, 0.5, 0.7, 0.9)]
        costs[nodes] = (per_file[len(per_file) // 2] + root, {files for files, _ in edits}, len(listing.pages()))
    (small, small_files, small_pages), (large, large_files, large_pages) = costs.values()
    assert small_files == large_files == {4}, costs  # one shard's .json and .sha256, its page, the root
    assert large_pages > small_pages and abs(large - small) <= small / 10, costs
