"""Names that firmware asks for: MAC and IP spellings, and safe node names.

pxelinux, GRUB and iPXE each spell a machine's identity their own way; these
helpers are the one place that knows how.
"""
from __future__ import annotations

import ipaddress
import os
import re
from typing import Any, Callable, Iterable

_HEX = "[0-9A-Fa-f]"
# Matched with fullmatch: `$` would also match before a trailing newline.
_MAC_FORMS = (
    re.compile(rf"({_HEX}{{2}})(?::({_HEX}{{2}})){{5}}"),  # aa:bb:cc:dd:ee:ff
    re.compile(rf"({_HEX}{{2}})(?:-({_HEX}{{2}})){{5}}"),  # AA-BB-CC-DD-EE-FF
    re.compile(rf"{_HEX}{{4}}\.{_HEX}{{4}}\.{_HEX}{{4}}"),  # aabb.ccdd.eeff (Cisco)
)
_DNS_LABEL = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")


def normalize_mac(text: str) -> str | None:
    """Return the MAC as lowercase colon form, or None if it is not a MAC."""
    if not isinstance(text, str) or not any(form.fullmatch(text) for form in _MAC_FORMS):
        return None
    digits = re.sub(r"[^0-9A-Fa-f]", "", text).lower()
    return ":".join(digits[i:i + 2] for i in range(0, 12, 2))


def mac_hyphens(mac: str) -> str:
    """`aa:bb:..` -> `aa-bb-..`: the spelling of iPXE's ${mac:hexhyp}."""
    return mac.replace(":", "-")


def pxelinux_mac_name(mac: str) -> str:
    """pxelinux/GRUB per-MAC file name: ARP type 01 plus the hyphenated MAC."""
    return "01-" + mac_hyphens(mac)


def hex_ip(address: ipaddress.IPv4Address) -> str:
    """10.0.0.70 -> 0A000046, the name pxelinux and GRUB try after the MAC."""
    return f"{int(address):08X}"


def is_dns_label(name: str) -> bool:
    """True for a single DNS label (RFC 1123): also safe as a path segment."""
    return isinstance(name, str) and bool(_DNS_LABEL.fullmatch(name))


NODE_FILE_SUFFIXES = (".yaml", ".yml")


def node_name_of(file_name: str) -> str | None:
    """The node a file in nodes/ defines ("x" for x.yaml and for x.yml); None for any other
    file, and for hidden files (editors' swap and backup files start with a dot)."""
    if file_name.startswith(".") or not file_name.endswith(NODE_FILE_SUFFIXES):
        return None
    return file_name.rsplit(".", 1)[0]


def node_file_problems(paths: Iterable, display: Callable[[Any], str] = str) -> list:
    """Problems with the list of node files itself, whatever is in them: two files that
    define one node (x.yaml and x.yml). One problem per extra file, at that file, naming
    the first in name order, so a clean build and an incremental one refuse alike
    (neither may pick one of the two). `display` turns a path into how it is shown."""
    from .errors import Location, Problem

    by_name: dict[str, list] = {}
    for path in paths:
        name = node_name_of(os.path.basename(os.fspath(path)))
        if name is not None:
            by_name.setdefault(name, []).append(path)
    problems = []
    for name, files in sorted(by_name.items()):
        if len(files) < 2:
            continue
        first, *others = sorted(files, key=lambda p: os.path.basename(os.fspath(p)))
        for other in others:
            problems.append(Problem(
                Location(display(other)), f"node {name!r} is also defined by {display(first)}",
                hint="a node is one file: keep either the .yaml or the .yml file and remove the other"))
    return problems
