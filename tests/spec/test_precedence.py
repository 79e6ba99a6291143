"""Precedence: site defaults < profile < node, for every field that layers, one test per field.

Each field is set in the site's defaults, then also in the profile, then also
in the node; the effective value (and its recorded source) must come from the
most specific layer each time. End-to-end tests check that the rendered files
say the same thing (the installer's disk above all: the wrong one is wiped).
"""
from __future__ import annotations

import json

import pytest
import yaml

from bootgen.build import build
from bootgen.load import load_inputs
from bootgen.spec import resolve

HASH = "$6$r5BaaYkys3XBVgNs$Il5bJI//lEMZmj6zNvVY2l1ZKOcmOGuF5XvjX9QoCKlyJZS8v/YWNwf.C9kVvfqbAeqYguXWn1SablhvwT9NI/"
HASH2 = "$6$abcdefgh$" + "x" * 86

# field path -> (site value, profile value, node value), and how to read it from a NodeSpec.
LAYERED = {
    "install.disk": (("/dev/vda", "/dev/sda", "/dev/nvme0n1"), lambda s: s.install.disk),
    "install.channel": (("alpha", "beta", "stable"), lambda s: s.install.channel),
    "install.version": (("1.0.0", "2.0.0", "3.0.0"), lambda s: s.install.version),
    "install.mirror": ((True, False, True), lambda s: s.install.mirror),
    "cloud_init.user": (("site-user", "profile-user", "node-user"), lambda s: s.cloud_init.user),
    "cloud_init.password_hash": ((HASH, HASH2, HASH), lambda s: s.cloud_init.password_hash),
    "cloud_init.storage": (({"layout": {"name": "lvm"}}, {"layout": {"name": "direct"}}, {"layout": {"name": "zfs"}}),
                           lambda s: s.cloud_init.storage),
    "cloud_init.packages": ((["a"], ["b"], ["c"]), lambda s: list(s.cloud_init.packages)),
    "cloud_init.late_commands": ((["true"], ["false"], ["echo node"]), lambda s: list(s.cloud_init.late_commands)),
    "cloud_init.user_data": (({"timezone": "UTC"}, {"timezone": "CET"}, {"timezone": "JST"}),
                             lambda s: s.cloud_init.user_data),
    "vars.rack": (("r1", "r2", "r3"), lambda s: s.vars["rack"]),
}


def _edit(path, change) -> None:
    data = yaml.safe_load(path.read_text()) or {}
    change(data)
    path.write_text(yaml.safe_dump(data, sort_keys=False))


def _set(data: dict, dotted: str, value) -> None:
    section, name = dotted.split(".")
    data.setdefault(section, {})[name] = value


def _spec(example, node: str):
    inputs = load_inputs(example.site, example.nodes)
    by_name = {n.name: n for n in inputs.nodes}
    return resolve(inputs.site, inputs.profiles, by_name[node], inputs.profile_layers)


@pytest.mark.parametrize("field", sorted(LAYERED))
def test_more_specific_layer_wins(example, field):
    (site_value, profile_value, node_value), read = LAYERED[field]
    profile = example.site / "profiles" / "ubuntu-autoinstall.yaml"
    node = example.nodes / "ubuntu-4f62c7.yaml"
    for path in (profile, node):  # start from no value in either
        _edit(path, lambda d: d.get(field.split(".")[0], {}).pop(field.split(".")[1], None))
    _edit(node, lambda d: _set(d, "cloud_init.password_hash", HASH) if field != "cloud_init.password_hash" else None)

    _edit(example.site / "site.yaml", lambda d: _set(d["defaults"], field, site_value))
    spec = _spec(example, "ubuntu-4f62c7")
    assert read(spec) == site_value
    assert spec.settings[field].location.file == "site/site.yaml"

    _edit(profile, lambda d: _set(d, field, profile_value))
    spec = _spec(example, "ubuntu-4f62c7")
    assert read(spec) == profile_value
    assert spec.settings[field].location.file == "site/profiles/ubuntu-autoinstall.yaml"
    assert [o.location.file for o in spec.settings[field].overrides if o.doc is not None] == ["site/site.yaml"]

    _edit(node, lambda d: _set(d, field, node_value))
    spec = _spec(example, "ubuntu-4f62c7")
    assert read(spec) == node_value
    assert spec.settings[field].location.file == "nodes/ubuntu-4f62c7.yaml"
    assert [o.location.file for o in spec.settings[field].overrides if o.doc is not None] == [
        "site/profiles/ubuntu-autoinstall.yaml", "site/site.yaml"]


@pytest.mark.parametrize("field, site_value, node_value", [
    ("profile", "flatcar-install", "fcos-install"),
    ("boot", "live", "local"),
])
def test_node_beats_site_default(example, field, site_value, node_value):
    node = example.nodes / "node-2.yaml"
    _edit(node, lambda d: d.pop(field, None))
    _edit(example.site / "site.yaml", lambda d: d["defaults"].update({field: site_value}))
    spec = _spec(example, "node-2")
    assert spec.settings[field].value == site_value
    _edit(node, lambda d: d.update({field: node_value}))
    spec = _spec(example, "node-2")
    assert spec.settings[field].value == node_value
    assert (spec.profile.name if field == "profile" else spec.boot) == node_value
    assert spec.settings[field].location.file == "nodes/node-2.yaml"


def test_kernel_args_come_site_then_profile_then_node(example):
    _edit(example.nodes / "node-2.yaml", lambda d: d.update(kernel_args=["node.arg=1"]))
    spec = _spec(example, "node-2")
    files = [arg.origin.location.file for arg in spec.kernel_args]
    assert [arg.text for arg in spec.kernel_args][-1] == "node.arg=1"
    assert files == sorted(files, key=["site/site.yaml", "site/profiles/flatcar-install.yaml",
                                       "nodes/node-2.yaml"].index)
    assert set(files) == {"site/site.yaml", "site/profiles/flatcar-install.yaml", "nodes/node-2.yaml"}


def test_ssh_keys_append_site_then_node(example):
    key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGj2mYzY1b6hPqkQbq6h7kV9gL0Zc3b5w2b1q8YkWm3r node@example"
    _edit(example.nodes / "node-2.yaml", lambda d: d.update(ssh_authorized_keys=[key]))
    spec = _spec(example, "node-2")
    site_keys = yaml.safe_load((example.site / "site.yaml").read_text())["defaults"]["ssh_authorized_keys"]
    assert spec.ssh_authorized_keys == tuple(site_keys) + (key,)


def test_profile_disk_beats_site_default_in_the_install_unit(example):
    """The reported defect: defaults.install.disk /dev/vda and the profile's /dev/sda gave /dev/vda."""
    _edit(example.site / "site.yaml", lambda d: d["defaults"].update(install={"disk": "/dev/vda"}))
    _edit(example.site / "profiles" / "flatcar-install.yaml", lambda d: d.update(install={"disk": "/dev/sda"}))
    tree = build(example, fetch=False).write.tree
    stage1 = json.loads(next((tree / "configs" / "node-2").glob("*/install.ign")).read_text())
    unit = stage1["systemd"]["units"][0]["contents"]
    assert "flatcar-install -d /dev/sda " in unit
    assert "/dev/vda" not in unit


def test_vars_profile_beats_site_in_kernel_args(example):
    _edit(example.site / "site.yaml", lambda d: d["defaults"].update(vars={"tier": "site"},
                                                                       kernel_args=["tier={{ vars.tier }}"]))
    _edit(example.site / "profiles" / "flatcar-install.yaml", lambda d: d.update(vars={"tier": "profile"}))
    tree = build(example, fetch=False).write.tree
    assert "tier=profile" in (tree / "ipxe" / "00-1e-06-45-0a-02.ipxe").read_text()
    _edit(example.nodes / "node-2.yaml", lambda d: d.update(vars={"tier": "node"}))
    tree = build(example, fetch=False).write.tree
    assert "tier=node" in (tree / "ipxe" / "00-1e-06-45-0a-02.ipxe").read_text()
    assert "tier=profile" in (tree / "ipxe" / "00-1e-06-45-0a-01.ipxe").read_text()


def test_cloud_init_password_from_profile_reaches_user_data(example):
    node = example.nodes / "ubuntu-4f62c7.yaml"
    _edit(node, lambda d: d.pop("cloud_init"))
    _edit(example.site / "site.yaml", lambda d: d["defaults"].update(cloud_init={"password_hash": HASH}))
    _edit(example.site / "profiles" / "ubuntu-autoinstall.yaml",
          lambda d: d.update(cloud_init={"password_hash": HASH2, "user": "ops"}))
    tree = build(example, fetch=False).write.tree
    user_data = yaml.safe_load(next((tree / "configs" / "ubuntu-4f62c7").glob("*/user-data")).read_text())
    assert user_data["autoinstall"]["identity"]["password"] == HASH2
    assert user_data["autoinstall"]["identity"]["username"] == "ops"
