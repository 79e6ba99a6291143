"""Golden trees: every rendered text file, byte for byte.

Regenerate after an intended change with `BOOTGEN_UPDATE_GOLDEN=1 pytest tests/render`
and review the diff like code.
"""
import json
import os
import shutil
from pathlib import Path

import pytest

from bootgen.build import Paths, build

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
GOLDEN = HERE / "golden"
SITES = {"example": ROOT, "tftp-local": ROOT / "tests" / "sites" / "tftp-local"}


def _rendered(tree: Path) -> dict[str, bytes]:
    """Every file of the tree, manifest.json and SHA256SUMS included, except the boot loader
    binaries: those are Debian's bytes, so their digests (and the build id made from all
    digests) are replaced by placeholders in the index files."""
    manifest = json.loads((tree / "manifest.json").read_text())
    loaders = {f["path"] for f in manifest["files"] if f["target"] == "bootloader"}
    files = {f["path"]: (tree / f["path"]).read_bytes() for f in manifest["files"] if f["path"] not in loaders}
    files["manifest.json"] = _normalised_manifest(tree / "manifest.json", manifest, loaders)
    files["SHA256SUMS"] = b"".join(
        (b"<debian>" + line[64:] if line[66:].decode() in loaders else line) + b"\n"
        for line in (tree / "SHA256SUMS").read_bytes().splitlines())
    return files


def _normalised_manifest(path: Path, manifest: dict, loaders: set[str]) -> bytes:
    text = path.read_text().replace(manifest["build_id"], "<build id>")
    for entry in manifest["files"]:
        if entry["path"] in loaders:
            text = text.replace(entry["sha256"], "<debian>").replace(f'"size": {entry["size"]},', '"size": 0,')
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
