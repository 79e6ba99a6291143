"""The typed model a build works from, made once the schemas have passed.

Everything after validation reads these frozen dataclasses instead of raw
dicts, so a mistyped key is caught by the schema, not discovered at render time.
`Mapping` values (OS-config fragments) stay as read from YAML, together
with the document they came from so later errors can still name file and line.
These hold what each file says; `bootgen.spec` layers them into one NodeSpec
per machine (site defaults < profile < node).
"""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .source import SourceDoc

BOOT_STATES = ("install", "live", "local")
LOADERS = ("pxelinux", "grub", "ipxe")


@dataclass(frozen=True)
class Interface:
    mac: str  # normalised: lowercase with colons
    name: str | None = None
    address: ipaddress.IPv4Interface | None = None
    gateway: ipaddress.IPv4Address | None = None
    dns: tuple[ipaddress.IPv4Address, ...] = ()
    pxe: bool = True


@dataclass(frozen=True)
class Fragment:
    """A piece of free-form input (an OS-config layer, vars) and where it came from."""

    data: Any
    doc: SourceDoc
    path: tuple


@dataclass(frozen=True)
class Node:
    name: str  # the file name without .yaml: unique, safe as a path segment
    hostname: str
    profile: str  # the node's `profile`, else the site's `defaults.profile`
    interfaces: tuple[Interface, ...]
    ssh_authorized_keys: tuple[str, ...]  # the node's own (site defaults are added by spec.resolve)
    doc: SourceDoc = field(compare=False, repr=False)
    ignition: Fragment | None = field(default=None, compare=False, repr=False)
    arch: str = "x86_64"  # x86_64 | arm64
    serial: str | None = None  # Raspberry Pi serial number (8 lowercase hex digits)


@dataclass(frozen=True)
class Profile:
    name: str
    description: str
    images: str | None  # x86-64 machines' image set
    loaders: tuple[str, ...]
    os_config: str
    ignition_version: str
    variant: str
    doc: SourceDoc = field(compare=False, repr=False)
    ignition: Fragment | None = field(default=None, compare=False, repr=False)
    ignition_files: tuple[str, ...] = ()
    images_arm64: str | None = None

    def image_set(self, arch: str) -> str | None:
        """The image set this profile boots on `arch` machines, if it has one."""
        return self.images_arm64 if arch == "arm64" else self.images


@dataclass(frozen=True)
class DhcpSettings:
    mode: str = "proxy"  # proxy | full | none
    subnet: ipaddress.IPv4Network | None = None
    range: tuple[ipaddress.IPv4Address, ipaddress.IPv4Address] | None = None
    interface: str | None = None
    uefi_loader: str = "ipxe"  # what UEFI machines are handed first


@dataclass(frozen=True)
class ServerSettings:
    root: str = "/srv/bootgen/current"
    http_port: int = 80
    server_name: str = "_"


@dataclass(frozen=True)
class Defaults:
    profile: str | None = None
    ssh_authorized_keys: tuple[str, ...] = ()
    ignition: Fragment | None = field(default=None, compare=False)


@dataclass(frozen=True)
class Site:
    directory: Path
    name: str
    base_url: str  # always ends with '/'
    tftp_server: ipaddress.IPv4Address
    kernel_transport: str  # "http" or "tftp": how pxelinux and GRUB fetch kernels
    dhcp: DhcpSettings
    server: ServerSettings
    defaults: Defaults
    doc: SourceDoc = field(compare=False, repr=False)
    exports: dict = field(default_factory=dict)  # {"pixiecore": bool, "tinkerbell": {...}}
    secure_boot: bool = False  # UEFI machines boot shim -> signed GRUB -> signed kernel (bootgen.loaders)
    # the per-node boot configs written (bootgen.render.targets.TARGETS); the loaders DHCP hands out follow
    boot_configs: tuple[str, ...] = ("pxelinux", "grub", "ipxe", "raspberrypi")  # loaders.ALL_BOOT_CONFIGS

    def url(self, tree_path: str) -> str:
        """The HTTP URL of a file in the tree."""
        return self.base_url + tree_path

    @property
    def http_host(self) -> str:
        """host[:port] of base_url, as GRUB's (http,HOST) device wants it."""
        return self.base_url.split("/", 3)[2]


@dataclass(frozen=True)
class Inputs:
    """Everything a build reads, validated and typed."""

    site: Site
    profiles: dict[str, Profile]
    nodes: tuple[Node, ...]  # sorted by name
    image_config: Any  # bootgen.images model; typed there
    templates_dir: Path
    profile_layers: dict = field(default_factory=dict)  # profile name -> OS-config layers (bootgen.spec)
