"""A build that fails must cost no rollback point.

A build that will rewrite many nodes takes the oldest kept tree as its
staging tree before rendering; if rendering then fails, that staging tree is
thrown away. Only the tree kept beyond the releases may be taken that way."""
from __future__ import annotations

import pytest

from bootgen import build as build_module
from bootgen import write as write_module
from bootgen.build import build
from bootgen.errors import InputError


def _edit(example, i: int) -> None:
    (example.nodes / "node-2.yaml").write_text(
        f"hostname: node-2\ninterfaces:\n  - mac: 00:1e:06:45:0a:02\nkernel_args: [round={i}]\n")


def _trees(example) -> set[str]:
    return {p.name for p in (example.state / "builds").iterdir() if not p.name.startswith(".")}


def test_a_failed_build_that_recycled_a_tree_keeps_every_release(example, monkeypatch):
    for i in range(5):
        _edit(example, i)
        build(example, fetch=False)
    before = _trees(example)
    assert len(before) == write_module.KEPT_TREES
    from bootgen.releases import list_releases

    releases = [r.build_id for r in list_releases(example)]
    assert len(releases) == write_module.KEEP_BUILDS
    recycled = []
    real_recycle = write_module.TreeWriter._recycle
    monkeypatch.setattr(write_module.TreeWriter, "_recycle",
                        lambda self, *args: recycled.append(1) or real_recycle(self, *args))
    monkeypatch.setattr(build_module, "PARALLEL_THRESHOLD", 0)  # every node renders into the staging tree
    (example.nodes / "node-2.yaml").write_text(
        "hostname: node-2\ninterfaces:\n  - mac: not-a-mac\nkernel_args: [round=9]\n")
    with pytest.raises(InputError):
        build(example, fetch=False, jobs=1)
    assert recycled, "the failing build did not reach the staging tree; the test proves nothing"
    after = _trees(example)
    assert set(releases) <= after, "a failed build consumed a release"
    assert [r.build_id for r in list_releases(example)] == releases
    _edit(example, 7)  # and the next good build still works, recycling again
    build(example, fetch=False, jobs=1)
    assert len(list_releases(example)) == write_module.KEEP_BUILDS
