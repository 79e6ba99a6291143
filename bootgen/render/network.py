"""systemd-networkd files for static addresses (Ignition and CoreOS cloud-config both write them)."""
from __future__ import annotations

from ..model import Interface


def networkd_file_name(index: int, iface: Interface) -> str:
    return f"/etc/systemd/network/{10 + index:02d}-bootgen-{iface.mac.replace(':', '')}.network"


def networkd_unit(iface: Interface) -> str:
    """[Match] the interface by MAC, [Network] its address, gateway and DNS servers."""
    lines = ["[Match]", f"MACAddress={iface.mac}", "", "[Network]", f"Address={iface.address}"]
    if iface.gateway:
        lines.append(f"Gateway={iface.gateway}")
    lines.extend(f"DNS={dns}" for dns in iface.dns)
    return "\n".join(lines) + "\n"
