"""Shared helpers for the Butane/Ignition tests: layers from text, and ignition-validate."""
from __future__ import annotations

import shutil
import subprocess

import pytest

from bootgen.errors import RenderError
from bootgen.osconfig.butane import ButaneLayer, build_ignition, serialize_ignition
from bootgen.source import load_yaml_text


@pytest.fixture
def ed25519_key() -> str:
    """A well-formed ssh-ed25519 public key built from fixed bytes; no private key exists for it."""
    return "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIEl6E4+bBVjAGw0gD117cejmn42cizXUdSEJ19MCR9U6 test@bootgen"


@pytest.fixture
def layer():
    """layer(text, display, path=("ignition",)) -> ButaneLayer parsed with line marks."""

    def make(text: str, display: str = "nodes/node-1.yaml", path: tuple = ("ignition",)) -> ButaneLayer:
        doc = load_yaml_text(text, display)
        data = doc.data
        for part in path:
            data = data[part]
        return ButaneLayer(data, doc, path)

    return make


@pytest.fixture
def problems_of(tmp_path):
    """problems_of(layers, **kw) -> the Problems build_ignition raises (fails if it succeeds)."""

    def run(layers, **kw):
        kw.setdefault("files_dir", tmp_path)
        with pytest.raises(RenderError) as info:
            build_ignition(layers, **kw)
        return info.value.problems

    return run


@pytest.fixture
def assert_valid_ignition(tmp_path):
    """Run ignition-validate on a config; require exit 0 and no output at all (warnings count)."""
    binary = shutil.which("ignition-validate")
    if binary is None:
        pytest.fail("ignition-validate not found: install the Debian package 'ignition'")
    counter = iter(range(1_000_000))

    def check(config: dict) -> None:
        path = tmp_path / f"validate-{next(counter)}.ign"
        path.write_bytes(serialize_ignition(config))
        result = subprocess.run([binary, str(path)], capture_output=True, text=True, timeout=60)
        output = (result.stdout + result.stderr).strip()
        assert result.returncode == 0 and output == "", f"ignition-validate exit {result.returncode}:\n{output}"

    return check
