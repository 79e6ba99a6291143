"""`bootgen explain` and `bootgen list` on the example site, against golden output.

Regenerate after an intended change with `BOOTGEN_UPDATE_GOLDEN=1 pytest tests/cli` and review the diff."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from bootgen.cli import main

GOLDEN = Path(__file__).resolve().parent / "golden"

CASES = {
    "list.txt": ["list"],
    "list-local.json": ["list", "--boot", "local", "--format", "json"],
    "list-flatcar.txt": ["list", "--profile", "flatcar-install"],
    "explain-node-1.txt": ["explain", "node-1"],
    "explain-ubuntu.json": ["explain", "ubuntu-4f62c7", "--format", "json"],
    "explain-fcos-1.txt": ["explain", "fcos-1"],
}


def _run(*args):
    return CliRunner().invoke(main, list(args))


@pytest.mark.parametrize("name", sorted(CASES))
def test_output_matches_golden(example, name):
    result = _run(*CASES[name])
    assert result.exit_code == 0, result.output
    golden = GOLDEN / name
    if os.environ.get("BOOTGEN_UPDATE_GOLDEN"):
        golden.write_text(result.stdout)
    assert result.stdout == golden.read_text()
    if name.endswith(".json"):
        json.loads(result.stdout)


@pytest.mark.parametrize("spelling", ["node-1", "00:1e:06:45:0a:01", "00-1E-06-45-0A-01", "001e.0645.0a01",
                                      "10.0.0.70"])
def test_explain_finds_a_machine_by_name_mac_or_address(example, spelling):
    result = _run("explain", spelling, "--format", "json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["node"] == "node-1"


def test_explain_unknown_machine_is_a_user_error(example):
    result = _run("explain", "52:54:00:00:00:99")
    assert result.exit_code == 1
    assert "no node named '52:54:00:00:00:99'" in result.stderr


def test_explain_names_the_layer_a_setting_came_from_and_what_it_overrides(example):
    site = example.site / "site.yaml"
    data = yaml.safe_load(site.read_text())
    data["defaults"]["install"] = {"disk": "/dev/vda"}
    site.write_text(yaml.safe_dump(data, sort_keys=False))
    result = _run("explain", "node-2")
    assert result.exit_code == 0, result.output
    line = next(line for line in result.output.splitlines() if line.strip().startswith("install.disk"))
    assert line.strip().startswith("install.disk = /dev/sda  (site/profiles/flatcar-install.yaml:8:9, overrides ")
    assert "site/site.yaml:" in line and "<built-in default>" in line


def test_explain_in_an_ipxe_only_site_shows_the_ipxe_entry_that_bios_and_uefi_both_reach(example):
    site = example.site / "site.yaml"
    site.write_text("boot_configs: [ipxe]\n" + site.read_text())
    result = _run("explain", "node-1", "--format", "json")
    assert result.exit_code == 0, result.output
    firmware = json.loads(result.stdout)["firmware"]
    assert [(row["loader"], row["firmware"], row["first_loader"]) for row in firmware] == [
        ("ipxe", "BIOS", "undionly.kpxe"), ("ipxe", "UEFI", "ipxe.efi")]
