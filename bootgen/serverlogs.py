"""Server logs as events: what dnsmasq and nginx say about the machines that asked them for files.

dnsmasq's log (the lines `log-dhcp` adds, and its TFTP lines) as dnsmasq
writes it to its own file (`log-facility=FILE`) or as syslog and the journal
spell it, and nginx's access log in its `combined` (or `common`) format.
Lines this module does not understand are skipped, never fatal: logs are
written by other programs and rotated, truncated or mixed with other daemons.
"""
from __future__ import annotations

import ipaddress
import re
import urllib.parse
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from .errors import LogError, Location, Problem
from .naming import normalize_mac

NO_LOG = "none"  # the option value that reads no log of that kind

_MONTHS = {name: i for i, name in enumerate(
    ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"), 1)}
_MAC = r"[0-9A-Fa-f]{2}(?::[0-9A-Fa-f]{2}){5}"
_IPV4 = r"\d{1,3}(?:\.\d{1,3}){3}"


# ---- events ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DhcpEvent:
    """One DHCP line about one client: what it asked for and, once known, its address."""

    time: datetime
    kind: str  # DHCPDISCOVER, DHCPACK, PXE, ...
    mac: str
    ip: str | None
    xid: str | None
    vendor_class: str = ""  # announced by the transaction's earlier lines
    user_class: str = ""


@dataclass(frozen=True)
class Fetch:
    """One file a client asked for over TFTP or HTTP, and how the server answered."""

    time: datetime
    via: str  # "tftp" or "http"
    ip: str
    path: str
    result: str  # "sent", "not found", "failed", or the HTTP status


# ---- dnsmasq --------------------------------------------------------------------------------------------

# dnsmasq's own log file (log-facility=FILE): "Nov 30 21:14:22 dnsmasq-dhcp[3855]: ..."; syslog adds a
# host name after the time, and RFC 3339 time stamps (rsyslog on Debian 12, `journalctl -o short-iso`).
_SYSLOG_PREFIX = re.compile(
    r"^(?:(?P<iso>\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?(?:Z|[+-]\d\d:?\d\d)?)"
    r"|(?P<month>[A-Z][a-z]{2}) +(?P<day>\d{1,2}) (?P<clock>\d\d:\d\d:\d\d))"
    r" (?:\S+ )?(?P<program>dnsmasq(?:-dhcp|-tftp)?)\[\d+\]: (?P<message>.*)$")
_DHCP = re.compile(
    rf"^(?:(?P<xid>\d+) )?(?P<kind>DHCP[A-Z]+|PXE|BOOTP)\([^)]*\) (?:(?P<ip>{_IPV4}) )?(?P<mac>{_MAC})(?:\s|$)")
_CLASS = re.compile(r"^(?P<xid>\d+) (?P<which>vendor|user) class: (?P<value>.*?)\s*$")
_TFTP = re.compile(
    rf"^(?:sent (?P<sent>\S+) to (?P<sent_ip>{_IPV4})"
    rf"|file (?P<missing>\S+) not found(?: for (?P<missing_ip>{_IPV4}))?"
    rf"|failed sending (?P<failed>\S+) to (?P<failed_ip>{_IPV4}))\s*$")
_TFTP_ROOT = re.compile(r"^TFTP root is (?P<root>\S+)")


@dataclass
class DnsmasqLog:
    """What one dnsmasq log said, in order."""

    dhcp: list[DhcpEvent] = field(default_factory=list)
    classes: dict[str, dict[str, str]] = field(default_factory=dict)  # xid -> the classes it announced last
    fetches: list[Fetch] = field(default_factory=list)
    tftp_roots: list[str] = field(default_factory=list)
    dnsmasq_lines: int = 0


def syslog_time(match: re.Match, now: datetime) -> datetime | None:
    """The time of a syslog-style line. A time without a year is in the last twelve months before
    `now` (a day of slack for clocks), one without a zone in the local zone, like `now`'s."""
    try:
        if match["iso"]:
            stamp = datetime.fromisoformat(match["iso"].replace("Z", "+00:00"))
            return stamp if stamp.tzinfo else stamp.replace(tzinfo=now.tzinfo)
        hour, minute, second = map(int, match["clock"].split(":"))
        stamp = now.replace(month=_MONTHS[match["month"]], day=int(match["day"]), hour=hour, minute=minute,
                            second=second, microsecond=0)
    except (KeyError, ValueError):
        return None
    if stamp > now + timedelta(days=1):
        try:
            stamp = stamp.replace(year=stamp.year - 1)
        except ValueError:  # 29 February of a leap year, read in the year after
            return None
    return stamp


def parse_dnsmasq_line(line: str, now: datetime, log: DnsmasqLog) -> None:
    """Add what one line of a dnsmasq log says to `log`; lines about anything else are ignored."""
    prefix = _SYSLOG_PREFIX.match(line.rstrip("\r\n"))
    if not prefix:
        return
    time = syslog_time(prefix, now)
    if time is None:
        return
    log.dnsmasq_lines += 1
    message = prefix["message"]
    if prefix["program"] == "dnsmasq-tftp":
        _tftp_line(message, time, log)
    elif prefix["program"] == "dnsmasq-dhcp":
        _dhcp_line(message, time, log)


def _dhcp_line(message: str, time: datetime, log: DnsmasqLog) -> None:
    event = _DHCP.match(message)
    if event:
        mac = normalize_mac(event["mac"])
        if mac and (event["ip"] is None or _is_ipv4(event["ip"])):
            classes = log.classes.get(event["xid"], {}) if event["xid"] else {}
            log.dhcp.append(DhcpEvent(time, event["kind"], mac, event["ip"], event["xid"], **classes))
        return
    announced = _CLASS.match(message)
    if announced:  # dnsmasq logs a transaction's classes before the line with its MAC
        which = "vendor_class" if announced["which"] == "vendor" else "user_class"
        log.classes.setdefault(announced["xid"], {})[which] = announced["value"]


def _tftp_line(message: str, time: datetime, log: DnsmasqLog) -> None:
    root = _TFTP_ROOT.match(message)
    if root:
        log.tftp_roots.append(root["root"])
        return
    transfer = _TFTP.match(message)
    if not transfer:
        return
    for result, key in (("sent", "sent"), ("not found", "missing"), ("failed", "failed")):
        if transfer[key] is not None:
            ip = transfer[f"{key}_ip"]
            if ip is not None and _is_ipv4(ip):  # dnsmasq before 2.90 did not say who missed a file
                log.fetches.append(Fetch(time, "tftp", ip, transfer[key], result))


def read_dnsmasq_log(lines, now: datetime) -> DnsmasqLog:
    """Every DHCP, class and TFTP event of a dnsmasq log (its own file, syslog or journalctl output)."""
    log = DnsmasqLog()
    for line in lines:
        parse_dnsmasq_line(line, now, log)
    return log


# ---- nginx ----------------------------------------------------------------------------------------------

# nginx's `combined` format (its default, and what the generated nginx.conf inherits); `common` is its prefix.
_COMBINED = re.compile(
    r'^(?P<ip>\S+) \S+ \S+ \[(?P<time>[^\]]+)\] "(?P<request>[^"]*)" (?P<status>\d{3}) (?:\d+|-)'
    r'(?: "[^"]*" "[^"]*")?')


@dataclass
class NginxLog:
    fetches: list[Fetch] = field(default_factory=list)
    skipped: int = 0  # lines not in the combined format


def parse_nginx_line(line: str) -> Fetch | None | bool:
    """A Fetch for a GET or HEAD in combined format; None for another request (a POST, a TLS
    handshake sent to the HTTP port); False for a line that is not in the format at all."""
    match = _COMBINED.match(line.rstrip("\r\n"))
    if not match:
        return False
    try:
        time = datetime.strptime(match["time"], "%d/%b/%Y:%H:%M:%S %z")
    except ValueError:
        return False
    if not is_ip(match["ip"]):
        return False
    words = match["request"].split(" ")
    if len(words) != 3 or words[0] not in ("GET", "HEAD") or not words[1].startswith("/"):
        return None
    path = urllib.parse.unquote(urllib.parse.urlsplit(words[1]).path)
    return Fetch(time, "http", match["ip"], path, match["status"])


def read_nginx_log(lines) -> NginxLog:
    log = NginxLog()
    for line in lines:
        if not line.strip():
            continue
        fetch = parse_nginx_line(line)
        if fetch is False:
            log.skipped += 1
        elif fetch is not None:
            log.fetches.append(fetch)
    return log


# ---- reading files -------------------------------------------------------------------------------------


def read_lines(path: str, option: str):
    """The lines of a log file ('-': standard input), read as they are used; a file that cannot
    be opened or read is a LogError naming it."""
    import sys

    if path == "-":
        return (line for line in sys.stdin)
    try:
        handle = open(path, "rb")
    except OSError as exc:
        raise _unreadable(path, option, exc) from None
    return _decoded(handle, path, option)


def _decoded(handle, path: str, option: str):
    with handle:
        try:
            for raw in handle:
                yield raw.decode("utf-8", errors="replace")
        except OSError as exc:  # an I/O error or a directory, found on the first read
            raise _unreadable(path, option, exc) from None


def _unreadable(path: str, option: str, exc: OSError) -> LogError:
    hint = (f"pass {option} FILE (or {option} {NO_LOG} to read none)" if option == "--nginx-log" else
            f"run dnsmasq with --log-facility=FILE and pass {option} FILE, or pipe "
            f"`journalctl -o short-iso -t dnsmasq-dhcp -t dnsmasq-tftp` into {option} -")
    return LogError(Problem(Location(path), f"cannot read this log: {exc.strerror or exc}", option, hint))


def _is_ipv4(text: str) -> bool:
    try:
        ipaddress.IPv4Address(text)
    except ValueError:
        return False
    return True


def is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True
