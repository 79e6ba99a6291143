"""Output targets: an explicit registry of what files each boot loader gets.

Per-node targets take a BootEntry and return artifacts at the names firmware
asks for (pxelinux `01-<mac>` and hex IP, GRUB `grub.cfg-01-<mac>`, iPXE
`<mac:hexhyp>.ipxe`). Site targets write the shared entry points and the
dnsmasq and nginx configs that serve the tree.
"""
from __future__ import annotations

from ..model import Node
from ..naming import hex_ip, mac_hyphens, pxelinux_mac_name
from ..plan import Artifact
from .boot import LOCAL, BootEntry, for_loader


def _title(entry: BootEntry) -> str:
    state = "local disk" if entry.local else f"{entry.node.boot} {entry.profile.name}"
    return f"node {entry.node.name} ({state})"


def _identities(node: Node):
    """(file-name stem kind, value) pairs: each PXE interface's MAC, and its static address."""
    for iface in node.interfaces:
        if not iface.pxe:
            continue
        yield "mac", iface.mac
        if iface.address is not None:
            yield "ip", iface.address.ip


def pxelinux(ctx, entry: BootEntry) -> list[Artifact]:
    return _per_mac_and_ip(ctx, entry, "pxelinux", "pxelinux.cfg.j2", "pxelinux.cfg/",
                           {"label": "bootgen", "timeout": 0})


def grub(ctx, entry: BootEntry) -> list[Artifact]:
    return _per_mac_and_ip(ctx, entry, "grub", "grub.cfg-node.j2", "grub/grub.cfg-", {"label": _title(entry)})


def _per_mac_and_ip(ctx, entry: BootEntry, loader: str, template: str, prefix: str, extra: dict) -> list[Artifact]:
    """pxelinux and GRUB look for `01-<mac>`, then the hex IP: one file, written under each name."""
    spelled = for_loader(entry, loader, ctx.inputs.site)
    context = {"entry": spelled, "title": _title(entry), **extra}
    data = ctx.templates.render(template, context, node=entry.node.name)
    return [Artifact.from_bytes(f"{prefix}{_pxe_name(kind, value)}", data, target=loader, node=entry.node.name)
            for kind, value in _identities(entry.node)]


def ipxe(ctx, entry: BootEntry) -> list[Artifact]:
    spelled = for_loader(entry, "ipxe", ctx.inputs.site)
    data = ctx.templates.render("node.ipxe.j2", {"entry": spelled, "title": _title(entry)}, node=entry.node.name)
    return [Artifact.from_bytes(f"ipxe/{mac_hyphens(value)}.ipxe", data, target="ipxe", node=entry.node.name)
            for kind, value in _identities(entry.node) if kind == "mac"]


def _pxe_name(kind: str, value) -> str:
    return pxelinux_mac_name(value) if kind == "mac" else hex_ip(value)


# Site-wide entry points. Unknown machines boot their local disk: a machine we
# have no file for must never be wiped by an installer.

def default_entries(ctx, hosts) -> list[Artifact]:
    title = "unknown machines (local disk)"
    render = ctx.templates.render
    return [
        Artifact.from_bytes("pxelinux.cfg/default", render(
            "pxelinux.cfg.j2", {"entry": LOCAL, "label": "local", "timeout": 0, "title": title}), target="pxelinux"),
        Artifact.from_bytes("grub/grub.cfg-default", render(
            "grub.cfg-node.j2", {"entry": LOCAL, "label": "local", "title": title}), target="grub"),
        Artifact.from_bytes("ipxe/default.ipxe", render(
            "node.ipxe.j2", {"entry": LOCAL, "title": title}), target="ipxe"),
    ]


def chain_entries(ctx, hosts) -> list[Artifact]:
    site = ctx.inputs.site
    context = {"site_name": site.name, "base_url": site.base_url}
    return [
        Artifact.from_bytes("boot.ipxe", ctx.templates.render("boot.ipxe.j2", context), target="ipxe"),
        Artifact.from_bytes("grub/grub.cfg", ctx.templates.render("grub.cfg.j2", context), target="grub"),
    ]


def server_configs(ctx, hosts) -> list[Artifact]:
    site = ctx.inputs.site
    context = {
        "site": site,
        "bios_loader": "lpxelinux" if site.kernel_transport == "http" else "pxelinux",
        "uefi_loader": {"ipxe": "ipxe.efi", "grub": "grubnetx64.efi", "syslinux": "efi64/syslinux.efi"}[
            site.dhcp.uefi_loader],
        "hosts": [{"mac": mac, "address": address, "hostname": hostname} for mac, address, hostname in hosts],
    }
    return [
        Artifact.from_bytes("server/dnsmasq.conf", ctx.templates.render("dnsmasq.conf.j2", context), target="dnsmasq"),
        Artifact.from_bytes("server/nginx.conf", ctx.templates.render("nginx.conf.j2", context), target="nginx"),
    ]


TARGETS = {"pxelinux": pxelinux, "grub": grub, "ipxe": ipxe}
SITE_TARGETS = {"defaults": default_entries, "chain": chain_entries, "servers": server_configs}
