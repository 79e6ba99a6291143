"""Shared fixtures: copies of the example site, and a way to build one."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from bootgen.build import Paths
from bootgen.passwords import hash_password

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE_PASSWORD_HASH = hash_password("ubuntu", salt="r5BaaYkys3XBVgNs")  # the example's {secret: ubuntu_password_hash}
EXAMPLE_PATH_KEY = "example-path-key"
# No build a test starts leaves a resident builder behind (tests/cli/test_resident.py turns it on).
os.environ["BOOTGEN_RESIDENT"] = "0"


def write_secrets_file(path: Path, secrets: dict[str, str], path_key: str = EXAMPLE_PATH_KEY) -> Path:
    """A secrets file readable by its owner only."""
    import json

    path.parent.mkdir(parents=True, exist_ok=True)
    lines = ["secrets:"] + [f"  {name}: {json.dumps(value)}" for name, value in secrets.items()]
    lines.append(f"path_key: {json.dumps(path_key)}")
    path.write_text("\n".join(lines) + "\n")
    path.chmod(0o600)
    return path


@pytest.fixture(scope="session", autouse=True)
def example_secrets(tmp_path_factory):
    """The example site's secrets, outside every copy of the repository, for the whole session
    (build processes the tests start inherit BOOTGEN_SECRETS)."""
    path = write_secrets_file(tmp_path_factory.mktemp("secrets") / "secrets.yaml",
                              {"ubuntu_password_hash": EXAMPLE_PASSWORD_HASH})
    saved = os.environ.get("BOOTGEN_SECRETS")
    os.environ["BOOTGEN_SECRETS"] = str(path)
    yield path
    if saved is None:
        os.environ.pop("BOOTGEN_SECRETS", None)
    else:
        os.environ["BOOTGEN_SECRETS"] = saved


@pytest.fixture(autouse=True)
def _fresh_secrets():
    """Each test starts with no secret value known (a build process starts so too)."""
    from bootgen.secrets import reset

    reset()
    yield
    reset()


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
