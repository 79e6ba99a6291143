"""Names that firmware asks for: MAC and IP spellings, and safe node names.

pxelinux, GRUB and iPXE each spell a machine's identity their own way; these
helpers are the one place that knows how.
"""
from __future__ import annotations

import ipaddress
import re

_HEX = "[0-9A-Fa-f]"
_MAC_FORMS = (
    re.compile(rf"^({_HEX}{{2}})(?::({_HEX}{{2}})){{5}}$"),  # aa:bb:cc:dd:ee:ff
    re.compile(rf"^({_HEX}{{2}})(?:-({_HEX}{{2}})){{5}}$"),  # AA-BB-CC-DD-EE-FF
    re.compile(rf"^{_HEX}{{4}}\.{_HEX}{{4}}\.{_HEX}{{4}}$"),  # aabb.ccdd.eeff (Cisco)
)
_DNS_LABEL = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")


def normalize_mac(text: str) -> str | None:
    """Return the MAC as lowercase colon form, or None if it is not a MAC."""
    if not isinstance(text, str) or not any(form.match(text) for form in _MAC_FORMS):
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
    return bool(_DNS_LABEL.match(name))
