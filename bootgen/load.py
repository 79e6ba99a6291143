"""Load → validate → model: read site/, profiles and nodes/ into typed Inputs.

Every file is parsed and schema-checked before anything is built, and all
problems from all files are raised together in one InputError. Cross-file
checks (duplicate MACs, IPs and host names, unknown profiles) run only on
files that passed their schema, so one mistake is not reported three times.
"""
from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import NamedTuple

from .errors import InputError, Location, Problem
from .model import (Defaults, DhcpSettings, Fragment, Inputs, Interface, Node, Profile, ServerSettings,
                    Site)
from .naming import is_dns_label, node_file_problems, normalize_mac
from .schema import validate_doc
from .secrets import resolve_doc
from .secrets_scan import doc_problems
from .source import SourceDoc, format_path, load_yaml_bytes
from .spec import Layer, OsConfigLayer, first_of, secure_boot_differs
from .sshkeys import key_problem

DEFAULT_IGNITION_VERSION = "3.3.0"  # Flatcar's older stable releases accept at most 3.3.0


def load_inputs(site_dir: Path, nodes_dir: Path, *, display_root: Path | None = None,
                node_problems: list[Problem] | None = None, env: str | None = None,
                base_url: str | None = None) -> Inputs:
    """Read and validate the site and every node; raise InputError listing all problems.

    With `node_problems`, problems of single nodes are added to it instead, and
    only the nodes without any are returned (so `check` can render them too and
    report everything a build would); problems in the site still raise."""
    reader = Reader(display_root or Path.cwd())
    site_inputs = load_site_with_nodes(site_dir, nodes_dir, reader, env=env, base_url=base_url)
    files = node_files(nodes_dir)
    reader.problems.extend(node_file_problems(files, reader.display))  # x.yaml and x.yml
    nodes = tuple(node for node in (load_node(path, site_inputs, reader) for path in files) if node)
    check_claims([claim for node in nodes for claim in node_claims(node)], reader)
    if node_problems is not None:
        node_problems.extend(reader.problems)
        contested = {problem.location.file for problem in reader.problems}
        nodes = tuple(node for node in nodes if node.doc.file not in contested)
    else:
        reader.raise_if_any()
    return Inputs(site_inputs.site, site_inputs.profiles, nodes, site_inputs.image_config, site_inputs.templates_dir,
                  site_inputs.profile_layers)


def load_site_with_nodes(site_dir: Path, nodes_dir: Path, reader: "Reader", *, env: str | None = None,
                         base_url: str | None = None) -> "SiteInputs":
    """load_site, but a site with problems does not hide the node files' own: they are raised together."""
    try:
        return load_site(site_dir, nodes_dir, reader, env=env, base_url=base_url)
    except InputError as exc:
        alone = Reader(reader.display_root)
        check_nodes_alone(nodes_dir, site_dir, alone)
        raise InputError(list(dict.fromkeys(exc.problems + alone.problems))) from None


@dataclass(frozen=True)
class SiteInputs:
    """Everything but the nodes: site.yaml, profiles and image declarations."""

    site: Site
    profiles: dict[str, Profile]
    profile_names: frozenset[str]  # including profiles whose files have problems
    image_config: object
    templates_dir: Path
    profile_layers: dict  # profile name -> its OS-config layers (bootgen.spec.OsConfigLayer), read once
    environments: dict = field(default_factory=dict)  # name -> Environment, as site.yaml declares them


@dataclass(frozen=True)
class Environment:
    """One of site.yaml's `environments`: a tree built for its own server."""

    name: str
    base_url: str  # always ends with '/'
    publish: str | None  # s3://bucket/prefix or a docroot path
    endpoint_url: str | None


def load_site(site_dir: Path, nodes_dir: Path, reader: "Reader", *, env: str | None = None,
              base_url: str | None = None) -> SiteInputs:
    """Read site.yaml and profiles; raises at once if they have problems (every node depends on them).

    With `env`, the site is that environment's (its base_url); `base_url` overrides both."""
    site_doc = reader.read(site_dir / "site.yaml", "site", site_dir)
    profile_docs = {p.stem: reader.read(p, "profile", site_dir) for p in _yaml_files(site_dir / "profiles")}
    if not (site_dir / "site.yaml").is_file():
        reader.fail(Location(reader.display(site_dir / "site.yaml")), "site file not found",
                    hint="run `bootgen init` to create an example site, or pass --site")
    if not nodes_dir.is_dir():
        reader.fail(Location(reader.display(nodes_dir)), "nodes directory not found", hint="pass --nodes")
    if site_doc is None or not nodes_dir.is_dir():
        reader.raise_if_any()
    # A broken profile still lets the valid ones be checked against the site, in this same run.
    environments = _environments(site_doc, reader)
    site = _select_environment(_build_site(site_doc, site_dir), environments, env, base_url, reader)
    profiles = {name: _build_profile(name, doc) for name, doc in sorted(profile_docs.items()) if doc}
    image_config = _image_config(site_doc, site_dir, reader)
    _check_dhcp(site, reader)
    _check_profile_secure_boot(site, profiles, reader)
    _check_arches(site, image_config, reader)
    _check_boot_configs(site, profiles, image_config, reader)
    _check_image_references(profiles, image_config, reader)
    _check_keys(site_doc, ("defaults",), reader)
    reader.raise_if_any()
    profile_layers = {name: _profile_layers(profile, site_dir, reader) for name, profile in profiles.items()}
    reader.raise_if_any()
    _check_os_configs(site, profiles, profile_layers, reader)
    reader.raise_if_any()
    return SiteInputs(site, profiles, frozenset(profile_docs), image_config, site_dir / "templates", profile_layers,
                      environments)


def _environments(doc: SourceDoc, reader: "Reader") -> dict[str, Environment]:
    """site.yaml's `environments` (schema-checked already); names become paths, so they are DNS labels."""
    declared = {}
    for name, data in doc.data.get("environments", {}).items():
        if not is_dns_label(str(name)):
            where = ("environments", name)
            reader.fail(doc.locate(where, key=True), f"environment name {name!r} is not valid", format_path(where),
                        hint="use lowercase letters, digits and '-': it names the output link build-NAME")
            continue
        declared[name] = Environment(name, _with_slash(data["base_url"]), data.get("publish"),
                                     data.get("endpoint_url"))
    return declared


def _select_environment(site: Site, environments: dict[str, Environment], env: str | None,
                        base_url: str | None, reader: "Reader") -> Site:
    if env is not None:
        if env not in environments:
            reader.fail(site.doc.locate(("environments",), key=True), f"unknown environment {env!r}", "$.environments",
                        hint=unknown_environment_hint(environments))
            reader.raise_if_any()
        site = replace(site, base_url=environments[env].base_url)
    return replace(site, base_url=_with_slash(base_url)) if base_url else site


def unknown_environment_hint(environments) -> str:
    if environments:
        return "declared environments: " + ", ".join(sorted(environments))
    return "site.yaml declares no environments: add `environments: {NAME: {base_url: ..., publish: ...}}` to it"


def _with_slash(url: str) -> str:
    return url if url.endswith("/") else url + "/"


def _check_dhcp(site: Site, reader: "Reader") -> None:
    """Combinations that cannot boot. GRUB sends every TFTP request to the server that gave it
    its address (a GRUB limitation), so behind proxyDHCP it asks the LAN's DHCP server."""
    behind_proxy = ("GRUB cannot boot behind proxyDHCP: it fetches its files from the LAN's DHCP server, "
                    "not from this boot server")
    if site.secure_boot and "uefi_loader" in site.doc.data.get("dhcp", {}) and site.dhcp.uefi_loader != "grub":
        reader.fail(site.doc.locate(("dhcp", "uefi_loader")),
                    f"with secure_boot, UEFI machines get shim, which loads GRUB, not {site.dhcp.uefi_loader}",
                    "$.dhcp.uefi_loader", "remove `uefi_loader` (or set it to grub): "
                    "Debian's iPXE and syslinux.efi are not signed, so Secure Boot firmware refuses them")
    elif site.secure_boot and site.dhcp.mode == "proxy":
        reader.fail(site.doc.locate(("secure_boot",)), f"{behind_proxy} (Secure Boot's chain is shim, then GRUB)",
                    "$.secure_boot", "use `dhcp.mode: full`, or set next-server to this boot server on the "
                    "LAN's DHCP server and `dhcp.mode: none`")
    elif site.dhcp.mode == "proxy" and site.dhcp.uefi_loader == "grub":
        reader.fail(site.doc.locate(("dhcp", "uefi_loader")), behind_proxy, "$.dhcp.uefi_loader",
                    "set `uefi_loader: ipxe` (UEFI machines chain through ipxe.efi), or use `mode: full`, "
                    "or set next-server to this boot server on the LAN's DHCP server and `mode: none`")


def _check_profile_secure_boot(site: Site, profiles: dict[str, Profile], reader: "Reader") -> None:
    """A profile's secure_boot that differs from the site's: bootgen's dnsmasq must be the DHCP
    server that hands these machines the other chain, and GRUB cannot boot behind proxyDHCP."""
    for name, profile in sorted(profiles.items()):
        if "secure_boot" not in profile.doc.data or not secure_boot_differs(site, profile):
            continue
        where = profile.doc.locate(("secure_boot",))
        if site.dhcp.mode == "proxy" and profile.doc.data["secure_boot"]:
            reader.fail(where, "GRUB cannot boot behind proxyDHCP: it fetches its files from the LAN's DHCP server, "
                               "not from this boot server (Secure Boot's chain is shim, then GRUB)", "$.secure_boot",
                        "use `dhcp.mode: full` in site.yaml, so that bootgen's dnsmasq hands this profile's "
                        "machines shim")
        elif site.dhcp.mode != "full":
            reader.fail(where, f"profile '{name}' sets secure_boot to {str(profile.doc.data['secure_boot']).lower()}, "
                               f"the site to {str(bool(site.secure_boot)).lower()}, but with dhcp.mode "
                               f"{site.dhcp.mode} bootgen's dnsmasq does not choose the loader per machine",
                        "$.secure_boot", "use `dhcp.mode: full`, or the same secure_boot for the whole site")


def _check_arches(site: Site, image_config, reader: "Reader") -> None:
    """arm64 machines boot GRUB (Debian has no arm64 iPXE), which cannot boot behind proxyDHCP."""
    from .loaders import site_arches

    if site.dhcp.mode == "proxy" and "arm64" in site_arches(image_config):
        name = next(name for name, image_set in image_config.images.items()
                    if image_set.arch == "arm64" and not image_set.firmware)
        reader.fail(image_config.images[name].location,
                    f"image set '{name}' is for arm64 machines, which boot through GRUB (Debian ships no arm64 "
                    "iPXE), and GRUB cannot boot behind proxyDHCP", f"$.images.{name}.arch",
                    "use `dhcp.mode: full`, or set next-server to this boot server on the LAN's DHCP server "
                    "and `dhcp.mode: none`")


# The per-node boot config each site-wide choice of first loader reads (syslinux.efi reads pxelinux.cfg/).
_UEFI_LOADER_CONFIGS = {"ipxe": "ipxe", "grub": "grub", "syslinux": "pxelinux"}


def _check_boot_configs(site: Site, profiles: dict[str, Profile], image_config, reader: "Reader") -> None:
    """`boot_configs` leaves out only configs no machine of the site reads: GRUB's for Secure Boot
    (shim loads GRUB) and arm64 (GRUB only), the Pi's for Raspberry Pi image sets, the one the
    UEFI loader reads, and BIOS needs pxelinux or iPXE (undionly.kpxe). Each profile keeps one."""
    from .loaders import boots_raspberry_pis
    from .spec import secure_boot

    chosen = site.boot_configs
    if "boot_configs" not in site.doc.data:
        return
    where = site.doc.locate(("boot_configs",))

    def need(config: str, why: str, hint: str = "") -> None:
        if config not in chosen:
            reader.fail(where, f"boot_configs leaves out {config}, but {why}", "$.boot_configs",
                        hint or f"add {config} to boot_configs")

    signed = [name for name, profile in profiles.items() if secure_boot(site, profile).value]
    if site.secure_boot or signed:
        who = "the site sets secure_boot" if site.secure_boot else f"profile '{signed[0]}' sets secure_boot"
        need("grub", f"{who}, and Secure Boot machines boot shim, which loads GRUB")
    if not site.secure_boot:
        loader = site.dhcp.uefi_loader
        config = _UEFI_LOADER_CONFIGS[loader]
        need(config, f"UEFI machines are handed {loader} first (dhcp.uefi_loader), which reads it",
             f"add {config} to boot_configs, or set `dhcp.uefi_loader` to a loader whose config it has "
             f"(ipxe, grub; syslinux reads pxelinux's)")
    if "pxelinux" not in chosen and "ipxe" not in chosen:
        need("ipxe", "BIOS machines need pxelinux or iPXE (undionly.kpxe)")
    if image_config is not None:
        arm64 = next((name for name, image_set in image_config.images.items()
                      if image_set.arch == "arm64" and not image_set.firmware), None)
        if arm64:
            need("grub", f"image set '{arm64}' is for arm64 machines, which boot through GRUB only")
        if boots_raspberry_pis(image_config):
            pi = next(name for name, image_set in image_config.images.items() if image_set.firmware)
            need("raspberrypi", f"image set '{pi}' has Raspberry Pi firmware, and Pis read their own config")
    for name, profile in profiles.items():
        if not set(profile.loaders) & set(chosen):
            field = ("loaders",) if "loaders" in profile.doc.data else ()
            reader.fail(profile.doc.locate(field), f"profile '{name}' has loaders {', '.join(profile.loaders)}, "
                        f"none of them in site.yaml's boot_configs ({', '.join(chosen)})",
                        "$.loaders", "add one of the site's boot_configs to the profile's loaders")


def _profile_layers(profile: Profile, site_dir: Path, reader: "Reader") -> tuple[OsConfigLayer, ...]:
    """The profile's `.bu` files (in the order listed), then its `ignition`: parsed once per build."""
    from .confine import read_site_file

    layers = []
    for index, relative in enumerate(profile.ignition_files):
        where = ("ignition_files", index)
        try:
            data = read_site_file(site_dir, relative, profile.doc.locate(where), format_path(where))
            doc = load_yaml_bytes(data, reader.display(site_dir / relative))
            unresolved = resolve_doc(doc, site_dir)
            if unresolved:
                reader.problems.extend(unresolved)
                continue
            secrets = doc_problems(doc)  # a private key in a .bu file would be served
            if secrets:
                reader.problems.extend(secrets)
                continue
        except InputError as exc:
            reader.problems.extend(exc.problems)
            continue
        layers.append(OsConfigLayer(doc.data if isinstance(doc.data, dict) else {}, doc, ()))
    if profile.ignition is not None:
        layers.append(OsConfigLayer(profile.ignition.data, profile.ignition.doc, profile.ignition.path))
    return tuple(layers)


def _check_os_configs(site: Site, profiles: dict[str, Profile], profile_layers: dict, reader: "Reader") -> None:
    """Validate each Ignition profile's site and profile layers together, once: a mistake there
    is one problem, not one per node that uses the profile."""
    if not any(profile.os_config == "ignition" for profile in profiles.values()):
        return
    from .errors import RenderError
    from .osconfig.butane import ButaneLayer, build_ignition

    site_layers = [site.defaults.ignition] if site.defaults.ignition is not None else []
    for name, profile in profiles.items():
        if profile.os_config != "ignition":
            continue
        layers = [ButaneLayer(f.data, f.doc, tuple(f.path)) for f in site_layers]
        layers += [ButaneLayer(layer.data, layer.doc, layer.path) for layer in profile_layers[name]]
        try:
            build_ignition(layers, files_dir=site.directory, version=profile.ignition_version,
                           variant=profile.variant)
        except RenderError as exc:
            reader.problems.extend(p for p in exc.problems if p not in reader.problems)


def check_nodes_alone(nodes_dir: Path, site_dir: Path, reader: "Reader") -> None:
    """What can be checked in node files without a valid site: syntax, schema, keys, gateways,
    and a profile a node names itself (against the profile files that exist, valid or not)."""
    files = node_files(nodes_dir)
    reader.problems.extend(node_file_problems(files, reader.display))
    profile_names = frozenset(p.stem for p in _yaml_files(site_dir / "profiles"))
    for path in files:
        doc = reader.read(path, "node")
        if doc is None:
            continue
        if "profile" in doc.data:
            _check_profile_name(doc, doc.data["profile"], profile_names, site_dir, reader)
        _check_gateways(doc, [_build_interface(i) for i in doc.data["interfaces"]], reader)
        _check_keys(doc, (), reader)


def node_files(nodes_dir: Path) -> list[Path]:
    """The node files of a site, in name order (which decides who keeps a contested MAC)."""
    return _yaml_files(nodes_dir)


def load_node(path: Path, site_inputs: SiteInputs, reader: "Reader") -> Node | None:
    """Read and check one node file; None (with problems recorded) if it is invalid."""
    doc = reader.read(path, "node")
    if doc is None:
        return None
    before = len(reader.problems)
    node = _build_node(path.stem, doc, site_inputs.site.defaults, reader)
    _check_node(node, site_inputs.profile_names, site_inputs.site.directory, reader)
    _check_keys(doc, (), reader)
    return node if len(reader.problems) == before else None


def _yaml_files(directory: Path) -> list[Path]:
    if not directory.is_dir():
        return []
    return sorted(p for p in directory.iterdir() if p.suffix in (".yaml", ".yml") and not p.name.startswith("."))


class Reader:
    """Loads documents and collects problems instead of stopping at the first."""

    def __init__(self, display_root: Path):
        self.display_root = display_root.resolve()
        self.problems: list[Problem] = []

    def display(self, path: Path) -> str:
        try:  # the path as named, never where a symlink leads
            return str(Path(os.path.abspath(path)).relative_to(self.display_root))
        except ValueError:
            return str(path)

    def read(self, path: Path, kind: str, root: Path | None = None) -> SourceDoc | None:
        """Parse and schema-check one input file. It must be a regular file inside `root`
        (its directory by default): a symlink out of the site, a FIFO or a directory is a
        problem, and nothing of such a file is read or shown."""
        from .confine import read_site_file

        if not os.path.lexists(path):
            return None
        root = path.parent if root is None else root
        display = self.display(path)
        try:
            data = read_site_file(root, os.path.relpath(path, root), Location(display), "", what=f"{kind} file")
            doc = load_yaml_bytes(data, display)
        except InputError as exc:
            self.problems.extend(exc.problems)
            return None
        problems = resolve_doc(doc, root, kind)  # {secret:}, {env:}, {command:} become their values
        problems = problems or validate_doc(doc, kind)
        if kind in ("profile", "node") and not is_dns_label(path.stem):
            problems.append(Problem(Location(doc.file), f"file name {path.stem!r} is not a valid {kind} name",
                                    hint="use lowercase letters, digits and '-': it becomes part of paths and URLs"))
        self.problems.extend(problems)
        return None if problems else doc  # later checks only see documents that passed their schema

    def fail(self, location: Location, message: str, path: str = "", hint: str = "") -> None:
        self.problems.append(Problem(location, message, path, hint))

    def raise_if_any(self) -> None:
        if self.problems:
            raise InputError(self.problems)


def _fragment(doc: SourceDoc, data: dict, key: str, base: tuple = ()) -> Fragment | None:
    return Fragment(data[key], doc, base + (key,)) if key in data else None


def _build_site(doc: SourceDoc, site_dir: Path) -> Site:
    data = doc.data
    dhcp = data.get("dhcp", {})
    server = data.get("server", {})
    defaults = data.get("defaults", {})
    base_url = _with_slash(data["base_url"])
    return Site(
        directory=site_dir,
        name=data.get("name", site_dir.resolve().parent.name),
        base_url=base_url,
        tftp_server=ipaddress.IPv4Address(data["tftp_server"]),
        kernel_transport=data.get("kernel_transport", "http"),
        dhcp=DhcpSettings(
            mode=dhcp.get("mode", "proxy"),
            subnet=ipaddress.IPv4Network(dhcp["subnet"], strict=False) if "subnet" in dhcp else None,
            range=tuple(ipaddress.IPv4Address(a) for a in dhcp["range"]) if "range" in dhcp else None,
            interface=dhcp.get("interface"),
            uefi_loader=dhcp.get("uefi_loader", "ipxe"),
        ),
        server=ServerSettings(**server),
        defaults=Defaults(
            profile=defaults.get("profile"),
            ssh_authorized_keys=tuple(defaults.get("ssh_authorized_keys", ())),
            ignition=_fragment(doc, defaults, "ignition", ("defaults",)),
        ),
        doc=doc,
        exports=data.get("exports", {}),
        secure_boot=data.get("secure_boot", False),
        boot_configs=tuple(data.get("boot_configs", Site.boot_configs)),
    )


def _build_profile(name: str, doc: SourceDoc) -> Profile:
    data = doc.data
    return Profile(
        name=name,
        description=data.get("description", ""),
        images=data.get("images"),
        images_arm64=data.get("images_arm64"),
        loaders=tuple(data.get("loaders", ("pxelinux", "grub", "ipxe"))),
        os_config=data.get("os_config", "none"),
        ignition_version=data.get("ignition_version", DEFAULT_IGNITION_VERSION),
        variant=data.get("variant", "flatcar"),
        doc=doc,
        ignition=_fragment(doc, data, "ignition"),
        ignition_files=tuple(data.get("ignition_files", ())),
    )


def _build_node(name: str, doc: SourceDoc, defaults: Defaults, reader: Reader) -> Node:
    data = doc.data
    interfaces = tuple(_build_interface(i) for i in data["interfaces"])
    profile = first_of([Layer("site", {"profile": defaults.profile} if defaults.profile else {}, None, ()),
                        Layer("node", data, doc, ())], "profile", None).value
    if profile is None:
        reader.fail(doc.locate(()), "no profile: set `profile` here or `defaults.profile` in site.yaml", "$.profile")
    # Only what the node file itself says: spec.resolve layers it over the profile and site defaults.
    return Node(
        name=name,
        hostname=data.get("hostname", name),
        profile=profile or "",
        interfaces=interfaces,
        ssh_authorized_keys=tuple(data.get("ssh_authorized_keys", ())),
        doc=doc,
        ignition=_fragment(doc, data, "ignition"),
        arch=data.get("arch", "x86_64"),
        serial=data["serial"].lower() if "serial" in data else None,
    )


def _build_interface(data: dict) -> Interface:
    return Interface(
        mac=normalize_mac(data["mac"]),
        name=data.get("name"),
        address=ipaddress.IPv4Interface(data["address"]) if "address" in data else None,
        gateway=ipaddress.IPv4Address(data["gateway"]) if "gateway" in data else None,
        dns=tuple(ipaddress.IPv4Address(a) for a in data.get("dns", ())),
        pxe=data.get("pxe", True),
    )


def _image_config(site_doc: SourceDoc, site_dir: Path, reader: Reader):
    from .images import parse_image_config

    try:
        return parse_image_config(site_doc.data, site_doc, site_dir)
    except InputError as exc:
        reader.problems.extend(exc.problems)
        return None


def _check_image_references(profiles: dict[str, Profile], image_config, reader: Reader) -> None:
    """Each image set a profile names exists and is for the architecture of the field naming it."""
    if image_config is None:
        return
    image_sets = image_config.images
    for profile in profiles.values():
        for field, arch in (("images", "x86_64"), ("images_arm64", "arm64")):
            name = profile.image_set(arch)
            if name is None:
                continue
            if name not in image_sets:
                reader.fail(profile.doc.locate((field,)), f"unknown image set '{name}'", f"$.{field}",
                            _choices_hint(name, set(image_sets), "site.yaml `images`"))
            elif image_sets[name].arch != arch:
                reader.fail(profile.doc.locate((field,)), f"image set '{name}' is for {image_sets[name].arch} "
                            f"machines, but `{field}` boots {arch} machines", f"$.{field}",
                            "set `arch:` on the image set in site.yaml, or name another image set")


def _check_node(node: Node, profile_names: frozenset[str], site_dir: Path, reader: Reader) -> None:
    if node.profile:
        _check_profile_name(node.doc, node.profile, profile_names, site_dir, reader)
    _check_gateways(node.doc, node.interfaces, reader)


def _check_profile_name(doc: SourceDoc, name: str, profile_names: frozenset[str], site_dir: Path,
                        reader: Reader) -> None:
    """An unknown profile is reported with the file that would define it and the profiles there are."""
    if name in profile_names:
        return
    import difflib

    where = ("profile",) if "profile" in doc.data else ()
    close = difflib.get_close_matches(name, sorted(profile_names), n=1)
    guess = f"did you mean '{close[0]}'? " if close else ""
    existing = ", ".join(sorted(profile_names)) or "none yet"
    create = reader.display(site_dir / "profiles" / f"{name}.yaml")
    reader.fail(doc.locate(where), f"unknown profile '{name}'", "$.profile",
                f"{guess}To add it, create {create} (a copy of an existing profile is a good start); "
                f"profiles now: {existing}")


def _check_gateways(doc: SourceDoc, interfaces, reader: Reader) -> None:
    for i, iface in enumerate(interfaces):
        if iface.gateway and iface.address and iface.gateway not in iface.address.network:
            reader.fail(doc.locate(("interfaces", i, "gateway")),
                        f"gateway {iface.gateway} is outside {iface.address.network}",
                        format_path(("interfaces", i, "gateway")))


def _choices_hint(name: str, choices, where: str) -> str:
    import difflib

    close = difflib.get_close_matches(name, sorted(choices), n=1)
    if close:
        return f"did you mean '{close[0]}'?"
    return f"defined in {where}: {', '.join(sorted(choices)) or 'none'}"


class Claim(NamedTuple):
    """Something only one node may have (a MAC, an address, a host name) and where it was said.

    A plain tuple, because the build keeps every node's claims between runs."""

    kind: str
    value: str
    node: str
    file: str
    line: int
    column: int
    path: str

    @property
    def location(self) -> Location:
        return Location(self.file, self.line, self.column)


def node_claims(node: Node) -> tuple[Claim, ...]:
    wanted = [("hostname", node.hostname, ("hostname",))]
    if node.serial:
        wanted.append(("serial", node.serial, ("serial",)))
    for i, iface in enumerate(node.interfaces):
        wanted.append(("MAC", iface.mac, ("interfaces", i, "mac")))
        if iface.address:
            wanted.append(("address", str(iface.address.ip), ("interfaces", i, "address")))
    located = ((kind, value, node.doc.locate(path), path) for kind, value, path in wanted)
    return tuple(Claim(kind, value, node.name, loc.file, loc.line, loc.column, format_path(path))
                 for kind, value, loc, path in located)


def check_claims(claims: list[Claim], reader: Reader) -> None:
    """MACs, addresses and host names must each belong to one node only (first in name order keeps it)."""
    seen: dict[tuple[str, str], Claim] = {}
    for claim in sorted(map(Claim._make, claims), key=lambda c: c.node):
        first = seen.setdefault((claim.kind, claim.value), claim)
        if first is not claim:
            reader.fail(claim.location, f"{claim.kind} {claim.value} is also used by node '{first.node}' "
                        f"({first.location})", claim.path, "each node needs its own")


def _check_keys(doc: SourceDoc, base: tuple, reader: Reader) -> None:
    """Every ssh_authorized_keys entry must be a public key (never a private one)."""
    section = doc.data
    for key in base:
        section = section.get(key, {})
    for i, text in enumerate(section.get("ssh_authorized_keys", ())):
        problem = key_problem(text)
        if problem:
            path = base + ("ssh_authorized_keys", i)
            reader.fail(doc.locate(path), problem[0], format_path(path), problem[1])
