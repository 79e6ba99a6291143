"""The seed documents' Ignition configs, compared byte for byte with golden files.

Set BOOTGEN_UPDATE_GOLDEN=1 to rewrite the golden files after a deliberate change.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from bootgen.osconfig.butane import ButaneLayer, build_ignition, ignition_sha512, serialize_ignition
from bootgen.source import load_yaml_file, load_yaml_text

FIXTURES = Path(__file__).parent / "fixtures"
GOLDEN = Path(__file__).parent / "golden"

SEEDS = [
    # (golden name, fixture, field path of the Butane mapping inside it)
    ("seed000-install", "seed000-install.bu", ()),
    ("seed000-boot", "seed000-boot.bu", ()),
    ("seed004-node", "seed004-node.yaml", ("ignition",)),
]


def _layer(fixture: str, path: tuple) -> ButaneLayer:
    doc = load_yaml_file(FIXTURES / fixture, f"fixtures/{fixture}")
    data = doc.data
    for part in path:
        data = data[part]
    return ButaneLayer(data, doc, path)


def _compare_golden(name: str, produced: bytes) -> None:
    golden = GOLDEN / f"{name}.ign"
    if os.environ.get("BOOTGEN_UPDATE_GOLDEN") == "1":
        golden.write_bytes(produced)
    assert golden.exists(), f"{golden} missing; run with BOOTGEN_UPDATE_GOLDEN=1 to create it"
    assert produced == golden.read_bytes(), f"{name}: output differs from {golden}"


@pytest.mark.parametrize("name,fixture,path", SEEDS, ids=[s[0] for s in SEEDS])
def test_seed_matches_golden_and_validates(name, fixture, path, tmp_path, assert_valid_ignition):
    config = build_ignition([_layer(fixture, path)], files_dir=tmp_path)
    _compare_golden(name, serialize_ignition(config))
    assert_valid_ignition(config)


def test_seed000_install_content(tmp_path):
    """The parts of seed 000 that make the install work, checked by meaning rather than bytes."""
    config = build_ignition([_layer("seed000-install.bu", ())], files_dir=tmp_path)
    unit = config["systemd"]["units"][0]
    assert unit["name"] == "installer.service" and unit["enabled"] is True
    assert ('ExecStart=/usr/bin/sh -c "flatcar-install -d /dev/sda -i /opt/ignition.json '
            '&& udevadm settle && systemctl reboot"') in unit["contents"]
    (opt,) = config["storage"]["files"]
    assert opt == {"path": "/opt/ignition.json", "mode": 0o777,
                   "contents": {"source": "http://10.0.0.5:8080/node-1-ignite-boot.ign"}}
    (user,) = config["passwd"]["users"]
    assert user["name"] == "core" and user["sshAuthorizedKeys"][0].startswith("ssh-rsa AAAAB3NzaC1yc2E")


def test_seed000_boot_hostname(tmp_path):
    config = build_ignition([_layer("seed000-boot.bu", ())], files_dir=tmp_path)
    assert config["storage"]["files"] == [
        {"path": "/etc/hostname", "mode": 0o644, "contents": {"source": "data:,node-1", "compression": ""}}]


def test_seed000_decimal_mode_is_refused_with_leading_zero_hint(problems_of):
    """The tutorial wrote `mode: 777`, which YAML reads as decimal 777 (octal 1411)."""
    text = (FIXTURES / "seed000-install.bu").read_text().replace("mode: 0777", "mode: 777")
    doc = load_yaml_text(text, "seed000-install.bu")
    (problem,) = problems_of([ButaneLayer(doc.data, doc, ())])
    assert problem.message == "mode 777 is decimal (octal 1411), which is not a sensible permission"
    assert problem.hint == "YAML reads 777 as a decimal number; remember the leading zero: 0777"
    assert (problem.location.file, problem.location.line, problem.location.column) == ("seed000-install.bu", 31, 13)
    assert problem.path == "$.storage.files[0].mode"


def test_seed000_truncated_tutorial_key_is_refused(problems_of):
    """The tutorial's key ends in '...': it would lock the user out, so it is refused."""
    text = (FIXTURES / "seed000-boot.bu").read_text()
    text = text.replace(text.split("- ssh-rsa ")[1].split("\n")[0], "AAAAB3NzaC1yc2EAAAADAQABAAABAQDGdByTgSVHq...")
    doc = load_yaml_text(text, "boot.bu")
    (problem,) = problems_of([ButaneLayer(doc.data, doc, ())])
    assert problem.message == "the ssh-rsa key data is not valid base64"
    assert (problem.location.line, problem.location.column) == (8, 11)


def test_same_input_same_bytes(tmp_path):
    first = serialize_ignition(build_ignition([_layer("seed000-install.bu", ())], files_dir=tmp_path))
    second = serialize_ignition(build_ignition([_layer("seed000-install.bu", ())], files_dir=tmp_path))
    assert first == second


def test_ignition_sha512_hashes_the_serialised_bytes(tmp_path):
    import hashlib

    config = build_ignition([_layer("seed004-node.yaml", ("ignition",))], files_dir=tmp_path)
    data = serialize_ignition(config)
    assert data.endswith(b"\n") and json.loads(data) == config
    assert ignition_sha512(config) == "sha512-" + hashlib.sha512(data).hexdigest()
