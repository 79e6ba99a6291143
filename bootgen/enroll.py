"""`bootgen add`: write the node file for a new machine, checked as `bootgen check` would.

The file is composed from validated values, read back through the same loader
a build uses (with the site and every other node, so a MAC, address or host
name another node claims is refused with that node named), and only then
linked into nodes/ under its final name: a file that already exists is never
replaced, even by a concurrent `add`. A new node boots its local disk unless
told otherwise, so adding a machine never wipes it by surprise.
"""
from __future__ import annotations

import ipaddress
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from .errors import InputError, Location, OutputError, Problem
from .naming import NODE_FILE_SUFFIXES, is_dns_label, normalize_mac
from .write import fsync_path

BOOT_STATES = ("local", "install", "live")
DEFAULT_BOOT = "local"
_WHERE = Location("bootgen add")
_PI_SERIAL = re.compile(r"[0-9A-Fa-f]{8}")
# pxelinux's per-MAC file name (ARP type 01, then the MAC), which is how seed 003's probe printed a PC.
_PXELINUX_NAME = re.compile(r"^01-(?=[0-9A-Fa-f]{2}(?:-[0-9A-Fa-f]{2}){5}$)")


@dataclass(frozen=True)
class NewNode:
    """What `bootgen add` was asked to write, after its own checks."""

    name: str
    mac: str
    profile: str | None = None
    boot: str = DEFAULT_BOOT
    address: ipaddress.IPv4Interface | None = None
    gateway: ipaddress.IPv4Address | None = None
    dns: tuple[ipaddress.IPv4Address, ...] = ()

    def yaml(self) -> str:
        """The node file. Every value was validated to a form that needs no YAML quoting."""
        lines = ["# Written by `bootgen add`. boot: local boots the local disk; set boot: install to install.",
                 f"profile: {self.profile}" if self.profile else None,
                 f"boot: {self.boot}",
                 "interfaces:",
                 f"  - mac: {self.mac}",
                 f"    address: {self.address.with_prefixlen}" if self.address else None,
                 f"    gateway: {self.gateway}" if self.gateway else None,
                 f"    dns: [{', '.join(map(str, self.dns))}]" if self.dns else None]
        return "\n".join(line for line in lines if line is not None) + "\n"


def parse_request(machine: str, *, name: str | None = None, profile: str | None = None, boot: str = DEFAULT_BOOT,
                  address: str | None = None, gateway: str | None = None, dns: tuple[str, ...] = ()) -> NewNode:
    """Check each value for what it is; all problems together in one InputError."""
    problems: list[Problem] = []

    def fail(option: str, message: str, hint: str = "") -> None:
        problems.append(Problem(_WHERE, message, option, hint))

    mac = normalize_mac(_PXELINUX_NAME.sub("", machine))
    if mac is None:
        if _PI_SERIAL.fullmatch(machine):
            fail("MACHINE", f"{machine!r} looks like a Raspberry Pi serial number; node files name machines "
                 "by MAC only", "give the Pi's Ethernet MAC (`bootgen discover` shows it beside the serial)")
        else:
            fail("MACHINE", f"{machine!r} is not a MAC address",
                 "write aa:bb:cc:dd:ee:ff, AA-BB-CC-DD-EE-FF, aabb.ccdd.eeff or pxelinux's 01-aa-bb-cc-dd-ee-ff")
    node_name = name or (f"node-{mac.replace(':', '')[6:]}" if mac else "")
    if name is not None and not is_dns_label(name):
        fail("--name", f"{name!r} is not a valid node name",
             "use lowercase letters, digits and '-': it becomes a file name, part of URLs and the host name")
    if profile is not None and not is_dns_label(profile):
        fail("--profile", f"{profile!r} is not a profile name", "profiles are site/profiles/<name>.yaml")
    if boot not in BOOT_STATES:
        fail("--boot", f"{boot!r} is not a boot state", f"one of {', '.join(BOOT_STATES)}")
    iface = _interface(address, fail)
    gw = _address(gateway, "--gateway", fail)
    servers = tuple(a for a in (_address(d, "--dns", fail) for d in dns) if a is not None)
    if (gateway or dns) and not address:
        fail("--gateway" if gateway else "--dns", "a gateway or DNS server needs a static address",
             "add --address CIDR, or leave both out for DHCP")
    if iface and gw and gw not in iface.network:
        fail("--gateway", f"gateway {gw} is outside {iface.network}")
    if problems:
        raise InputError(problems)
    return NewNode(node_name, mac, profile, boot, iface, gw, servers)


def _interface(text: str | None, fail) -> ipaddress.IPv4Interface | None:
    if text is None:
        return None
    if "/" not in text:
        fail("--address", f"{text!r} has no prefix length", "write the address in CIDR form, e.g. 192.168.1.4/24")
        return None
    try:
        iface = ipaddress.IPv4Interface(text)
    except ValueError:
        fail("--address", f"{text!r} is not an IPv4 address with a prefix length", "e.g. 192.168.1.4/24")
        return None
    if iface.network.prefixlen < 31 and iface.ip in (iface.network.network_address, iface.network.broadcast_address):
        fail("--address", f"{text} is the {'network' if iface.ip == iface.network.network_address else 'broadcast'}"
             f" address of {iface.network}", "give the machine's own address")
        return None
    return iface


def _address(text: str | None, option: str, fail) -> ipaddress.IPv4Address | None:
    if text is None:
        return None
    try:
        return ipaddress.IPv4Address(text)
    except ValueError:
        fail(option, f"{text!r} is not an IPv4 address")
        return None


def add_node(site_dir: Path, nodes_dir: Path, new: NewNode, out: Path = Path("build")) -> Path:
    """Write nodes/<name>.yaml for `new` once the loader accepted it beside the site and every
    other node and it rendered as `bootgen check` renders it (images from the cache under `out`'s
    state only); refuse an existing file or anything another node claims. Returns the path."""
    from .load import Reader, load_site

    target = nodes_dir / f"{new.name}.yaml"
    reader = Reader(Path.cwd())
    site_inputs = load_site(site_dir, nodes_dir, reader)  # also says so when nodes/ is missing
    _refuse_existing(nodes_dir, new.name)
    try:
        staging = Path(tempfile.mkdtemp(prefix=".add-", dir=nodes_dir))  # hidden: no build reads it
        try:
            staged = staging / target.name
            staged.write_text(new.yaml(), encoding="utf-8")
            node = _check_with_site(site_inputs, reader, nodes_dir, staged, target)
            _check_renders(site_dir, nodes_dir, out, site_inputs, node, reader.display(staged), reader.display(target))
            _link_into_place(staged, target, nodes_dir, new.name)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    except OSError as exc:
        raise OutputError(Problem(Location(str(target)), f"cannot write the node file: {exc.strerror or exc}")) from None
    return target


def _link_into_place(staged: Path, target: Path, nodes_dir: Path, name: str) -> None:
    with open(staged, "rb") as handle:
        os.fsync(handle.fileno())
    try:
        os.link(staged, target)  # atomic, and never replaces a file that appeared meanwhile
    except FileExistsError:
        _refuse_existing(nodes_dir, name)
        raise
    fsync_path(nodes_dir)


def _refuse_existing(nodes_dir: Path, name: str) -> None:
    for suffix in NODE_FILE_SUFFIXES:
        existing = nodes_dir / f"{name}{suffix}"
        if os.path.lexists(existing):
            raise InputError(Problem(Location(str(existing)), f"node '{name}' already exists", "--name",
                                     "edit that file, or pass --name to add the machine under another name"))


def _check_with_site(site_inputs, reader, nodes_dir: Path, staged: Path, target: Path):
    """The loader's verdict on the staged file with the site and the other nodes; problems are
    reported at the file's final name. Problems other node files already have do not block it."""
    from .load import Reader, load_node, node_files

    node = load_node(staged, site_inputs, reader)
    if node is None:
        raise InputError([_at(problem, reader.display(staged), reader.display(target)) for problem in reader.problems])
    others = Reader(Path.cwd())
    existing = [n for n in (load_node(path, site_inputs, others) for path in node_files(nodes_dir)) if n]
    clashes = list(_clashing_claims(node, existing))
    if clashes:
        raise InputError([Problem(Location(reader.display(target)),
                                  f"{mine.kind} {mine.value} is already used by node '{theirs.node}' "
                                  f"({theirs.file}:{theirs.line}:{theirs.column})", mine.path,
                                  f"each node needs its own; `bootgen explain {theirs.node}` shows that node")
                          for mine, theirs in clashes])
    return node


def _check_renders(site_dir: Path, nodes_dir: Path, out: Path, site_inputs, node, staged: str, target: str) -> None:
    """Render the new node as `bootgen check` does (a profile may need more than the loader checks,
    such as Ubuntu's password hash); its problems are reported at the file's final name."""
    from .build import Paths, _placed_files, _resolve
    from .errors import RenderError
    from .model import Inputs
    from .render import render

    inputs = Inputs(site_inputs.site, site_inputs.profiles, (node,), site_inputs.image_config,
                    site_inputs.templates_dir, site_inputs.profile_layers)
    images = _resolve(inputs, Paths(site_dir, nodes_dir, out), False, False)
    try:
        render(inputs, images, display_root=Path.cwd(), extra_files=_placed_files(images, inputs))
    except RenderError as exc:
        raise InputError([_at(problem, staged, target) for problem in exc.problems]) from None


def _clashing_claims(node, existing):
    from .load import node_claims

    claimed = {(c.kind, c.value): c for other in existing for c in node_claims(other)}
    for mine in node_claims(node):
        theirs = claimed.get((mine.kind, mine.value))
        if theirs is not None:
            yield mine, theirs


def _at(problem: Problem, staged: str, target: str) -> Problem:
    from dataclasses import replace

    if problem.location.file != staged:
        return problem
    return replace(problem, location=replace(problem.location, file=target))
