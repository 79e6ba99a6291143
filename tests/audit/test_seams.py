"""Secrets where features meet: a value YAML would fold, a template that transforms a secret,
audit of an environment's tree, and publish destinations that only look like paths."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
from click.testing import CliRunner

from bootgen.build import build
from bootgen.cli import main
from bootgen.errors import BootgenError, PublishError
from bootgen.publish import publish
from bootgen.publish.manifest import load_tree

# Long, with a space: PyYAML's emitter folds such a value across two lines at its default width.
LONG_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIP3xq9sWd0mUe7cF2hJ4kL6nR8tV1yX3zB5dG7jH9lQ operator@laptop"


@pytest.fixture
def secrets_with_key(example, example_secrets, tmp_path):
    """The example's secrets plus `key`, in a file of their own (BOOTGEN_SECRETS for the test)."""
    path = tmp_path.parent / f"{tmp_path.name}-secrets.yaml"
    path.write_text(example_secrets.read_text().replace("secrets:\n", f'secrets:\n  key: "{LONG_KEY}"\n'))
    path.chmod(0o600)
    os.environ["BOOTGEN_SECRETS"] = str(path)
    yield path
    os.environ["BOOTGEN_SECRETS"] = str(example_secrets)


def _password_hash(secrets_file: Path) -> str:
    line = next(line for line in secrets_file.read_text().splitlines() if "ubuntu_password_hash" in line)
    return line.split(":", 1)[1].strip().strip('"')


def test_a_value_yaml_would_fold_is_still_found_and_fenced(example, secrets_with_key):
    node = example.nodes / "coreos-f786.yaml"  # a CoreOS cloud-config node, fetched by MAC name
    node.write_text(node.read_text() + "ssh_authorized_keys:\n  - {secret: key}\n")
    tree = build(example, fetch=False).write.tree
    public = {entry.path for entry in load_tree(tree).files}
    carriers = [p for p in tree.rglob("*") if p.is_file() and LONG_KEY.encode() in p.read_bytes()]
    assert carriers  # the value is written whole, on one line
    for path in tree.rglob("*"):
        if path.is_file() and b"operator@laptop" in path.read_bytes():
            rel = str(path.relative_to(tree))
            assert rel not in public and not path.stat().st_mode & 0o004, rel


def test_a_data_template_may_place_a_secret_but_not_transform_it(example, secrets_with_key):
    password_hash = _password_hash(secrets_with_key)
    node = example.nodes / "node-1.yaml"
    base = node.read_text() + "vars: {tok: {secret: ubuntu_password_hash}}\n"
    for transformed in ('{{ vars.tok | upper }}', '{{ vars.tok.split("$")[3] }}', '{{ vars.tok[1:] }}'):
        node.write_text(base + f"kernel_args: ['x={transformed}']\n")
        with pytest.raises(BootgenError) as caught:
            build(example, fetch=False)
        (problem,) = caught.value.problems
        assert problem.path == "$.kernel_args[0]" and "not change or cut it" in problem.message
        assert password_hash not in problem.format()
    node.write_text(base + "kernel_args: ['x={{ vars.tok }}']\n")  # placed as it is: found and fenced
    tree = build(example, fetch=False).write.tree
    public = {entry.path for entry in load_tree(tree).files}
    assert not any(password_hash.encode() in (tree / path).read_bytes() for path in public)


def test_audit_with_an_environment_reads_that_environments_tree(example, example_secrets, tmp_path):
    site = example.site / "site.yaml"
    site.write_text(site.read_text() + "environments:\n  lab:\n    base_url: http://10.0.0.9:8080/\n")
    assert CliRunner().invoke(main, ["build", "--env", "lab", "--offline"]).exit_code == 0
    result = CliRunner().invoke(main, ["audit", "--env", "lab"])
    assert result.exit_code == 0, result.output
    assert "ubuntu_password_hash" in result.output  # found in build-lab, fenced
    missing = CliRunner().invoke(main, ["audit", str(tmp_path / "nowhere")])
    assert missing.exit_code == 1 and "no built tree or docroot here" in missing.output


@pytest.mark.parametrize("destination", ["s3:/bucket", "S3:bucket/prefix", "gs://bucket"])
def test_a_destination_that_looks_like_a_url_is_refused(example, tmp_path, destination, monkeypatch):
    tree = build(example, fetch=False).write.tree
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    with pytest.raises(PublishError, match="unsupported destination scheme"):
        publish(tree, destination)
    assert not any(elsewhere.iterdir())  # no directory named like a URL
