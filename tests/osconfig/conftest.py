"""Shared helpers for the Butane/Ignition tests: layers from text, and Ignition's validators."""
from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

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


# Upstream Butane and Ignition's validation, built from source (see ../shared/tools/README.md);
# absent in a user's checkout, where the tests that need them skip.
TOOLS = Path(__file__).resolve().parents[2].parent / "shared" / "tools"
BUTANE = TOOLS / "butane"
IGNVAL = TOOLS / "ignval"


def ignval_output(path: Path) -> tuple[int, str]:
    """(exit code, output) of Ignition v2.20's validation; exit 0 with no output means valid, no warnings."""
    done = subprocess.run([str(IGNVAL), str(path)], capture_output=True, text=True, timeout=60)
    return done.returncode, (done.stdout + done.stderr).strip()


@pytest.fixture
def assert_valid_ignition(tmp_path):
    """Validate a config with Ignition v2.20 (ignval) and Debian's ignition-validate (2.14, specs up to
    3.3.0); require exit 0 and no output at all (warnings count). At least one must be present."""
    debian = shutil.which("ignition-validate")
    if debian is None and not IGNVAL.exists():
        pytest.fail(f"no Ignition validator: install the Debian package 'ignition' or provide {IGNVAL}")
    counter = iter(range(1_000_000))

    def check(config: dict) -> None:
        path = tmp_path / f"validate-{next(counter)}.ign"
        path.write_bytes(serialize_ignition(config))
        if IGNVAL.exists():
            code, output = ignval_output(path)
            assert code == 0 and output == "", f"ignval exit {code}:\n{output}"
        if debian and json.loads(path.read_text())["ignition"]["version"] <= "3.3.0":
            result = subprocess.run([debian, str(path)], capture_output=True, text=True, timeout=60)
            output = (result.stdout + result.stderr).strip()
            assert result.returncode == 0 and output == "", f"ignition-validate exit {result.returncode}:\n{output}"

    return check
