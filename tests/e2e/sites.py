"""Test sites for the e2e boots: write site/ and nodes/, run `bootgen build`, read the tree.

Every site declares the Debian kernel and the test initramfs as a mirrored
local image set, so the VM boots exactly the bytes `bootgen build` put in the
tree. Each node's kernel arguments are known here, independently of bootgen,
so a test can compare them with what the kernel really received.
"""
from __future__ import annotations

import shutil
import subprocess
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

import yaml
from bootgen.publish.manifest import load_tree

BASE_ARGS = ("console=ttyS0",)


def full_dhcp(**extra) -> dict:
    """site.yaml `dhcp` for a full-DHCP site on the namespace LAN (bridge br0, 192.168.77.0/24)."""
    return {"mode": "full", "subnet": "192.168.77.0/24", "interface": "br0",
            "range": ["192.168.77.100", "192.168.77.199"], **extra}


@dataclass(frozen=True)
class NodeSpec:
    """One machine of a test site."""

    name: str
    mac: str
    address: str = ""  # a.b.c.d/nn, reserved for the MAC by DHCP
    boot: str = "live"
    arch: str = ""  # "arm64" for an arm64 machine; unset means x86-64
    secure_boot: bool = False  # of its profile (test-linux-sb), whatever the site says

    @property
    def own_args(self) -> tuple[str, ...]:
        return (f"bootgen.node={self.name}",)

    def as_yaml(self) -> dict:
        interface = {"mac": self.mac}
        if self.address:
            interface["address"] = self.address
        arch = {"arch": self.arch} if self.arch else {}
        profile = {"profile": SECURE_BOOT_PROFILE} if self.secure_boot else {}
        return {"interfaces": [interface], "boot": self.boot, "kernel_args": list(self.own_args), **arch, **profile}


@dataclass(frozen=True)
class SiteSpec:
    """The site-wide settings a test varies."""

    base_url: str
    tftp_server: str
    kernel_transport: str = "tftp"
    dhcp: dict = field(default_factory=lambda: {"mode": "none"})
    http_port: int = 80
    secure_boot: bool = False
    arch: str = "x86_64"  # the test image set's architecture
    boot_configs: tuple[str, ...] = ()  # site.yaml boot_configs (empty: not set, every config)


@dataclass(frozen=True)
class Tree:
    """A built tree and the spec it was built from."""

    root: Path
    site: SiteSpec
    nodes: tuple[NodeSpec, ...]
    manifest: dict

    def node(self, name: str) -> NodeSpec:
        return next(node for node in self.nodes if node.name == name)

    def config_entry(self, node: str) -> dict:
        """The manifest entry of the node's Ignition config."""
        entries = [f for f in self.manifest["files"] if f["node"] == node and f["target"] == "ignition"]
        assert len(entries) == 1, f"expected one Ignition config for {node} in manifest.json, got {entries}"
        return entries[0]

    def expected_args(self, node: str) -> list[str]:
        """The kernel command line the node's boot config must produce: site, profile, node."""
        url = self.site.base_url + self.config_entry(node)["path"]
        return [*BASE_ARGS, f"ignition.config.url={url}", *self.node(node).own_args]


def _site_yaml(spec: SiteSpec, out: Path) -> dict:
    return {
        "name": "e2e",
        "base_url": spec.base_url,
        "tftp_server": spec.tftp_server,
        "kernel_transport": spec.kernel_transport,
        "dhcp": spec.dhcp,
        **({"secure_boot": True} if spec.secure_boot else {}),
        **({"boot_configs": list(spec.boot_configs)} if spec.boot_configs else {}),
        "server": {"root": str(out), "http_port": spec.http_port},
        "defaults": {"profile": "test-linux", "boot": "live", "kernel_args": list(BASE_ARGS)},
        "images": {"test-linux": {
            **({"arch": spec.arch} if spec.arch != "x86_64" else {}),
            "mirror": True,
            "kernel": {"file": "vmlinuz", "unsigned": True},
            "initrds": [{"file": "initrd.img", "unsigned": True}],
        }},
    }


PROFILE = {
    "description": "bootgen e2e payload: prints its command line and its config's sha256",
    "images": "test-linux",
    "os_config": "ignition",
    "ignition_version": "3.3.0",
    "loaders": ["pxelinux", "grub", "ipxe"],
    "kernel_args": ["ignition.config.url={{ config_url }}"],
}


SECURE_BOOT_PROFILE = "test-linux-sb"  # the same, with `secure_boot: true` (for nodes that ask for it)


def write_site(workdir: Path, spec: SiteSpec, nodes: tuple[NodeSpec, ...], kernel: Path, initrd: Path) -> Path:
    """Write site/ and nodes/ under workdir; returns the `--out` path the servers will serve."""
    site, node_dir, out = workdir / "site", workdir / "nodes", workdir / "build"
    (site / "profiles").mkdir(parents=True)
    node_dir.mkdir()
    shutil.copyfile(kernel, site / "vmlinuz")
    shutil.copyfile(initrd, site / "initrd.img")
    (site / "site.yaml").write_text(yaml.safe_dump(_site_yaml(spec, out), sort_keys=False))
    profile = PROFILE if spec.arch == "x86_64" else \
        {**{k: v for k, v in PROFILE.items() if k != "images"}, "images_arm64": "test-linux"}
    (site / "profiles" / "test-linux.yaml").write_text(yaml.safe_dump(profile, sort_keys=False))
    if any(node.secure_boot for node in nodes):
        (site / "profiles" / f"{SECURE_BOOT_PROFILE}.yaml").write_text(
            yaml.safe_dump({**profile, "secure_boot": True}, sort_keys=False))
    for node in nodes:
        (node_dir / f"{node.name}.yaml").write_text(yaml.safe_dump(node.as_yaml(), sort_keys=False))
    return out


def build(workdir: Path, spec: SiteSpec, nodes: tuple[NodeSpec, ...], kernel: Path, initrd: Path) -> Tree:
    """Write the site and run `bootgen build` on it, as a user would."""
    out = write_site(workdir, spec, nodes, kernel, initrd)
    cmd = [sys.executable, "-m", "bootgen", "build", "--site", str(workdir / "site"),
           "--nodes", str(workdir / "nodes"), "--out", str(out), "--offline"]
    done = subprocess.run(cmd, cwd=workdir, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, f"bootgen build failed ({done.returncode}):\n{done.stdout}\n{done.stderr}"
    manifest = {"files": [asdict(f) for f in load_tree(out).files]}  # the whole index as one document
    return Tree(out, spec, nodes, manifest)
