"""Input that used to be accepted and must be refused: a trailing newline in a name
(Python's `$` matches before it), a subnet's network or broadcast address as a
machine's address, and two files for one node."""
from __future__ import annotations

import json
import shutil
from importlib import resources
from pathlib import Path

import pytest

from bootgen.build import build, plan_build
from bootgen.errors import InputError
from bootgen.naming import is_dns_label, node_file_problems, node_name_of, normalize_mac
from bootgen.schema import host_address_problem, python_pattern


def _problems(example) -> list[str]:
    with pytest.raises(InputError) as err:
        plan_build(example, fetch=False)
    return [p.format().split("\n")[0] for p in err.value.problems]


# --- a trailing newline ---------------------------------------------------------------


def test_names_with_a_trailing_newline_are_not_names():
    assert is_dns_label("web") and not is_dns_label("web\n")
    assert normalize_mac("52:54:00:aa:00:01") == "52:54:00:aa:00:01"
    assert normalize_mac("52:54:00:aa:00:01\n") is None
    assert normalize_mac("5254.00aa.0001\n") is None


@pytest.mark.parametrize("pattern,good,bad", [
    ("^[A-Za-z0-9_.:-]{1,15}$", "eth0", "eth0\n"),
    ("^/dev/[A-Za-z0-9._:/-]+$", "/dev/sda", "/dev/sda\n"),
    ("^a\\$$", "a$", "a$\n"),
    ("^[$]+$", "$$", "$$\n"),
])
def test_schema_patterns_mean_what_they_mean_in_json_schema(pattern, good, bad):
    assert python_pattern(pattern).search(good)
    assert not python_pattern(pattern).search(bad)


def _patterns(node):
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "pattern" and isinstance(value, str):
                yield value
            else:
                yield from _patterns(value)
    elif isinstance(node, list):
        for item in node:
            yield from _patterns(item)


def test_no_schema_pattern_accepts_a_trailing_newline():
    schemas = resources.files("bootgen").joinpath("schemas")
    patterns = [p for f in schemas.iterdir() if f.name.endswith(".json") for p in _patterns(json.loads(f.read_text()))]
    anchored = [p for p in patterns if p.endswith("$")]
    assert len(anchored) >= 8
    for pattern in anchored:
        assert python_pattern(pattern).pattern.endswith("\\Z"), pattern


def test_site_values_with_a_trailing_newline_are_refused(example):
    site = example.site / "site.yaml"
    text = site.read_text()
    text = text.replace("  uefi_loader: ipxe", '  interface: "eth0\\n"\n  uefi_loader: ipxe')
    text = text.replace("  http_port: 8080", '  http_port: 8080\n  server_name: "boot.example.com\\n"')
    site.write_text(text)
    lines = text.splitlines()
    interface = next(i for i, line in enumerate(lines, 1) if line.startswith("  interface:"))
    server_name = next(i for i, line in enumerate(lines, 1) if line.startswith("  server_name:"))
    assert _problems(example) == [
        f"site/site.yaml:{interface}:14: error at $.dhcp.interface: 'eth0\\n' is not a network interface name "
        "(1 to 15 letters, digits, '.', '_' or '-')",
        f"site/site.yaml:{server_name}:16: error at $.server.server_name: 'boot.example.com\\n' is not a list of "
        "nginx server names (host names such as boot.example.com or *.example.com, separated by spaces, or _)",
    ]


def test_a_node_file_name_with_a_trailing_newline_is_refused(example):
    (example.nodes / "web\n.yaml").write_text("interfaces:\n  - mac: 52:54:00:aa:00:70\n")
    with pytest.raises(InputError) as err:
        plan_build(example, fetch=False)
    (problem,) = err.value.problems
    assert problem.location.file == "nodes/web\n.yaml"
    assert problem.message.endswith("is not a valid node name")


# --- addresses --------------------------------------------------------------------------


@pytest.mark.parametrize("address,expected", [
    ("10.0.0.0/24", "'10.0.0.0/24' is the network address of 10.0.0.0/24, not a host address"),
    ("10.0.0.255/24", "'10.0.0.255/24' is the broadcast address of 10.0.0.0/24, not a host address"),
    ("192.168.7.3/30", "'192.168.7.3/30' is the broadcast address of 192.168.7.0/30, not a host address"),
    ("0.0.0.0/8", "'0.0.0.0/8' is the unspecified address, not one a machine can be given"),
    ("127.0.0.1/8", "'127.0.0.1/8' is a loopback address, not one a machine can be given"),
    ("239.1.1.1/24", "'239.1.1.1/24' is a multicast address, not one a machine can be given"),
    ("255.255.255.255/32", "'255.255.255.255/32' is a reserved address, not one a machine can be given"),
])
def test_addresses_no_machine_can_have(address, expected):
    assert host_address_problem(address)[0] == expected


@pytest.mark.parametrize("address", ["10.0.0.1/24", "10.0.0.254/24", "10.0.0.0/31", "10.0.0.1/31", "10.0.0.0/32",
                                     "10.0.0.255/32", "169.254.1.1/16"])
def test_host_addresses(address):
    assert host_address_problem(address) is None


# --- two files for one node -------------------------------------------------------------


def test_node_name_of():
    assert node_name_of("x.yaml") == "x" and node_name_of("x.yml") == "x"
    assert node_name_of(".x.yaml") is None and node_name_of("x.json") is None and node_name_of("x.yaml~") is None


def test_two_files_for_one_node_name_both():
    problems = node_file_problems(["nodes/x.yml", "nodes/a.yaml", "nodes/x.yaml", "nodes/README", "nodes/.x.yml"])
    assert [p.format() for p in problems] == [
        "nodes/x.yml: error: node 'x' is also defined by nodes/x.yaml\n"
        "  hint: a node is one file: keep either the .yaml or the .yml file and remove the other"]
    assert node_file_problems([Path("nodes/a.yaml"), Path("nodes/b.yml")]) == []
    shown = node_file_problems([Path("/abs/nodes/x.yaml"), Path("/abs/nodes/x.yml")], display=lambda p: p.name)
    assert shown[0].location.file == "x.yml" and "x.yaml" in shown[0].message


DUPLICATE = "hostname: other\ninterfaces:\n  - mac: 52:54:00:aa:00:60\n"


@pytest.mark.parametrize("incremental", [False, True], ids=["clean", "incremental"])
def test_a_build_refuses_two_files_for_one_node(example, incremental):
    if incremental:
        build(example, fetch=False)
    live = example.out.resolve() if incremental else None
    (example.nodes / "node-2.yml").write_text(DUPLICATE)
    with pytest.raises(InputError) as err:
        build(example, fetch=False)
    assert [p.format().split("\n")[0] for p in err.value.problems] == [
        "nodes/node-2.yml: error: node 'node-2' is also defined by nodes/node-2.yaml"]
    if incremental:
        assert example.out.resolve() == live
