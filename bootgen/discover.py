"""`bootgen discover`: machines that asked the boot server for files but have no node file.

A machine is known to dnsmasq by its MAC and its client class, to TFTP and
HTTP only by its address (bootgen.serverlogs reads the logs); the two are
joined by the address DHCP gave the MAC at the time of the request, or by a
file name that spells the MAC (pxelinux.cfg/01-<mac>, grub.cfg-01-<mac>,
ipxe/<mac>.ipxe). A Raspberry Pi says its serial number in its TFTP paths
(`7092246e/start4.elf`).
"""
from __future__ import annotations

import bisect
import re
import urllib.parse
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

from .errors import InputError, Location, Problem
from .naming import normalize_mac
from .serverlogs import (NO_LOG, DhcpEvent, Fetch, is_ip, read_dnsmasq_log, read_lines, read_nginx_log)

# Client system architecture (DHCP option 93, also spelled in the vendor class as
# PXEClient:Arch:NNNNN), from IANA's "Processor Architecture Types". 9 is EFI byte
# code there, but x86-64 firmware following RFC 4578's original table sends it.
ARCHITECTURES = {
    0: "bios", 6: "i386-efi", 7: "x86_64-efi", 9: "x86_64-efi", 10: "arm-efi", 11: "arm64-efi",
    15: "i386-efi-http", 16: "x86_64-efi-http", 18: "arm-efi-http", 19: "arm64-efi-http", 20: "bios-http",
    21: "arm-uboot", 22: "arm64-uboot", 25: "riscv32-efi", 27: "riscv64-efi", 28: "riscv64-efi-http",
}
RASPBERRY_PI = "raspberry-pi"
# Organisationally unique identifiers of Raspberry Pi boards' own Ethernet.
PI_OUIS = ("b8:27:eb", "dc:a6:32", "e4:5f:01", "28:cd:c1", "d8:3a:dd", "2c:cf:67")
PI_FIRMWARE = re.compile(r"(?:^|/)(?:bootcode\.bin|start\w*\.elf|fixup\w*\.dat)$")


# ---- machines -------------------------------------------------------------------------------------------


@dataclass
class Fetched:
    """One file a machine asked for: how often, when, and the last answer."""

    via: str
    path: str
    result: str
    count: int
    first_seen: datetime
    last_seen: datetime

    def as_dict(self) -> dict:
        return {"via": self.via, "path": self.path, "result": self.result, "count": self.count,
                "first_seen": self.first_seen.isoformat(), "last_seen": self.last_seen.isoformat()}


@dataclass
class Machine:
    """A machine seen in the logs, known by its MAC, else its Pi serial, else its address."""

    mac: str | None = None
    serial: str | None = None
    addresses: list[str] = field(default_factory=list)
    architectures: list[str] = field(default_factory=list)
    first_seen: datetime | None = None
    last_seen: datetime | None = None
    fetched: dict[tuple[str, str], Fetched] = field(default_factory=dict)
    node: str | None = None  # the node file that already describes it

    @property
    def ident(self) -> str:
        if self.mac:
            return f"{self.mac} (serial {self.serial})" if self.serial else self.mac
        return f"serial {self.serial}" if self.serial else f"address {self.addresses[-1]}"

    @property
    def arch(self) -> str:
        return ",".join(self.architectures) or "unknown"

    def seen(self, time: datetime, ip: str | None = None) -> None:
        self.first_seen = time if self.first_seen is None else min(self.first_seen, time)
        self.last_seen = time if self.last_seen is None else max(self.last_seen, time)
        if ip and ip not in self.addresses:
            self.addresses.append(ip)

    def add_arch(self, name: str) -> None:
        if name not in self.architectures:
            self.architectures.append(name)

    def add_fetch(self, fetch: Fetch, path: str) -> None:
        self.seen(fetch.time, fetch.ip)
        entry = self.fetched.get((fetch.via, path))
        if entry is None:
            self.fetched[(fetch.via, path)] = Fetched(fetch.via, path, fetch.result, 1, fetch.time, fetch.time)
            return
        entry.count += 1
        entry.first_seen = min(entry.first_seen, fetch.time)
        if fetch.time >= entry.last_seen:
            entry.last_seen, entry.result = fetch.time, fetch.result

    def as_dict(self) -> dict:
        return {"mac": self.mac, "serial": self.serial, "addresses": list(self.addresses),
                "architectures": list(self.architectures), "node": self.node,
                "first_seen": self.first_seen.isoformat() if self.first_seen else None,
                "last_seen": self.last_seen.isoformat() if self.last_seen else None,
                "fetched": [f.as_dict() for f in self.fetched_in_order()]}

    def fetched_in_order(self) -> list[Fetched]:
        return sorted(self.fetched.values(), key=lambda f: f.first_seen)  # stable: log order within a second


def architecture(vendor_class: str) -> str | None:
    """`PXEClient:Arch:00007:UNDI:003016` -> x86_64-efi (also HTTPClient:Arch:NNNNN)."""
    match = re.match(r"^(?:PXE|HTTP)Client:Arch:(\d{5})", vendor_class)
    if not match:
        return None
    code = int(match.group(1))
    return ARCHITECTURES.get(code, f"arch-{code}")


_MAC_IN_PATH = (
    re.compile(r"(?:^|/)pxelinux\.cfg/01-([0-9a-f]{2}(?:-[0-9a-f]{2}){5})$", re.I),
    re.compile(r"(?:^|/)grub\.cfg-01-([0-9a-f]{2}(?:-[0-9a-f]{2}){5})$", re.I),
    re.compile(r"(?:^|/)ipxe/([0-9a-f]{2}(?:-[0-9a-f]{2}){5})\.ipxe$", re.I),
    re.compile(r"(?:^|/)pixiecore/v1/boot/([0-9a-f]{2}(?::[0-9a-f]{2}){5})$", re.I),
)
_PI_SERIAL = re.compile(r"(?:^|/)([0-9a-f]{8})/[^/]+$")


def mac_in_path(path: str) -> str | None:
    """The MAC a boot loader spelled in the file name it asked for (its own), if any."""
    for pattern in _MAC_IN_PATH:
        match = pattern.search(path)
        if match:
            return normalize_mac(match.group(1))
    return None


def pi_serial_in_path(path: str) -> str | None:
    """A Raspberry Pi asks for `<serial>/<file>` first: eight lowercase hex digits."""
    match = _PI_SERIAL.search(path)
    return match.group(1) if match else None


class Leases:
    """Which machine had an address when, by one kind of name (a MAC: from DHCP answers and file
    names that spell it; a Pi serial: from the TFTP paths that carry it)."""

    def __init__(self):
        self._by_ip: dict[str, list[tuple[datetime, str]]] = {}

    def bind(self, ip: str, name: str, time: datetime) -> None:
        bisect.insort(self._by_ip.setdefault(ip, []), (time, name))

    def holder_at(self, ip: str, time: datetime) -> str | None:
        """The name bound to ip last at or before `time`; else the first bound after it
        (one second of log resolution puts a request and its lease in either order)."""
        bindings = self._by_ip.get(ip, [])
        index = bisect.bisect_right(bindings, (time, "\uffff"))
        if index:
            return bindings[index - 1][1]
        return bindings[0][1] if bindings else None


# DHCP answers that mean "this MAC has this address now".
_BINDING_KINDS = ("DHCPACK", "PXE", "BOOTP", "DHCPINFORM")


@dataclass(frozen=True)
class KnownNodes:
    """MACs and static addresses the node files already claim, to their node names."""

    macs: dict[str, str]
    addresses: dict[str, str]


class Correlator:
    """Joins DHCP, TFTP and HTTP events into machines."""

    def __init__(self, known: KnownNodes, ignored_ips: frozenset[str]):
        self.known = known
        self.ignored_ips = ignored_ips
        self.machines: dict[str, Machine] = {}
        self.leases = Leases()
        self.serials = Leases()

    def machine(self, key: str) -> Machine:
        return self.machines.setdefault(key, Machine())

    def add_dhcp(self, events: list[DhcpEvent], start: datetime | None = None) -> None:
        """Machines from DHCP events since `start`; leases from all of them (a request after
        `start` may use an address leased before)."""
        for event in events:
            if event.ip and event.kind in _BINDING_KINDS:
                self.leases.bind(event.ip, event.mac, event.time)
            if start is not None and event.time < start:
                continue
            machine = self.machine(event.mac)
            machine.mac = event.mac
            machine.seen(event.time, event.ip if event.kind in _BINDING_KINDS else None)
            arch = architecture(event.vendor_class)
            if arch:
                machine.add_arch(arch)

    def bind_spelled_names(self, fetches: list[Fetch], relative) -> None:
        """Addresses to the MACs and Pi serials the requested file names spell."""
        for fetch in fetches:
            path = relative(fetch)
            mac = mac_in_path(path)
            if mac:
                self.leases.bind(fetch.ip, mac, fetch.time)
            serial = pi_serial_in_path(path) if fetch.via == "tftp" else None
            if serial:
                self.serials.bind(fetch.ip, serial, fetch.time)

    def add_fetches(self, fetches: list[Fetch], relative) -> None:
        for fetch in fetches:
            if fetch.ip in self.ignored_ips:
                continue
            path = relative(fetch)
            mac = self.leases.holder_at(fetch.ip, fetch.time)
            own_serial = pi_serial_in_path(path) if fetch.via == "tftp" else None
            # Without a MAC, a Pi's start4.elf after <serial>/start4.elf is still that Pi's.
            serial = own_serial if mac else self.serials.holder_at(fetch.ip, fetch.time)
            key = mac or (f"serial:{serial}" if serial else f"ip:{fetch.ip}")
            machine = self.machine(key)
            machine.mac = mac
            machine.serial = machine.serial or serial
            machine.add_fetch(fetch, path)

    def finish(self) -> list[Machine]:
        for machine in self.machines.values():
            if machine.serial or (machine.mac and machine.mac.startswith(PI_OUIS)) or any(
                    PI_FIRMWARE.search(path) for _, path in machine.fetched):
                machine.architectures = [RASPBERRY_PI]  # a Pi's boot ROM claims to be x86 BIOS
            machine.node = self._node_of(machine)
        return sorted(self.machines.values(), key=lambda m: (m.first_seen, m.ident))

    def _node_of(self, machine: Machine) -> str | None:
        if machine.mac:
            return self.known.macs.get(machine.mac)
        return next((self.known.addresses[ip] for ip in machine.addresses if ip in self.known.addresses), None)


# ---- the command ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Discovery:
    machines: tuple[Machine, ...]
    notes: tuple[str, ...]

    def as_dict(self) -> dict:
        return {"machines": [m.as_dict() for m in self.machines], "notes": list(self.notes)}

    def text(self) -> str:
        """The table, each machine followed by what it fetched (the notes are not part of it)."""
        lines: list[str] = []
        if not self.machines:
            return "no unknown machines in the logs"
        header = ("MACHINE", "ARCH", "ADDRESS", "FIRST SEEN", "LAST SEEN", "NODE")
        rows = [header] + [(m.ident, m.arch, m.addresses[-1] if m.addresses else "-", _shown_time(m.first_seen),
                            _shown_time(m.last_seen), m.node or "-") for m in self.machines]
        widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
        for row, machine in zip(rows, (None, *self.machines)):
            lines.append("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())
            for fetched in machine.fetched_in_order() if machine else ():
                times = f" x{fetched.count}" if fetched.count > 1 else ""
                lines.append(f"    {fetched.via:<4}  {fetched.path}  {fetched.result}{times}")
        unknown = [m for m in self.machines if m.node is None and m.mac]
        if unknown:
            lines.append(f"add one with: bootgen add {unknown[0].mac} --profile PROFILE")
        return "\n".join(lines)


def _shown_time(time: datetime | None) -> str:
    return time.astimezone().strftime("%Y-%m-%d %H:%M:%S") if time else "-"


def parse_since(text: str, now: datetime) -> datetime:
    """`--since`: a duration back from now (90s, 30m, 2h, 7d) or a date and time (local unless zoned)."""
    match = re.fullmatch(r"(\d{1,9})\s*([smhdw])", text.strip())
    try:
        if match:
            unit = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}[match.group(2)]
            return now - timedelta(**{unit: int(match.group(1))})
        stamp = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except (ValueError, OverflowError):  # not a time, or further back than year 1
        raise InputError(Problem(Location("bootgen discover"), f"{text!r} is neither a duration nor a time",
                                 "--since", "write 2h, 30m, 7d, 2026-11-30 or 2026-11-30T21:00")) from None
    return stamp if stamp.tzinfo else stamp.replace(tzinfo=now.tzinfo)


def discover(site_dir: Path, nodes_dir: Path, dnsmasq_logs: list[str], nginx_logs: list[str], *,
             since: str | None = None, include_known: bool = False, now: datetime | None = None,
             env: str | None = None) -> Discovery:
    """Machines in the logs, unknown ones only unless include_known (then marked with their node).
    HTTP requests count when they are under the base_url of the site (or of its environment `env`)."""
    now = now or datetime.now().astimezone()
    start = parse_since(since, now) if since else None
    site, known, notes = _site_and_known(site_dir, nodes_dir, env)
    dnsmasq = [(path, read_dnsmasq_log(read_lines(path, "--dnsmasq-log"), now)) for path in dnsmasq_logs
               if path != NO_LOG]
    nginx = [(path, read_nginx_log(read_lines(path, "--nginx-log"))) for path in nginx_logs if path != NO_LOG]
    notes += _log_notes(dnsmasq, nginx)
    tftp_roots = [root for _, log in dnsmasq for root in log.tftp_roots] + [site.server.root]
    relative = _relative_path(tftp_roots, urllib.parse.urlsplit(site.base_url).path)
    fetches = [f for _, log in dnsmasq for f in log.fetches] + [f for _, log in nginx for f in log.fetches]
    fetches = [f for f in fetches if relative(f) is not None and (start is None or f.time >= start)]
    fetches.sort(key=lambda f: f.time)  # stable: within one second, TFTP (the loader) before HTTP
    correlator = Correlator(known, _server_addresses(site))
    correlator.add_dhcp([e for _, log in dnsmasq for e in log.dhcp], start)
    correlator.bind_spelled_names(fetches, relative)
    correlator.add_fetches(fetches, relative)
    machines = [m for m in correlator.finish() if include_known or m.node is None]
    return Discovery(tuple(machines), tuple(notes))


def _site_and_known(site_dir: Path, nodes_dir: Path, env: str | None):
    from .load import load_inputs

    node_problems: list[Problem] = []
    inputs = load_inputs(site_dir, nodes_dir, node_problems=node_problems, env=env)
    macs, addresses = {}, {}
    for node in inputs.nodes:
        for iface in node.interfaces:
            macs.setdefault(iface.mac, node.name)
            if iface.address is not None:
                addresses.setdefault(str(iface.address.ip), node.name)
    notes = []
    broken = sorted({p.location.file for p in node_problems})
    if broken:
        notes.append(f"note: {len(broken)} node files have problems and were not read ({', '.join(broken)}); "
                     "run `bootgen check`. Their machines may be listed as unknown.")
    return inputs.site, KnownNodes(macs, addresses), notes


def _log_notes(dnsmasq, nginx) -> list[str]:
    notes = []
    for path, log in dnsmasq:
        if log.dnsmasq_lines == 0:
            notes.append(f"note: {path} has no dnsmasq lines")
        elif log.dhcp and not any(event.xid for event in log.dhcp):
            notes.append(f"note: {path} has no log-dhcp lines, so no architectures: "
                         "run dnsmasq with log-dhcp (the generated dnsmasq.conf has it)")
    for path, log in nginx:
        if log.skipped:
            notes.append(f"note: {path}: {log.skipped} lines not in nginx's combined format were skipped")
    return notes


def _relative_path(tftp_roots: list[str], url_path: str):
    """A function giving a fetch's path inside the tree (None for HTTP requests outside base_url)."""
    roots = sorted({root.rstrip("/") + "/" for root in tftp_roots}, key=len, reverse=True)
    prefix = url_path if url_path.endswith("/") else url_path + "/"

    def relative(fetch: Fetch) -> str | None:
        if fetch.via == "http":
            return fetch.path[len(prefix):] if fetch.path.startswith(prefix) else None
        return next((fetch.path[len(root):] for root in roots if fetch.path.startswith(root)),
                    fetch.path.lstrip("/"))

    return relative


def _server_addresses(site) -> frozenset[str]:
    """The boot server's own addresses (its health checks are not machines booting), and loopback."""
    own = {str(site.tftp_server), "127.0.0.1", "::1"}
    host = urllib.parse.urlsplit(site.base_url).hostname
    if host and is_ip(host):
        own.add(host)
    return frozenset(own)
