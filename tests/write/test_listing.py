"""The listing (manifest entries and SHA256SUMS lines in chunks): patching a few
files, or reading a tree's listing back, gives exactly what building it anew gives."""
import hashlib
import json

from hypothesis import given, settings
from hypothesis import strategies as st

import bootgen.plan as plan
from bootgen.plan import Listing, listing_lines

NAMES = st.text(alphabet="abcz019-._/é", min_size=1, max_size=12).filter(lambda p: not p.startswith("/"))


def _lines(path: str, version: int) -> tuple[bytes, bytes]:
    digest = hashlib.sha256(f"{path}{version}".encode()).hexdigest()
    return listing_lines(path, digest, version, False, f"node-{version % 3}" if version % 4 else None, "ipxe")


def _files(paths, version=0) -> dict:
    return {path: _lines(path, version) for path in paths}


def _same(listing: Listing, expected: dict) -> None:
    clean = Listing.of_lines(expected)
    assert listing.checksums_bytes() == clean.checksums_bytes()
    assert listing.manifest_bytes("x") == clean.manifest_bytes("x")
    assert listing.paths() == sorted(expected)
    assert len(listing) == len(expected)
    manifest = json.loads(listing.manifest_bytes("x"))
    assert [f["path"] for f in manifest["files"]] == sorted(expected)


@settings(max_examples=60, deadline=None)
@given(st.sets(NAMES, max_size=40), st.sets(NAMES, max_size=15), st.sets(NAMES, max_size=15),
       st.integers(min_value=1, max_value=6))
def test_patched_equals_built_anew(before, changed, removed, chunk):
    old_chunk, plan.CHUNK = plan.CHUNK, chunk  # small chunks: changes cross chunk boundaries
    try:
        listing = Listing.of_lines(_files(before))
        upserts = _files(changed, version=1)
        patched = listing.patched(upserts, removed - changed)
        expected = {**{p: v for p, v in _files(before).items() if p not in removed - changed}, **upserts}
        _same(patched, expected)
        assert set(listing.differing(upserts)) == changed
        assert listing.differing(_files(before)) == {}
        assert listing.holding(changed | removed) == (changed | removed) & before
    finally:
        plan.CHUNK = old_chunk


@settings(max_examples=40, deadline=None)
@given(st.sets(NAMES, max_size=60), st.integers(min_value=1, max_value=7))
def test_a_tree_listing_reads_back_as_written(tmp_path_factory, paths, chunk):
    old_chunk, plan.CHUNK = plan.CHUNK, chunk
    try:
        tree = tmp_path_factory.mktemp("tree")
        written = Listing.of_lines(_files(paths))
        (tree / "manifest.json").write_bytes(written.manifest_bytes(written.build_id()))
        (tree / "SHA256SUMS").write_bytes(written.checksums_bytes())
        read = Listing.read(tree)
        assert read is not None
        _same(read, _files(paths))
        assert read.build_id() == hashlib.sha256((tree / "SHA256SUMS").read_bytes()).hexdigest()
        for path in paths:
            assert read.lookup(path) == _lines(path, 0)
    finally:
        plan.CHUNK = old_chunk


def test_a_damaged_listing_is_not_trusted(tmp_path):
    listing = Listing.of_lines(_files([f"f{i}" for i in range(2000)]))
    manifest, sums = listing.manifest_bytes(listing.build_id()), listing.checksums_bytes()
    entry = listing.lookup("f1500")[0]
    damaged = {
        "an entry missing": (manifest.replace(entry + b",\n    ", b""), sums),
        "a checksum changed": (manifest, sums.replace(sums[:64], b"0" * 64, 1)),
        "not a manifest": (b"{}", sums),
    }
    for case, (manifest_bytes, sums_bytes) in damaged.items():
        (tmp_path / "manifest.json").write_bytes(manifest_bytes)
        (tmp_path / "SHA256SUMS").write_bytes(sums_bytes)
        assert Listing.read(tmp_path) is None, case


def test_written_in_pieces_equals_joined(tmp_path, monkeypatch):
    import bootgen.write as write

    parts = [bytes([i % 251]) * (i % 7) for i in range(3000)]  # more pieces than one writev takes
    monkeypatch.setattr(write, "IOV_MAX", 100)
    write.write_parts(tmp_path / "f", parts)
    assert (tmp_path / "f").read_bytes() == b"".join(parts)
    listing = Listing.of_lines(_files([f"p{i}" for i in range(1500)]))
    write.write_parts(tmp_path / "m", listing.manifest_parts("x"))
    assert (tmp_path / "m").read_bytes() == listing.manifest_bytes("x")


@settings(max_examples=40, deadline=None)
@given(st.lists(st.sets(NAMES, max_size=25), max_size=5), st.integers(min_value=1, max_value=5))
def test_merged_runs_equal_one_listing_and_report_shared_paths(runs, chunk):
    old_chunk, plan.CHUNK = plan.CHUNK, chunk
    try:
        listing, clashes = Listing.merged([Listing.of_lines(_files(run)) for run in runs])
        everything = set().union(*runs)
        _same(listing, _files(everything))
        assert sorted(json.loads(a)["path"] for a, _ in clashes) == sorted(
            p for p in everything for _ in range(sum(p in run for run in runs) - 1))
    finally:
        plan.CHUNK = old_chunk
