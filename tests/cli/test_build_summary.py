"""The build summary's counts add up and say what happened on disk.

files = written + linked + kept, where written is the number of files of the new tree with
an inode no earlier tree had (checked on disk here), across a build from scratch, builds
that link from the live tree and builds that recycle the oldest kept tree."""
from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

from click.testing import CliRunner

from bootgen.cli import main
from bootgen.plan import is_index_path  # the index is written with every tree, not counted among its files

SUMMARY = re.compile(r"^(\d+) files for (\d+) nodes -> build \w+ \((\d+) nodes rendered; (\d+) files written, "
                     r"(\d+) linked(?:, (\d+) already in place)?\) in [\d.]+s$")


def _inodes(root: Path) -> dict[str, int]:
    found = {}
    for directory, _, names in os.walk(root):
        for name in names:
            path = Path(directory, name)
            found[str(path.relative_to(root))] = path.stat().st_ino
    return found


def _pin_every_inode(state: Path, pins: Path) -> set[int]:
    """The inodes of every kept tree, each given one more link so its number cannot be reused
    by a file the next build creates (ext4 hands out freed numbers again at once)."""
    builds = state / "builds"
    seen: set[int] = set()
    for tree in builds.iterdir() if builds.is_dir() else ():
        for path, ino in _inodes(tree).items():
            if ino not in seen:
                seen.add(ino)
                os.link(tree / path, pins / str(ino))
    return seen


def _build_and_check(example, pins: Path) -> tuple[int, int, int]:
    pins.mkdir()
    before = _pin_every_inode(example.state, pins)
    result = CliRunner().invoke(main, ["build"])
    assert result.exit_code == 0, result.output
    match = SUMMARY.match(result.output.splitlines()[0])  # a second line may say how secrets are kept
    assert match, result.output
    files, nodes, rendered, written, linked, kept = (int(g or 0) for g in match.groups())
    tree = {path: ino for path, ino in _inodes(example.out.resolve()).items() if not is_index_path(path)}
    assert files == len(tree) and nodes == 7
    assert written + linked + kept == files, result.output
    assert written == sum(1 for ino in tree.values() if ino not in before), result.output
    shutil.rmtree(pins)
    return written, linked, kept


def test_counts_add_up_from_scratch_through_recycled_trees(example, tmp_path):
    node = example.nodes / "node-1.yaml"
    seen = [_build_and_check(example, tmp_path / "pins")]
    for last_octet in range(171, 176):  # one node edited: first linked from the live tree, then recycled trees
        old = "10.0.0.70/" if last_octet == 171 else f"10.0.0.{last_octet - 1}/"
        node.write_text(node.read_text().replace(old, f"10.0.0.{last_octet}/"))
        seen.append(_build_and_check(example, tmp_path / "pins"))
    site = example.site / "site.yaml"
    site.write_text(site.read_text().replace("console=tty0", "console=tty1"))  # every node again
    seen.append(_build_and_check(example, tmp_path / "pins"))
    site.write_text(site.read_text().replace("console=tty1", "console=tty0"))  # back to a kept tree
    seen.append(_build_and_check(example, tmp_path / "pins"))
    assert seen[-1] == (0, 0, 83)  # switched back: nothing written, everything already in place
    assert seen[0][1:] == (0, 0)  # from scratch: everything written
    assert any(linked and not kept for _, linked, kept in seen)  # a new tree linking from the live one
    assert any(kept for _, _, kept in seen)  # a recycled tree
