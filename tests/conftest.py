"""Shared fixtures: copies of the example site, and a way to build one."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from bootgen.build import Paths

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def example(tmp_path, monkeypatch) -> Paths:
    """A private copy of the repo's example site/ and nodes/, with cwd set to it."""
    shutil.copytree(ROOT / "site", tmp_path / "site")
    shutil.copytree(ROOT / "nodes", tmp_path / "nodes")
    monkeypatch.chdir(tmp_path)
    return Paths(Path("site"), Path("nodes"), Path("build"))


def _tree_files(tree: Path) -> dict[str, bytes]:
    return {str(p.relative_to(tree)): p.read_bytes() for p in sorted(tree.rglob("*")) if p.is_file()}


@pytest.fixture
def tree_files():
    """A function: every file under a tree, by relative path."""
    return _tree_files
