"""What DHCP hands each kind of client, written two ways from one rule (bootgen.loaders.site_offers).

`first_loaders` is what the server/dnsmasq.conf template renders; `dnsmasq_arguments`
is the same answer as a dnsmasq command line, which `bootgen serve` prints for its
development tree. Both follow the site's `dhcp.mode`: proxyDHCP answers PXE requests
only (pxe-service, which BIOS iPXE ROMs need behind proxyDHCP); full DHCP picks the
loader by client architecture (dhcp-match, dhcp-boot) and answers HTTP Boot clients
with a URL; `none` serves TFTP only.
"""
from __future__ import annotations

from .. import loaders

IPXE_GUARD = ("dhcp-userclass=set:ipxe,iPXE", "dhcp-match=set:ipxe,175")  # iPXE gets the script, not iPXE
PI_MENU_ENTRY = "Raspberry Pi Boot"  # what Pi bootloaders before 2020 look for in the PXE menu


def first_loaders(site, arches: frozenset[str] = frozenset({"x86_64"}), mixed_secure_boot: bool = False) -> list[dict]:
    """Each kind of client and what it gets first, with the dnsmasq tags that select it."""
    offers = loaders.site_offers(site, arches, mixed_secure_boot=mixed_secure_boot)
    tagged = list(dict.fromkeys(offer.client.tag for offer in offers if offer.client is not loaders.BIOS))
    boots = [_first_loader(site, offer, tagged) for offer in offers]
    matched = set()
    for boot in boots:  # one dhcp-match per client kind, though it may get two loaders (by MAC)
        boot["match"] = not boot["default"] and boot["tag"] not in matched
        matched.add(boot["tag"])
    return boots


def _first_loader(site, offer: loaders.Offer, tagged: list[str]) -> dict:
    client, loader = offer.client, offer.loader
    # dhcp-boot: iPXE aside, this client's tag set and every other one unset (BIOS: none set),
    # and the tag of single machines it is for, or not for
    tags = ["!ipxe", *(tag if tag == client.tag else f"!{tag}" for tag in tagged), *offer.host_tags]
    entry = {"tag": client.tag, "option93": client.option93, "default": client is loaders.BIOS, "http": offer.http,
             "dhcp_boot_tags": ",".join(f"tag:{tag}" for tag in tags)}
    if offer.http:
        return {**entry, "csas": (), "label": f"UEFI HTTP {client.arch}", "pxe_service_file": None,
                "file": site.url(loader.tree_path) if loader else None}
    # pxe-service adds `.0` to a BIOS boot file itself
    pxe_file = loader.tree_path.removesuffix(".0") if client is loaders.BIOS else loader.tree_path
    return {**entry, "csas": client.csas, "label": "BIOS" if client.firmware == "bios" else f"UEFI {client.arch}",
            "file": loader.tree_path, "pxe_service_file": pxe_file}


def dnsmasq_arguments(site, arches: frozenset[str], raspberry_pi: bool, tftp_root: str, tftp_server: str, *,
                      mixed_secure_boot: bool = False, hosts=()) -> list[str]:
    """The dnsmasq command line that answers as the generated dnsmasq.conf does (the same options,
    less the static addresses: of `hosts` (bootgen.render.node_hosts), only the machines tagged
    for the other Secure Boot chain), serving TFTP from `tftp_root` and naming `tftp_server` as
    next-server."""
    boots = first_loaders(site, arches, mixed_secure_boot)
    script = site.url("boot.ipxe")
    netmask = site.dhcp.subnet.netmask if site.dhcp.subnet else "255.255.255.0"
    args = ["dnsmasq", "--keep-in-foreground", "--port=0", "--log-dhcp", "--enable-tftp", f"--tftp-root={tftp_root}"]
    if site.dhcp.interface:
        args += [f"--interface={site.dhcp.interface}", "--bind-interfaces"]
    if site.dhcp.mode == "proxy":
        args.append(f"--dhcp-range={site.dhcp.subnet.network_address},proxy,{netmask}")
    elif site.dhcp.mode == "full":
        args.append(f"--dhcp-range={site.dhcp.range[0]},{site.dhcp.range[1]},{netmask},12h")
    args += [f"--{option}" for option in IPXE_GUARD]
    if site.dhcp.mode == "proxy":
        args += [f"--pxe-service=tag:!ipxe,{csa},bootgen ({boot['label']}),{boot['pxe_service_file']}"
                 for boot in boots if not boot["http"] for csa in boot["csas"]]
        if raspberry_pi:
            args += [f"--pxe-service=tag:!ipxe,x86PC,{PI_MENU_ENTRY}", "--pxe-prompt=bootgen,0"]
    args += [f"--pxe-service=tag:ipxe,{csa},bootgen iPXE,{script}" for csa in ("x86PC", "X86-64_EFI")]
    args.append(f"--dhcp-boot=tag:ipxe,{script}")
    if site.dhcp.mode != "full":
        return args
    args += [f"--dhcp-match=set:{boot['tag']},option:client-arch,{number}"
             for boot in boots if boot["match"] for number in boot["option93"]]
    args += [f"--dhcp-option-force=tag:{boot['tag']},60,HTTPClient" for boot in boots if boot["http"] and boot["file"]]
    args += [f"--dhcp-boot={boot['dhcp_boot_tags']},{boot['file']}" + ("" if boot["http"] else f",,{tftp_server}")
             for boot in boots if boot["file"]]
    return args + [f"--dhcp-host={mac},set:{tag}" for mac, _, _, tag in hosts if tag]
