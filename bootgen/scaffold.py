"""`bootgen init`: a commented example site to start from."""
from __future__ import annotations

from importlib import resources
from pathlib import Path

from .errors import Location, OutputError, Problem


def scaffold(directory: Path) -> list[Path]:
    """Copy the example site/ and nodes/ into `directory`; never overwrite a file."""
    root = resources.files("bootgen").joinpath("scaffold")
    files = list(_walk(root, Path()))
    clashes = [directory / rel for rel, _ in files if (directory / rel).exists()]
    if clashes:
        raise OutputError([Problem(Location(str(p)), "already exists; bootgen init never overwrites a file")
                           for p in clashes])
    for rel, source in files:
        target = directory / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(source.read_bytes())
    return [directory / rel for rel, _ in files]


def _walk(node, rel: Path):
    for child in sorted(node.iterdir(), key=lambda c: c.name):
        if child.is_dir():
            yield from _walk(child, rel / child.name)
        elif not child.name.endswith(".pyc"):
            yield rel / child.name, child
