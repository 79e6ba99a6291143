"""Golden trees: every rendered text file, byte for byte.

Regenerate after an intended change with `BOOTGEN_UPDATE_GOLDEN=1 pytest tests/render`
and review the diff like code.
"""
import os
import shutil
from pathlib import Path

import pytest

from bootgen.build import Paths, build
from bootgen.publish.manifest import load_tree

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
GOLDEN = HERE / "golden"
SITES = {"example": ROOT, "tftp-local": ROOT / "tests" / "sites" / "tftp-local",
         "ipxe-only": ROOT / "tests" / "sites" / "ipxe-only"}


def _rendered(tree: Path) -> dict[str, bytes]:
    """Every file of the tree, its index included, except the boot loader binaries: those are
    Debian's bytes, so their digests (and the ids made from them: the build id, the shards'
    names, the pages' names) are replaced by placeholders in the index files; shard i is
    `index/shard-i.*`, page i `index/page-i.page.json`."""
    manifest = load_tree(tree)
    loaders = {f.path: f for f in manifest.files if f.target == "bootloader"}
    files = {f.path: (tree / f.path).read_bytes() for f in manifest.files if f.path not in loaders}
    names = {manifest.build_id: "<build id>"}
    names.update((shard.id, f"shard-{i}") for i, shard in enumerate(manifest.root.shards))
    names.update((page.id, f"page-{i}") for i, page in enumerate(manifest.root.pages))
    for path in manifest.index_files():
        normal = path
        for real, placeholder in names.items():
            normal = normal.replace(real, placeholder)
        files[normal] = _normalised((tree / path).read_text(), names, loaders.values())
    return files


def _normalised(text: str, names: dict[str, str], loaders) -> bytes:
    for real, placeholder in names.items():
        text = text.replace(real, placeholder)
    for entry in loaders:
        text = text.replace(entry.sha256, "<debian>").replace(f'"size": {entry.size},', '"size": 0,')
    return text.encode()


@pytest.mark.parametrize("name", sorted(SITES))
def test_tree_matches_golden(name, tmp_path, monkeypatch):
    source = SITES[name]
    shutil.copytree(source / "site", tmp_path / "site")
    shutil.copytree(source / "nodes", tmp_path / "nodes")
    monkeypatch.chdir(tmp_path)
    result = build(Paths(Path("site"), Path("nodes"), Path("build")), fetch=False)
    actual = _rendered(result.write.tree)
    golden = GOLDEN / name
    if os.environ.get("BOOTGEN_UPDATE_GOLDEN"):
        shutil.rmtree(golden, ignore_errors=True)
        for path, data in actual.items():
            (golden / path).parent.mkdir(parents=True, exist_ok=True)
            (golden / path).write_bytes(data)
    expected = {str(p.relative_to(golden)): p.read_bytes() for p in sorted(golden.rglob("*")) if p.is_file()}
    assert sorted(actual) == sorted(expected)
    for path in expected:
        assert actual[path] == expected[path], f"{path} differs from golden"
