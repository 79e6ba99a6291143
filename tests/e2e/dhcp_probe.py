"""A minimal DHCP client that sends one DISCOVER and prints the OFFER it gets, as JSON.

Run inside a network namespace whose `eth0` is on the LAN under test:
    python3 dhcp_probe.py eth0 52:54:00:e2:00:61 HTTPClient:Arch:00019 19
It reads the offer's bytes (BOOTP file field and options), so a test sees exactly
what firmware would receive.
"""
from __future__ import annotations

import json
import os
import select
import socket
import struct
import sys
import time

MAGIC = b"\x63\x82\x53\x63"


def discover(mac: bytes, vendor_class: str, arch: int, xid: int) -> bytes:
    """A DHCPDISCOVER as UEFI firmware sends it: vendor class (60), client architecture (93)."""
    header = struct.pack("!BBBBIHH4s4s4s4s16s64s128s", 1, 1, 6, 0, xid, 0, 0x8000, b"\0" * 4, b"\0" * 4,
                         b"\0" * 4, b"\0" * 4, mac.ljust(16, b"\0"), b"", b"")
    options = bytes([53, 1, 1]) + bytes([60, len(vendor_class)]) + vendor_class.encode()
    options += bytes([93, 2]) + struct.pack("!H", arch) + bytes([94, 3, 1, 3, 0])
    options += bytes([55, 4, 1, 3, 60, 67]) + b"\xff"
    return header + MAGIC + options


def parse(packet: bytes) -> dict:
    """The offer's file field and options (as latin-1 text, or hex for binary ones)."""
    file = packet[108:236].split(b"\0", 1)[0].decode("latin-1")
    options, i = {}, 240
    while i < len(packet) and packet[i] != 255:
        if packet[i] == 0:
            i += 1
            continue
        code, length = packet[i], packet[i + 1]
        value = packet[i + 2:i + 2 + length].rstrip(b"\0")  # dnsmasq ends option 67 with a NUL
        options[str(code)] = value.decode("latin-1") if all(32 <= b < 127 for b in value) else value.hex()
        i += 2 + length
    return {"file": file, "yiaddr": socket.inet_ntoa(packet[16:20]), "siaddr": socket.inet_ntoa(packet[20:24]),
            "options": options}


def main(interface: str, mac_text: str, vendor_class: str, arch: str, timeout: float = 10) -> int:
    mac = bytes.fromhex(mac_text.replace(":", ""))
    xid = int.from_bytes(os.urandom(4), "big")
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, interface.encode())
    sock.bind(("0.0.0.0", 68))
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        sock.sendto(discover(mac, vendor_class, int(arch), xid), ("255.255.255.255", 67))
        ready, _, _ = select.select([sock], [], [], 1.0)
        if ready:
            packet, _ = sock.recvfrom(4096)
            if packet[4:8] == struct.pack("!I", xid) and packet[0] == 2:
                print(json.dumps(parse(packet)))
                return 0
    print(json.dumps({"error": "no offer"}))
    return 1


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:5]))
