"""What a cold build of a large fleet does to hold less memory (small render tasks, a listing
held compressed, lines forgotten once written) changes nothing in the tree it writes."""
from __future__ import annotations

import shutil

import pytest

import bootgen.build as build_module
from bootgen.build import Paths, build
from bootgen.plan import Listing


def _fleet(paths: Paths, count: int) -> None:
    for i in range(count):  # past PARALLEL_THRESHOLD, so the nodes render in forked workers
        mac = f"52:54:02:00:{i // 256:02x}:{i % 256:02x}"
        extra = f"  - mac: 52:54:03:00:{i // 256:02x}:{i % 256:02x}\n" if i % 3 == 0 else ""
        paths.nodes.joinpath(f"f{i:05d}.yaml").write_text(f"interfaces:\n  - mac: {mac}\n{extra}")


@pytest.mark.timeout(300)
def test_a_large_fleet_build_writes_the_same_tree_as_a_small_one(example, tree_files, monkeypatch):
    _fleet(example, 450)
    build(example, fetch=False, jobs=2)
    plain = tree_files(example.out.resolve())
    listing = Listing.read(example.out.resolve())
    shutil.rmtree(".bootgen")
    example.out.unlink()
    monkeypatch.setattr(build_module, "PACKED_LISTING_NODES", 1)
    monkeypatch.setattr(build_module, "TASK_NODES", 7)  # 65 tasks over two workers, a few queued at a time
    packed_runs = []
    of_lines = Listing.of_lines.__func__

    def spy(cls, lines, **kwargs):
        made = of_lines(cls, lines, **kwargs)
        packed_runs.append(all(chunk.packed for chunk in made.chunks))
        return made

    monkeypatch.setattr(Listing, "of_lines", classmethod(spy))
    result = build(example, fetch=False, jobs=2)
    assert len([p for p in packed_runs if p]) >= 60  # one packed run per task
    assert tree_files(example.out.resolve()) == plain
    assert Listing.read(example.out.resolve()).build_id() == listing.build_id() == result.write.build_id
    example.nodes.joinpath("f00042.yaml").write_text("interfaces:\n  - mac: 52:54:04:00:00:2a\n")
    build(example, fetch=False, jobs=2)  # an edit after it reads the forgotten lines back from the tree
    edited = Listing.read(example.out.resolve())
    assert edited.lookup("ipxe/52-54-04-00-00-2a.ipxe") is not None
    assert edited.lookup("ipxe/52-54-02-00-00-2a.ipxe") is None
