"""Resolve: one frozen NodeSpec per machine, every effective setting with its source.

This is the only place where the site's defaults, a profile and a node file
are layered. The order, least specific first, is

    site defaults  <  profile  <  node

for every field that layers: a value from a more specific layer replaces the
less specific one key by key (`install.*`, `cloud_init.*`, `vars.*`), boot
state and profile come from the node or else the site's defaults, and lists
that accumulate (`kernel_args`, `ssh_authorized_keys`, OS-config layers) are
kept in that order. `secure_boot` is the profile's, else site.yaml's (bootgen's
dnsmasq hands shim to the machines it applies to, by MAC). Nothing after this step merges again: render reads the
typed values here, and `bootgen explain` prints them with their sources.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterator

from .errors import Location
from .model import Interface, Node, Profile, Site
from .source import SourceDoc, format_path

DEFAULT_DISK = "/dev/sda"
DEFAULT_CLOUD_INIT_USER = "ubuntu"
BUILT_IN = Location("<built-in default>")


@dataclass(frozen=True)
class Origin:
    """Where a value was written: a document and the field path inside it (located on demand,
    so resolving 10,000 nodes does not compute 100,000 positions nobody asks for)."""

    doc: SourceDoc | None
    path: tuple = ()

    @property
    def location(self) -> Location:
        return self.doc.locate(self.path) if self.doc is not None else BUILT_IN

    @property
    def field(self) -> str:
        return format_path(self.path) if self.doc is not None else ""


DEFAULT = Origin(None)


@dataclass(frozen=True)
class Setting:
    """An effective value, where it came from, and the less specific values it replaced."""

    value: Any
    origin: Origin = DEFAULT
    overrides: tuple[Origin, ...] = ()

    @property
    def location(self) -> Location:
        return self.origin.location


@dataclass(frozen=True)
class Layer:
    """One level of the precedence order: a mapping of settings and where it sits in its document."""

    name: str  # "site", "profile" or "node"
    data: dict
    doc: SourceDoc | None
    base: tuple  # field path of `data` in `doc`


def layered(layers: list[Layer], key: str, defaults: dict | None = None) -> dict[str, Setting]:
    """The sub-mapping `key` of each layer, merged key by key over built-in `defaults`,
    the most specific layer winning."""
    merged = {name: Setting(value) for name, value in (defaults or {}).items()}
    for layer in layers:
        section = layer.data.get(key)
        if not isinstance(section, dict):
            continue
        for name, value in section.items():
            earlier = merged.get(name)
            replaced = (earlier.origin,) + earlier.overrides if earlier is not None else ()
            merged[name] = Setting(value, Origin(layer.doc, layer.base + (key, name)), replaced)
    return merged


def first_of(layers: list[Layer], key: str, default: Any) -> Setting:
    """A scalar setting: the most specific layer that sets `key`, else the built-in default."""
    setting = Setting(default)
    for layer in layers:
        if key in layer.data:
            replaced = (setting.origin,) + setting.overrides if setting.origin is not DEFAULT else ()
            setting = Setting(layer.data[key], Origin(layer.doc, layer.base + (key,)), replaced)
    return setting


@dataclass(frozen=True)
class KernelArg:
    """One kernel-argument string (may hold several space-separated arguments, may be templated)."""

    text: str
    origin: Origin


@dataclass(frozen=True)
class Install:
    """How the installer runs (Flatcar's flatcar-install, CoreOS's coreos-install, fcos kernel args)."""

    disk: str = DEFAULT_DISK
    channel: str | None = None
    version: str | None = None
    mirror: bool = True


@dataclass(frozen=True)
class CloudInit:
    """Ubuntu autoinstall settings (seed 003)."""

    user: str = DEFAULT_CLOUD_INIT_USER
    password_hash: str | None = None
    storage: dict | None = None
    packages: tuple[str, ...] = ()
    late_commands: tuple[str, ...] | None = None
    user_data: dict = field(default_factory=dict)


@dataclass(frozen=True)
class OsConfigLayer:
    """A Butane-shaped OS-config layer (site defaults, a profile's .bu file or `ignition`, the node's)."""

    data: dict
    doc: SourceDoc
    path: tuple


@dataclass(frozen=True)
class NodeSpec:
    """Everything one machine boots with, resolved once; render reads only this."""

    name: str
    hostname: str
    interfaces: tuple[Interface, ...]
    profile: Profile
    boot: str
    ssh_authorized_keys: tuple[str, ...]
    kernel_args: tuple[KernelArg, ...]
    install: Install
    cloud_init: CloudInit
    vars: dict
    os_config_layers: tuple[OsConfigLayer, ...]
    doc: SourceDoc = field(compare=False, repr=False)  # the node file
    settings: dict[str, Setting] = field(default_factory=dict, compare=False, repr=False)
    arch: str = "x86_64"  # x86_64 | arm64: selects the profile's image set
    serial: str | None = None  # a Raspberry Pi's serial number: its boot files live in <serial>/
    secure_boot: bool = False  # as an x86-64 UEFI machine: shim -> signed GRUB -> signed kernel

    @property
    def static_interfaces(self) -> tuple[Interface, ...]:
        return tuple(i for i in self.interfaces if i.address is not None)

    def origin(self, name: str) -> Origin:
        """Where the effective value of setting `name` (e.g. "install.disk") was written."""
        setting = self.settings.get(name)
        return setting.origin if setting is not None else Origin(self.doc, ())

    def sources(self) -> Iterator[tuple[str, Setting]]:
        """(dotted name, setting) of every effective setting, in name order."""
        return iter(sorted(self.settings.items()))


def _site_layer(site: Site) -> Layer:
    return Layer("site", site.doc.data.get("defaults", {}), site.doc, ("defaults",))


def secure_boot(site: Site, profile: Profile) -> Setting:
    """Whether the profile's x86-64 UEFI machines boot the signed chain: the profile's
    `secure_boot`, else the site's (a top-level field of site.yaml, not one of its defaults)."""
    return first_of([Layer("site", site.doc.data, site.doc, ()), Layer("profile", profile.doc.data, profile.doc, ())],
                    "secure_boot", False)


def secure_boot_differs(site: Site, profile: Profile) -> bool:
    """Whether the profile turns Secure Boot on in a site without it, or off in a site with it."""
    return bool(secure_boot(site, profile).value) != bool(site.secure_boot)


def resolve(site: Site, profiles: dict[str, Profile], node: Node, profile_layers=None) -> NodeSpec:
    """The node's effective settings; `profile_layers` maps a profile name to its parsed
    OS-config layers (`.bu` files and `ignition`), read once per build."""
    site_layer = _site_layer(site)
    node_layer = Layer("node", node.doc.data, node.doc, ())
    profile_setting = first_of([site_layer, node_layer], "profile", None)
    profile = profiles[profile_setting.value]
    profile_layer = Layer("profile", profile.doc.data, profile.doc, ())
    layers = [site_layer, profile_layer, node_layer]
    settings: dict[str, Setting] = {"profile": profile_setting,
                                    "boot": first_of([site_layer, node_layer], "boot", "install"),
                                    "secure_boot": secure_boot(site, profile)}
    install = layered(layers, "install", {"disk": DEFAULT_DISK})
    cloud_init = layered(layers, "cloud_init")
    variables = layered(layers, "vars")
    for prefix, group in (("install", install), ("cloud_init", cloud_init), ("vars", variables)):
        settings.update((f"{prefix}.{name}", setting) for name, setting in group.items())
    return NodeSpec(
        name=node.name,
        hostname=node.hostname,
        interfaces=node.interfaces,
        profile=profile,
        boot=settings["boot"].value,
        ssh_authorized_keys=_unique(site.defaults.ssh_authorized_keys + node.ssh_authorized_keys),
        kernel_args=tuple(_kernel_args(layers)),
        install=_install(install),
        cloud_init=_cloud_init(cloud_init),
        vars={name: setting.value for name, setting in variables.items()},
        os_config_layers=_os_config_layers(site, profile, node, profile_layers),
        doc=node.doc,
        settings=settings,
        arch=node.arch,
        serial=node.serial,
        secure_boot=bool(settings["secure_boot"].value),
    )


def _kernel_args(layers: list[Layer]) -> Iterator[KernelArg]:
    """Site defaults, then the profile's, then the node's: later ones win in the kernel."""
    for layer in layers:
        for index, value in enumerate(layer.data.get("kernel_args") or ()):
            yield KernelArg(str(value), Origin(layer.doc, layer.base + ("kernel_args", index)))


def _install(settings: dict[str, Setting]) -> Install:
    values = {name: setting.value for name, setting in settings.items()}
    return Install(**values)


def _cloud_init(settings: dict[str, Setting]) -> CloudInit:
    values = {name: setting.value for name, setting in settings.items()}
    for name in ("packages", "late_commands"):
        if name in values:
            values[name] = tuple(values[name])
    return CloudInit(**values)


def _os_config_layers(site: Site, profile: Profile, node: Node, profile_layers) -> tuple[OsConfigLayer, ...]:
    layers = []
    if site.defaults.ignition is not None:
        layers.append(_layer(site.defaults.ignition))
    if profile_layers is not None:
        layers.extend(profile_layers[profile.name])
    elif profile.ignition is not None:
        layers.append(_layer(profile.ignition))
    if node.ignition is not None:
        layers.append(_layer(node.ignition))
    return tuple(layers)


def _layer(fragment) -> OsConfigLayer:
    return OsConfigLayer(fragment.data, fragment.doc, tuple(fragment.path))


def _unique(items: tuple) -> tuple:
    return tuple(dict.fromkeys(items))
