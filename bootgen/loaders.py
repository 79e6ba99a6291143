"""Boot loaders: one registry of every loader binary the tree can serve.

Each entry says which machines it is for (architecture, firmware), where it
comes from (a Debian package and the path that package installs), its name in
the tree, its Content-Type, and the DHCP client architectures that are handed
it. The tree (bootgen.images.loaders places the files), the dnsmasq config
(render.targets) and publish (bootgen.content) all read this registry, so a
new loader is one entry here.

DHCP: a PXE client says what it is in option 93 (client architecture, RFC 4578
and IANA's registry): 0 x86 BIOS, 7 and 9 x86-64 UEFI, 11 arm64 UEFI, 16 x86-64
UEFI HTTP, 19 arm64 UEFI HTTP. dnsmasq's pxe-service names the same machines
by its own CSA names (x86PC, X86-64_EFI, BC_EFI, ARM64_EFI).
"""
from __future__ import annotations

from dataclasses import dataclass

BINARY = "application/octet-stream"


@dataclass(frozen=True)
class ClientArch:
    """A kind of PXE client as DHCP sees it."""

    tag: str  # the dnsmasq tag the generated config sets for it
    arch: str  # x86_64 | arm64
    firmware: str  # bios | uefi
    option93: tuple[int, ...]  # client-architecture values it sends
    csas: tuple[str, ...]  # dnsmasq's pxe-service names for it


BIOS = ClientArch("bios", "x86_64", "bios", (0,), ("x86PC",))
X86_64_EFI = ClientArch("efi64", "x86_64", "uefi", (7, 9), ("X86-64_EFI", "BC_EFI"))
ARM64_EFI = ClientArch("arm64efi", "arm64", "uefi", (11,), ("ARM64_EFI",))
CLIENT_ARCHES = (BIOS, X86_64_EFI, ARM64_EFI)
# UEFI HTTP Boot clients (vendor class HTTPClient): they take a URL as boot file and ignore
# an offer that does not echo option 60 as HTTPClient. They get the loader their PXE
# sibling would, over HTTP.
X86_64_HTTP = ClientArch("efihttp64", "x86_64", "uefi-http", (16,), ())
ARM64_HTTP = ClientArch("efihttparm64", "arm64", "uefi-http", (19,), ())
HTTP_BOOT_CLIENTS = {X86_64_EFI: X86_64_HTTP, ARM64_EFI: ARM64_HTTP}


@dataclass(frozen=True)
class Loader:
    """One boot loader file served from the tree."""

    tree_path: str
    package: str  # the Debian package that ships it
    source: str  # where that package installs it
    arch: str  # x86_64 | arm64
    firmware: str  # bios | uefi
    choice: str | None = None  # the site setting that hands it out first (None: fetched by another loader)
    secure_boot: bool = False  # part of the signed chain; placed only for sites that ask for Secure Boot
    content_type: str = BINARY
    # Boots when UEFI HTTP Boot loaded it: it must fetch what comes next over HTTP by itself.
    # Debian's GRUB images cannot (no http module built in; under Secure Boot none may be
    # loaded), and shim hands over to GRUB.
    over_http: bool = False

    @property
    def boot_config(self) -> str:
        """The per-node boot config (site.yaml `boot_configs`) this loader reads: placed only with it."""
        return _PACKAGE_CONFIGS[self.package]

    @property
    def client(self) -> ClientArch | None:
        """The DHCP client kind that is handed this loader first, if any."""
        if self.choice is None:
            return None
        return next(c for c in CLIENT_ARCHES if (c.arch, c.firmware) == (self.arch, self.firmware))


_PACKAGE_CONFIGS = {"pxelinux": "pxelinux", "syslinux-common": "pxelinux", "syslinux-efi": "pxelinux", "ipxe": "ipxe",
                    "grub-efi-amd64-bin": "grub", "grub-efi-arm64-bin": "grub", "shim-signed": "grub",
                    "grub-efi-amd64-signed": "grub"}
_SYSLINUX_BIOS = ("ldlinux.c32", "menu.c32", "libutil.c32", "libcom32.c32", "vesamenu.c32")

LOADERS: tuple[Loader, ...] = (
    Loader("pxelinux.0", "pxelinux", "/usr/lib/PXELINUX/pxelinux.0", "x86_64", "bios", "pxelinux"),
    Loader("lpxelinux.0", "pxelinux", "/usr/lib/PXELINUX/lpxelinux.0", "x86_64", "bios", "lpxelinux"),
    *(Loader(name, "syslinux-common", f"/usr/lib/syslinux/modules/bios/{name}", "x86_64", "bios")
      for name in _SYSLINUX_BIOS),
    Loader("efi64/syslinux.efi", "syslinux-efi", "/usr/lib/SYSLINUX.EFI/efi64/syslinux.efi", "x86_64", "uefi",
           "syslinux"),
    Loader("efi64/ldlinux.e64", "syslinux-common", "/usr/lib/syslinux/modules/efi64/ldlinux.e64", "x86_64", "uefi"),
    Loader("undionly.kpxe", "ipxe", "/usr/lib/ipxe/undionly.kpxe", "x86_64", "bios", "ipxe"),
    Loader("ipxe.efi", "ipxe", "/usr/lib/ipxe/ipxe.efi", "x86_64", "uefi", "ipxe", over_http=True),
    Loader("grubnetx64.efi", "grub-efi-amd64-bin", "/usr/lib/grub/x86_64-efi/monolithic/grubnetx64.efi",
           "x86_64", "uefi", "grub"),
    # arm64 UEFI: Debian ships no arm64 iPXE, so arm64 machines boot GRUB's network image
    # (grub-efi-arm64-bin:arm64, installable beside amd64 with `dpkg --add-architecture arm64`).
    Loader("grubnetaa64.efi", "grub-efi-arm64-bin", "/usr/lib/grub/arm64-efi/monolithic/grubnetaa64.efi",
           "arm64", "uefi", "grub"),
    # Secure Boot: shim (signed by Microsoft's UEFI CA) fetches `grubx64.efi` from
    # its own directory, a name fixed inside shim; Debian's signed network GRUB
    # goes there. GRUB then asks shim to verify the kernel.
    Loader("shimx64.efi", "shim-signed", "/usr/lib/shim/shimx64.efi.signed", "x86_64", "uefi", "shim",
           secure_boot=True),
    Loader("grubx64.efi", "grub-efi-amd64-signed", "/usr/lib/grub/x86_64-efi-signed/grubnetx64.efi.signed",
           "x86_64", "uefi", secure_boot=True),
)

# GRUB's modules for HTTP, loaded from grub/<platform>/ next to grub.cfg (see images.loaders).
GRUB_MODULE_SOURCES = {"x86_64-efi": ("grub-efi-amd64-bin", "/usr/lib/grub/x86_64-efi", "x86_64"),
                       "arm64-efi": ("grub-efi-arm64-bin", "/usr/lib/grub/arm64-efi", "arm64")}
UEFI_CHOICES = ("ipxe", "grub", "syslinux")


def by_tree_path() -> dict[str, Loader]:
    """Every registered loader by its tree path."""
    return {loader.tree_path: loader for loader in LOADERS}


def first_loader(choice: str, client: ClientArch) -> Loader:
    """The loader DHCP hands `client` for the site's `choice` (pxelinux, lpxelinux, ipxe, grub, syslinux, shim)."""
    for loader in LOADERS:
        if loader.choice == choice and loader.client == client:
            return loader
    raise KeyError(f"no {choice} loader for {client.csas[0]}")


@dataclass(frozen=True)
class Offer:
    """What DHCP hands one kind of client first: a loader (by TFTP name, or by URL to an HTTP
    Boot client), or nothing (`loader` None: no loader of its architecture works that way)."""

    client: ClientArch
    loader: Loader | None
    host_tags: tuple[str, ...] = ()  # dnsmasq tags of single machines it needs ("x") or excludes ("!x")

    @property
    def http(self) -> bool:
        return self.client.firmware == "uefi-http"


def secure_boot_host_tag(site) -> str:
    """The dnsmasq tag of machines whose profile's secure_boot differs from the site's."""
    return "nosecureboot" if site.secure_boot else "secureboot"


def site_offers(site, arches: frozenset[str] = frozenset({"x86_64"}), *, mixed_secure_boot: bool = False
                ) -> tuple[Offer, ...]:
    """What DHCP hands each kind of client of `site` (its kernel_transport, secure_boot and
    dhcp.uefi_loader) for the architectures it boots: one rule for server/dnsmasq.conf and for
    the dnsmasq command line `bootgen serve` prints. With `mixed_secure_boot` (a profile's
    secure_boot differs from the site's), x86-64 UEFI machines of such profiles, tagged by MAC
    (secure_boot_host_tag), get the other chain: shim, or the site's uefi_loader.

    An HTTP Boot client gets the loader its PXE sibling gets when that loader works over HTTP,
    else that architecture's iPXE (x86-64: a machine with Secure Boot on refuses it and goes on
    to its next boot option), else nothing (arm64: Debian ships no loader for it)."""
    choices = {BIOS: _bios_choice(site),
               X86_64_EFI: "shim" if site.secure_boot else site.dhcp.uefi_loader}
    if "arm64" in arches:
        choices[ARM64_EFI] = "grub"
    offers = []
    for client, choice in choices.items():
        loader = first_loader(choice, client)
        if client is X86_64_EFI and mixed_secure_boot:
            tag = secure_boot_host_tag(site)
            other = site.dhcp.uefi_loader if site.secure_boot else "shim"
            offers += [Offer(client, loader, (f"!{tag}",)), Offer(client, first_loader(other, client), (tag,))]
        else:
            offers.append(Offer(client, loader))
        if client in HTTP_BOOT_CLIENTS:
            offers.append(Offer(HTTP_BOOT_CLIENTS[client], loader if loader.over_http else _http_loader(site, client)))
    return tuple(offers)


def _bios_choice(site) -> str:
    """pxelinux (lpxelinux.0 when kernels come over HTTP); iPXE's undionly.kpxe in a site that writes
    no pxelinux configs (it then fetches boot.ipxe, by the iPXE guard of the DHCP config)."""
    if "pxelinux" not in site.boot_configs:
        return "ipxe"
    return "lpxelinux" if site.kernel_transport == "http" else "pxelinux"


def _http_loader(site, client: ClientArch) -> Loader | None:
    return next((loader for loader in LOADERS if loader.client == client and loader.over_http
                 and loader.boot_config in site.boot_configs), None)


# The site choices behind each per-node target (bootgen.render.targets.TARGETS).
_TARGET_CHOICES = {"pxelinux": ("lpxelinux", "pxelinux"), "grub": ("grub",), "ipxe": ("ipxe",)}


def first_files(target: str, arch: str, secure_boot: bool = False) -> tuple[tuple[str, str], ...]:
    """(firmware, first loader files) of a per-node target on `arch`, e.g. ("BIOS", "lpxelinux.0 /
    pxelinux.0"), as `bootgen explain` shows them. Under Secure Boot an x86-64 UEFI machine reaches
    GRUB through shim, and nothing else (the firmware refuses unsigned loaders), unless its firmware
    has Secure Boot off and boots by HTTP: then it gets iPXE."""
    rows: dict[str, list[str]] = {}
    signed_uefi = secure_boot and arch == "x86_64"
    for choice in _TARGET_CHOICES.get(target, ()):
        for loader in LOADERS:
            if loader.choice == choice and loader.arch == arch and not loader.secure_boot:
                if signed_uefi and loader.firmware == "uefi":
                    continue
                label = "BIOS" if loader.firmware == "bios" else "UEFI" if arch == "x86_64" else f"UEFI {arch}"
                rows.setdefault(label, []).append(loader.tree_path)
    if signed_uefi and target == "grub":
        rows["UEFI Secure Boot"] = [" → ".join(loader.tree_path for loader in LOADERS if loader.secure_boot)]
    if signed_uefi:  # HTTP Boot clients get iPXE by URL in any site (site_offers): booted if Secure Boot is off
        rows.update(("UEFI HTTP Boot with Secure Boot off", [loader.tree_path]) for loader in LOADERS
                    if loader.over_http and loader.arch == arch and loader.choice in _TARGET_CHOICES.get(target, ()))
    return tuple((label, " / ".join(names)) for label, names in rows.items())


ALL_BOOT_CONFIGS = ("pxelinux", "grub", "ipxe", "raspberrypi")


def placed_loaders(*, secure_boot: bool, arches: frozenset[str] = frozenset({"x86_64"}),
                   boot_configs: tuple[str, ...] = ALL_BOOT_CONFIGS) -> tuple[Loader, ...]:
    """The loaders a site's tree holds: those for the architectures it boots (x86-64 always),
    the signed chain only if the site boots with Secure Boot, and only those whose boot config
    the site writes (site.yaml `boot_configs`)."""
    return tuple(loader for loader in LOADERS
                 if (secure_boot or not loader.secure_boot) and (loader.arch == "x86_64" or loader.arch in arches)
                 and loader.boot_config in boot_configs)


def site_arches(image_config) -> frozenset[str]:
    """The CPU architectures whose UEFI loaders a site needs: x86-64, and those its image sets
    declare (a Raspberry Pi's set, with `firmware`, boots the Pi's own firmware, not UEFI)."""
    declared = {image_set.arch for image_set in image_config.images.values()
                if not image_set.firmware} if image_config else set()
    return frozenset({"x86_64"} | declared)


def boots_raspberry_pis(image_config) -> bool:
    """Whether a site declares Raspberry Pi boot firmware (its DHCP answers then name the Pi's menu entry)."""
    return any(image_set.firmware for image_set in image_config.images.values()) if image_config else False
