"""`bootgen audit` against built trees: the example passes (its one secret-bearing file is
fenced); a secret or token pasted in clear into a vars field, an Ignition file or a template
is found, named with its path and how it is reached, and fails the audit."""
from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from bootgen.build import build
from bootgen.cli import main

API_TOKEN = "9f3c1e7a-api-token-for-the-rack-controller"
GITHUB_TOKEN = "ghp_" + "Zq8Lw3NvR2tX9yB4cD6eF1gH5jK7mP0sT2uV"


@pytest.fixture
def audited(example, example_secrets, tmp_path):
    """The example with a second secret, `api_token`, in a secrets file of its own."""
    secrets = tmp_path.parent / f"{tmp_path.name}-secrets.yaml"
    text = example_secrets.read_text().replace("secrets:\n", f'secrets:\n  api_token: "{API_TOKEN}"\n')
    secrets.write_text(text)
    secrets.chmod(0o600)
    return example, secrets


def _audit(secrets: Path, *args: str):
    return CliRunner().invoke(main, ["audit", *args, "--secrets", str(secrets)])


def test_the_example_passes_with_its_secret_bearing_file_fenced(audited):
    paths, secrets = audited
    build(paths, fetch=False)
    result = _audit(secrets)
    assert result.exit_code == 0, result.output
    hit = next(line for line in result.output.splitlines() if "/user-data:" in line)
    assert re.match(r"configs/[0-9a-f]{32}/[0-9a-f]{16}/user-data: a password hash, the value of secret "
                    r"ubuntu_password_hash \(not in any public index; fenced: nginx serves it only to 192\.168\.1\.4\)",
                    hit), hit
    assert "0 readable by anyone" in result.output


def _fails_with(secrets: Path, path: str, what: str) -> str:
    result = _audit(secrets)
    assert result.exit_code == 1, result.output
    line = next((line for line in result.output.splitlines() if line.startswith(path + ":")), None)
    assert line is not None, result.output
    assert what in line and "fenced" not in line, line
    assert API_TOKEN not in result.output and GITHUB_TOKEN not in result.output  # described, never shown
    return line


def test_a_secret_pasted_into_a_vars_field(audited):
    paths, secrets = audited
    node = paths.nodes / "node-1.yaml"
    node.write_text(node.read_text() + f'vars:\n  api_token: "{API_TOKEN}"\n'
                    'kernel_args: ["rack.token={{ vars.api_token }}"]\n')
    build(paths, fetch=False)
    line = _fails_with(secrets, "pxelinux.cfg/0A000046", "the value of secret api_token")
    assert "listed in manifest.json" in line


def test_a_token_pasted_into_an_ignition_file(audited):
    paths, secrets = audited
    butane = paths.site / "butane" / "motd.bu"
    butane.write_text(butane.read_text().replace("Installed by bootgen.", f"Installed by bootgen. {GITHUB_TOKEN}"))
    build(paths, fetch=False)
    result = _audit(secrets)
    assert result.exit_code == 1
    hits = [line for line in result.output.splitlines() if "GitHub token" in line]
    assert hits and all(line.startswith("configs/fcos-1/") and "listed in manifest.json" in line for line in hits)


def test_a_secret_pasted_into_a_template(audited):
    paths, secrets = audited
    templates = paths.site / "templates"
    templates.mkdir(exist_ok=True)
    builtin = Path(__file__).resolve().parents[2] / "bootgen" / "templates" / "boot.ipxe.j2"
    shutil.copy(builtin, templates / "boot.ipxe.j2")
    with (templates / "boot.ipxe.j2").open("a") as out:
        out.write(f"# controller token {API_TOKEN}\n")
    build(paths, fetch=False)
    _fails_with(secrets, "boot.ipxe", "the value of secret api_token")


def test_a_secret_from_a_reference_is_tracked_but_the_same_value_in_clear_is_not(audited):
    """A reference keeps a value out of the public listing; the same value typed in clear
    elsewhere is found by audit, not hidden by it."""
    paths, secrets = audited
    node = paths.nodes / "node-2.yaml"
    node.write_text(node.read_text() + 'vars:\n  api_token: {secret: api_token}\n'
                    'kernel_args: ["rack.token={{ vars.api_token }}"]\n')
    import os

    os.environ["BOOTGEN_SECRETS"], saved = str(secrets), os.environ["BOOTGEN_SECRETS"]
    try:
        build(paths, fetch=False)
    finally:
        os.environ["BOOTGEN_SECRETS"] = saved
    result = _audit(secrets)
    fixed_names = [line for line in result.output.splitlines() if "api_token" in line]
    assert fixed_names and all("fenced: nginx serves it only to 10.0.0.71" in line for line in fixed_names), \
        result.output
    assert result.exit_code == 0, result.output
