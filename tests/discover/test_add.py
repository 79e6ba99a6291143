"""`bootgen add`: the written node file round-trips through check and build; clashes and bad values are refused."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

import bootgen.enroll
from bootgen.cli import main


def _run(*args):
    return CliRunner().invoke(main, list(args))


def _node_files(example) -> dict[str, str]:
    """Every entry of nodes/, hidden ones too (a staging directory left behind would show)."""
    return {p.name: p.read_text() if p.is_file() else "<dir>" for p in sorted(example.nodes.iterdir())}


def test_written_file_passes_check_and_builds_to_a_local_boot(example):
    result = _run("add", "52:54:00:ad:d0:01", "--profile", "flatcar-install")
    assert result.exit_code == 0, result.output
    assert result.output == "wrote nodes/node-add001.yaml (boot: local); next: bootgen build\n"
    assert (example.nodes / "node-add001.yaml").read_text() == (
        "# Written by `bootgen add`. boot: local boots the local disk; set boot: install to install.\n"
        "profile: flatcar-install\nboot: local\ninterfaces:\n  - mac: 52:54:00:ad:d0:01\n")
    assert _run("check").exit_code == 0
    assert _run("build").exit_code == 0
    # site.yaml's defaults say boot: install; the new node still boots its disk
    assert "LOCALBOOT 0" in (example.out / "pxelinux.cfg" / "01-52-54-00-ad-d0-01").read_text()
    explained = json.loads(_run("explain", "52-54-00-AD-D0-01", "--format", "json").output)
    assert (explained["node"], explained["boot"], explained["profile"]) == ("node-add001", "local", "flatcar-install")


def test_static_address_and_every_option(example):
    result = _run("add", "AA-BB-CC-00-00-02", "--name", "rack-2", "--profile", "fcos-install", "--boot",
                  "install", "--address", "192.168.1.40/24", "--gateway", "192.168.1.1", "--dns", "192.168.1.1",
                  "--dns", "9.9.9.9", "--format", "json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.output) == {"node": "rack-2", "file": "nodes/rack-2.yaml", "mac": "aa:bb:cc:00:00:02",
                                         "boot": "install"}
    listed = json.loads(_run("list", "--format", "json").output)["machines"]
    (rack,) = [m for m in listed if m["name"] == "rack-2"]
    assert (rack["macs"], rack["addresses"], rack["boot"]) == (["aa:bb:cc:00:00:02"], ["192.168.1.40/24"], "install")
    assert _run("build").exit_code == 0
    assert (example.out / "grub" / "grub.cfg-C0A80128").exists()  # the hex-IP name of the static address
    assert "coreos.inst.install_dev" in (example.out / "ipxe" / "aa-bb-cc-00-00-02.ipxe").read_text()


def test_what_only_rendering_finds_is_refused_too(example):
    """The loader accepts an Ubuntu node without a password hash; `bootgen check` does not, so neither does add."""
    before = _node_files(example)
    result = _run("add", "52:54:00:ad:d0:0a", "--profile", "ubuntu-autoinstall", "--boot", "install")
    assert result.exit_code == 1
    assert result.output.startswith("nodes/node-add00a.yaml:2:1: error at $.cloud_init.password_hash: "
                                    "Ubuntu autoinstall needs cloud_init.password_hash\n"), result.output
    assert _node_files(example) == before


def test_the_seed_003_device_id(example):
    """Seed 003's probe printed a PC as pxelinux's file name; `add` takes that spelling too."""
    (example.nodes / "ubuntu-4f62c7.yaml").unlink()
    result = _run("add", "01-00-0c-29-4f-62-c7", "--name", "ubuntu-4f62c7", "--profile", "flatcar-install",
                  "--address", "192.168.1.4/24", "--gateway", "192.168.1.1", "--dns", "192.168.1.1")
    assert result.exit_code == 0, result.output
    assert "  - mac: 00:0c:29:4f:62:c7\n    address: 192.168.1.4/24\n" in (example.nodes / "ubuntu-4f62c7.yaml").read_text()
    assert _run("check").exit_code == 0


@pytest.mark.parametrize("args, message", [
    (["00-1E-06-45-0A-01", "--name", "other"],
     "nodes/other.yaml: error at $.interfaces[0].mac: MAC 00:1e:06:45:0a:01 is already used by node 'node-1' "
     "(nodes/node-1.yaml:5:10)"),
    (["001e.0645.0aff", "--address", "10.0.0.70/24"],
     "nodes/node-450aff.yaml: error at $.interfaces[0].address: address 10.0.0.70 is already used by node "
     "'node-1' (nodes/node-1.yaml:6:14)"),
    (["52:54:00:ad:d0:03", "--name", "node-2"],
     "nodes/node-2.yaml: error at --name: node 'node-2' already exists"),
])
def test_clashes_are_refused_and_named(example, args, message):
    before = _node_files(example)
    result = _run("add", *args)
    assert result.exit_code == 1
    assert result.output.startswith(message + "\n"), result.output
    assert _node_files(example) == before


def test_a_yml_file_of_the_same_name_is_a_clash(example):
    (example.nodes / "spare.yml").write_text("interfaces: [{mac: 52:54:00:ad:d0:09}]\n")
    result = _run("add", "52:54:00:ad:d0:04", "--name", "spare")
    assert result.exit_code == 1 and "nodes/spare.yml: error at --name: node 'spare' already exists" in result.output


def test_a_file_that_appears_while_adding_is_never_replaced(example, monkeypatch):
    check = bootgen.enroll._check_with_site

    def meanwhile(site_inputs, reader, nodes_dir, staged, target):
        node = check(site_inputs, reader, nodes_dir, staged, target)
        target.write_text("# someone else's\n")
        return node

    monkeypatch.setattr(bootgen.enroll, "_check_with_site", meanwhile)
    result = _run("add", "52:54:00:ad:d0:05")
    assert result.exit_code == 1 and "node 'node-add005' already exists" in result.output
    assert (example.nodes / "node-add005.yaml").read_text() == "# someone else's\n"
    assert not [p for p in example.nodes.iterdir() if p.name.startswith(".")]


def test_bad_values_all_at_once(example):
    before = _node_files(example)
    result = _run("add", "52:54:00:zz:00:01", "--name", "Rack_2", "--profile", "../x", "--address", "10.0.0.300/24",
                  "--gateway", "10.0.0.1.1", "--dns", "dns.example")
    assert result.exit_code == 1
    assert result.output.splitlines() == [
        "bootgen add: error at --address: '10.0.0.300/24' is not an IPv4 address with a prefix length",
        "  hint: e.g. 192.168.1.4/24",
        "bootgen add: error at --dns: 'dns.example' is not an IPv4 address",
        "bootgen add: error at --gateway: '10.0.0.1.1' is not an IPv4 address",
        "bootgen add: error at --name: 'Rack_2' is not a valid node name",
        "  hint: use lowercase letters, digits and '-': it becomes a file name, part of URLs and the host name",
        "bootgen add: error at --profile: '../x' is not a profile name",
        "  hint: profiles are site/profiles/<name>.yaml",
        "bootgen add: error at MACHINE: '52:54:00:zz:00:01' is not a MAC address",
        "  hint: write aa:bb:cc:dd:ee:ff, AA-BB-CC-DD-EE-FF, aabb.ccdd.eeff or pxelinux's 01-aa-bb-cc-dd-ee-ff",
        "6 problems found"]
    assert _node_files(example) == before


@pytest.mark.parametrize("args, message", [
    (["--address", "10.0.0.90"], "error at --address: '10.0.0.90' has no prefix length"),
    (["--address", "10.0.0.0/24"], "error at --address: 10.0.0.0/24 is the network address of 10.0.0.0/24"),
    (["--address", "10.0.0.255/24"], "error at --address: 10.0.0.255/24 is the broadcast address of 10.0.0.0/24"),
    (["--address", "10.0.0.90/24", "--gateway", "10.0.1.1"], "error at --gateway: gateway 10.0.1.1 is outside"),
    (["--gateway", "10.0.0.1"], "error at --gateway: a gateway or DNS server needs a static address"),
    (["--dns", "10.0.0.1"], "error at --dns: a gateway or DNS server needs a static address"),
    (["--profile", "flatcar"], "nodes/node-add006.yaml:2:10: error at $.profile: unknown profile 'flatcar'"),
])
def test_values_checked_for_what_they_are(example, args, message):
    before = _node_files(example)
    result = _run("add", "52:54:00:ad:d0:06", *args)
    assert result.exit_code == 1 and message in result.output, result.output
    assert _node_files(example) == before


def test_boot_is_one_of_three(example):
    result = _run("add", "52:54:00:ad:d0:07", "--boot", "wipe")
    assert result.exit_code == 2 and "'wipe' is not one of 'local', 'install', 'live'" in result.output


def test_a_pi_serial_is_refused_with_the_reason(example):
    result = _run("add", "7092246e")
    assert result.exit_code == 1
    assert ("error at MACHINE: '7092246e' looks like a Raspberry Pi serial number; node files name machines by "
            "MAC only") in result.output


def test_no_nodes_directory(example):
    result = _run("add", "52:54:00:ad:d0:08", "--nodes", "elsewhere")
    assert result.exit_code == 1 and "elsewhere: error: nodes directory not found" in result.output
    assert not Path("elsewhere").exists()


def test_other_broken_node_files_do_not_block_an_add(example):
    (example.nodes / "broken.yaml").write_text("interfaces: [{mac: nope}]\n")
    result = _run("add", "52:54:00:ad:d0:09")
    assert result.exit_code == 0, result.output
    assert (example.nodes / "node-add009.yaml").exists()
