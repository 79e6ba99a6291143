"""Ignition for Flatcar and Fedora CoreOS, including the two-stage install.

The node's final config merges, least specific first: what bootgen generates
from the node (hostname, the `core` user's SSH keys, systemd-networkd units for
static addresses), site `defaults.ignition`, the profile's `.bu` files and
`ignition`, then the node's `ignition`. Butane-shaped YAML is transpiled by
`bootgen.osconfig.butane`.

Two-stage install (seed 000, Matchbox's flatcar-install): a node in state
`install` live-boots stage 1, whose only job is to run
`flatcar-install -d <disk> -i /opt/ignition.json` and reboot; /opt/ignition.json
is the final config, fetched with a sha512 `verification.hash`, so a tampered
file is refused. Fedora CoreOS installs from kernel arguments instead
(`coreos.inst.ignition_url`), so its config_url is the final config.
"""
from __future__ import annotations

from ..model import Profile
from ..osconfig.butane import ButaneLayer, build_ignition, ignition_sha512, serialize_ignition
from ..spec import NodeSpec
from .boot import node_image_set
from .network import networkd_file_name, networkd_unit
from .osconfig import OsConfig, content_addressed


def render_ignition(ctx, node: NodeSpec, profile: Profile) -> OsConfig:
    final = final_config(ctx, node, profile)
    final_url, artifacts = _place(ctx, node, "ignition.json", final)
    final_url += "ignition.json"
    final_hash = ignition_sha512(final)
    if node.boot != "install" or profile.variant == "fcos":
        return OsConfig(final_url, artifacts, final_url, final_hash)
    stage1 = installer_config(ctx, node, profile, final_url, final_hash)
    stage1_url, stage1_artifacts = _place(ctx, node, "install.ign", stage1)
    return OsConfig(stage1_url + "install.ign", artifacts + stage1_artifacts, final_url, final_hash)


def _place(ctx, node: NodeSpec, name: str, config: dict):
    return content_addressed(ctx, node, {name: serialize_ignition(config)}, target="ignition")


def final_config(ctx, node: NodeSpec, profile: Profile) -> dict:
    """The node's own config: generated basics, then site, profile and node layers."""
    site = ctx.inputs.site
    layers = [ButaneLayer(generated_basics(node), node.doc, ())]
    layers += [ButaneLayer(layer.data, layer.doc, layer.path) for layer in node.os_config_layers]
    return build_ignition(layers, files_dir=site.directory, version=profile.ignition_version,
                          variant=profile.variant)


def generated_basics(node: NodeSpec) -> dict:
    """What every node needs: its host name, the core user's keys, static networking."""
    config: dict = {"storage": {"files": [{
        "path": "/etc/hostname", "mode": 0o644, "overwrite": True,
        "contents": {"inline": node.hostname + "\n"}}]}}
    if node.ssh_authorized_keys:
        config["passwd"] = {"users": [{"name": "core", "ssh_authorized_keys": list(node.ssh_authorized_keys)}]}
    units = [_networkd_file(i, iface) for i, iface in enumerate(node.interfaces) if iface.address is not None]
    config["storage"]["files"].extend(units)
    return config


def _networkd_file(index: int, iface) -> dict:
    return {"path": networkd_file_name(index, iface), "mode": 0o644, "contents": {"inline": networkd_unit(iface)}}


def installer_config(ctx, node: NodeSpec, profile: Profile, final_url: str, final_hash: str) -> dict:
    """Stage 1: install to disk with the verified final config, then reboot."""
    from ..quoting import shell, systemd_exec
    script = shell(flatcar_install_command(ctx, node, profile)) + " && udevadm settle && systemctl reboot"
    unit = "\n".join([
        "[Unit]", "Description=Install Flatcar to disk (bootgen stage 1)",
        "Requires=network-online.target", "After=network-online.target", "",
        "[Service]", "Type=oneshot", "TimeoutStartSec=1800", "RemainAfterExit=yes",
        "ExecStart=" + systemd_exec(["/usr/bin/sh", "-c", script]), "",
        "[Install]", "WantedBy=multi-user.target", ""])
    butane = {
        "systemd": {"units": [{"name": "bootgen-install.service", "enabled": True, "contents": unit}]},
        "storage": {"files": [{"path": "/opt/ignition.json", "mode": 0o600, "contents": {
            "source": final_url, "verification": {"hash": final_hash}}}]},
    }
    if node.ssh_authorized_keys:  # lets an operator debug a failed install
        butane["passwd"] = {"users": [{"name": "core", "ssh_authorized_keys": list(node.ssh_authorized_keys)}]}
    return build_ignition([ButaneLayer(butane, node.doc, ())], files_dir=ctx.inputs.site.directory,
                          version=profile.ignition_version, variant=profile.variant)


def flatcar_install_command(ctx, node: NodeSpec, profile: Profile) -> list[str]:
    """flatcar-install -d <disk> -i <final> [-b <our mirror>] [-C channel] [-V version]."""
    install = node.install
    image_set = node_image_set(ctx, node)
    command = ["flatcar-install", "-d", install.disk, "-i", "/opt/ignition.json"]
    if image_set.installer_base and install.mirror:
        command += ["-b", ctx.inputs.site.url(image_set.installer_base)]
    if install.channel:
        command += ["-C", install.channel]
    version = install.version or (image_set.version if image_set.installer_base else None)
    if version:
        command += ["-V", version]
    return command
