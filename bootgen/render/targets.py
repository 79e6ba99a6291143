"""Output targets: an explicit registry of what files each boot loader gets.

Per-node targets take a BootEntry and return artifacts at the names firmware
asks for (pxelinux `01-<mac>` and hex IP, GRUB `grub.cfg-01-<mac>` and
`grub.cfg-<dotted IP>` as grub/grub.cfg looks them up, iPXE `<mac:hexhyp>.ipxe`). Site targets write the shared entry points and the
dnsmasq and nginx configs that serve the tree.

Every value reaches a file through a quoting filter of bootgen.quoting (see the
templates); a value a format cannot carry is a problem, not a file.
"""
from __future__ import annotations

from ..content import nginx_server
from ..errors import Location, Problem, RenderError
from ..model import Node
from ..naming import hex_ip, mac_hyphens, pxelinux_mac_name
from ..plan import Artifact
from .. import loaders, quoting
from ..spec import secure_boot_differs
from . import dhcp
from .boot import LOCAL, BootEntry, for_loader, node_image_set

# Longest line each format's reader takes whole (longer lines are read as two).
_MAX_LINE = {"pxelinux.cfg.j2": quoting.PXELINUX_MAX_LINE, "dnsmasq.conf.j2": quoting.DNSMASQ_MAX_LINE,
             # GRUB's lexer refuses a token of 8,192 bytes (YYLMAX); nginx a parameter of 4,096
             "grub.cfg-node.j2": 8000, "grub.cfg.j2": 8000}


def _render(ctx, template: str, context: dict, *, node: str | None = None, where=None) -> bytes:
    """Render `template` with the quoting filters. A value a filter refuses, or a line
    longer than the format's reader takes whole, is a RenderError at `where`
    (a (Location, field path) pair)."""
    location, field = where if where else (Location(template), "")
    who = f"node '{node}': " if node else ""
    try:
        data = ctx.templates.render(template, context, node=node)
    except quoting.UnsafeValue as exc:
        raise RenderError(Problem(location, f"{who}{exc} (rendering {template})", field)) from None
    _check_lines(data, template, _MAX_LINE.get(template), location, field, who)
    return data


def _check_lines(data: bytes, name: str, limit: int | None, location, field: str, who: str = "") -> None:
    """A line longer than the format's reader takes whole is a RenderError at `location`."""
    too_long = quoting.long_lines(data, limit) if limit is not None else []
    if too_long:
        raise RenderError(Problem(location, f"{who}line {too_long[0]} of {name} would be longer than "
                                            f"{limit} bytes, which its reader splits into two lines", field,
                                  "shorten the values on that line"))


def _node_place(entry: BootEntry):
    return entry.node.doc.locate(()), ""


def _site_place(site):
    return site.doc.locate(()), ""


def _check_site(site, hosts=()) -> None:
    """Each site value that the site-wide files carry, through the quoting of every
    place it is written to: a value one of them cannot carry is a problem at its field."""
    dhcp, server = site.dhcp, site.server
    checks = [
        (("base_url",), lambda: quoting.ipxe_arg(site.base_url + "ipxe/")),
        (("base_url",), lambda: quoting.dnsmasq_value(site.base_url + "boot.ipxe")),
        (("server", "root"), lambda: quoting.dnsmasq_value(server.root)),
        (("server", "root"), lambda: quoting.nginx_path(server.root)),
        (("server", "server_name"), lambda: quoting.nginx_names(server.server_name)),
        (("server", "http_port"), lambda: quoting.nginx_port(server.http_port)),
    ]
    if dhcp.interface:
        checks.append((("dhcp", "interface"), lambda: quoting.dnsmasq_token(dhcp.interface)))
    problems = []
    for path, check in checks:
        try:
            check()
        except quoting.UnsafeValue as exc:
            problems.append(Problem(site.doc.locate(path), str(exc), "$." + ".".join(path)))
    for mac, address, hostname, _ in hosts:
        for value in (mac, address or "0.0.0.0", hostname):
            try:
                quoting.dnsmasq_token(value)
            except quoting.UnsafeValue as exc:
                problems.append(Problem(site.doc.locate(()), f"dhcp-host for {mac}: {exc}"))
    if problems:
        raise RenderError(problems)


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
                           {"label": "bootgen", "timeout": 0}, _pxe_name)


def grub(ctx, entry: BootEntry) -> list[Artifact]:
    return _per_mac_and_ip(ctx, entry, "grub", "grub.cfg-node.j2", "grub/grub.cfg-", {"label": _title(entry)},
                           _grub_name)


def _per_mac_and_ip(ctx, entry: BootEntry, loader: str, template: str, prefix: str, extra: dict,
                    name) -> list[Artifact]:
    """pxelinux and GRUB look for the MAC's file, then the address's: one file, written under each name."""
    spelled = for_loader(entry, loader, ctx.inputs.site)
    context = {"entry": spelled, "title": _title(entry), **extra}
    data = _render(ctx, template, context, node=entry.node.name, where=_node_place(entry))
    return [Artifact.from_bytes(f"{prefix}{name(kind, value)}", data, target=loader, node=entry.node.name)
            for kind, value in _identities(entry.node)]


def ipxe(ctx, entry: BootEntry) -> list[Artifact]:
    spelled = for_loader(entry, "ipxe", ctx.inputs.site)
    data = _render(ctx, "node.ipxe.j2", {"entry": spelled, "title": _title(entry)}, node=entry.node.name,
                   where=_node_place(entry))
    return [Artifact.from_bytes(f"ipxe/{mac_hyphens(value)}.ipxe", data, target="ipxe", node=entry.node.name)
            for kind, value in _identities(entry.node) if kind == "mac"]


def raspberrypi(ctx, entry: BootEntry) -> list[Artifact]:
    """A Raspberry Pi's TFTP directory, `<serial>/`: its boot firmware, kernel and initrd from the
    node's image set, config.txt naming them, and cmdline.txt with the node's kernel arguments
    (its OS config URL among them). A `boot: local` Pi gets no directory, so its bootloader
    moves on to the next mode of its BOOT_ORDER (SD card, USB)."""
    spec = entry.node
    if entry.local:
        return []
    image_set = node_image_set(ctx, spec)
    refs = [*image_set.firmware, entry.kernel, *entry.initrds]
    not_mirrored = [ref.name for ref in refs if ref.tree_path is None]
    where = spec.doc.locate(("serial",))
    if not image_set.firmware or not_mirrored:
        missing = "has no `firmware`" if not image_set.firmware else f"does not mirror {', '.join(not_mirrored)}"
        raise RenderError(Problem(where, f"node '{spec.name}' is a Raspberry Pi, but image set '{image_set.name}' "
                                         f"{missing}", "$.serial",
                                  "a Pi loads its firmware, kernel and initrd over TFTP from its serial directory: "
                                  "declare them in the image set, with `mirror: true`"))
    if len(entry.initrds) > 1:
        raise RenderError(Problem(where, f"node '{spec.name}': a Raspberry Pi loads one initramfs, image set "
                                         f"'{image_set.name}' has {len(entry.initrds)}", "$.serial"))
    directory = f"{spec.serial}/"
    files = [Artifact(directory + ref.name, placed.sha256, placed.size, False, spec.name, "raspberrypi",
                      source=placed.source) for ref in refs for placed in (image_set.placed(ref),) if placed]
    context = {"title": _title(entry), "kernel": entry.kernel.name,
               "initrd": entry.initrds[0].name if entry.initrds else None}
    config = _render(ctx, "config.txt.j2", context, node=spec.name, where=(where, "$.serial"))
    try:
        cmdline = (" ".join(quoting.pi_cmdline_arg(arg) for arg in entry.args) + "\n").encode()
    except quoting.UnsafeValue as exc:
        raise RenderError(Problem(where, f"node '{spec.name}': {exc}", "$.serial")) from None
    return files + [Artifact.from_bytes(directory + "config.txt", config, target="raspberrypi", node=spec.name),
                    Artifact.from_bytes(directory + "cmdline.txt", cmdline, target="raspberrypi", node=spec.name)]


def _pxe_name(kind: str, value) -> str:
    return pxelinux_mac_name(value) if kind == "mac" else hex_ip(value)


def _grub_name(kind: str, value) -> str:
    """GRUB script cannot turn ${net_default_ip} into hex, so its per-address file has the dotted address."""
    return pxelinux_mac_name(value) if kind == "mac" else str(value)


# Site-wide entry points. Unknown machines boot their local disk: a machine we
# have no file for must never be wiped by an installer.

def default_entries(ctx, hosts) -> list[Artifact]:
    title = "unknown machines (local disk)"

    def render(template, context):
        return _render(ctx, template, context, where=_site_place(ctx.inputs.site))
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
    _check_site(site)
    where = _site_place(site)
    return [
        Artifact.from_bytes("boot.ipxe", _render(ctx, "boot.ipxe.j2", context, where=where), target="ipxe"),
        Artifact.from_bytes("grub/grub.cfg", _render(ctx, "grub.cfg.j2", context, where=where), target="grub"),
    ]


def mixed_secure_boot(inputs) -> bool:
    """Whether some profile's secure_boot differs from the site's (DHCP then chooses by MAC)."""
    return any(secure_boot_differs(inputs.site, profile) for profile in inputs.profiles.values())


def server_configs(ctx, hosts) -> list[Artifact]:
    site = ctx.inputs.site
    context = {
        "site": site,
        "first_loaders": dhcp.first_loaders(site, loaders.site_arches(ctx.inputs.image_config),
                                            mixed_secure_boot(ctx.inputs)),
        "raspberry_pi": loaders.boots_raspberry_pis(ctx.inputs.image_config),
        "hosts": [{"mac": mac, "address": address, "hostname": hostname, "tag": tag}
                  for mac, address, hostname, tag in hosts],
    }
    _check_site(site, hosts)
    where = _site_place(site)
    return [
        Artifact.from_bytes("server/dnsmasq.conf", _render(ctx, "dnsmasq.conf.j2", context, where=where),
                            target="dnsmasq"),
        Artifact.from_bytes("server/nginx.conf", _nginx_conf(site), target="nginx"),
    ]


def _nginx_conf(site) -> bytes:
    """server/nginx.conf: the one nginx generator (bootgen.content), rooted at the site's server root."""
    server = site.server
    text = nginx_server(server.root, quoting.nginx_port(server.http_port),
                        quoting.nginx_names(server.server_name), title=site.name)
    include = f"# Include from the http {{}} block: include {quoting.comment(server.root)}/server/nginx.conf;\n"
    first, _, rest = text.partition("\n")
    data = f"{first}\n{include}{rest}".encode()
    _check_lines(data, "nginx.conf", 4000, *_site_place(site))  # nginx refuses a parameter of 4,096 bytes
    return data


TARGETS = {"pxelinux": pxelinux, "grub": grub, "ipxe": ipxe, "raspberrypi": raspberrypi}
SITE_TARGETS = {"defaults": default_entries, "chain": chain_entries, "servers": server_configs}
