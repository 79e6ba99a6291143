"""Pretend machines on a test LAN: a DHCP client, a TFTP client and HTTP fetches, speaking the wire protocols.

Run inside a network namespace (`ip netns exec NS python3 lan_client.py JSON`):
the JSON is a list of steps, each one thing a booting machine does, and the
script prints one JSON line per step with what it got. Real firmware does the
same in the same order (DHCP, then its boot loader over TFTP, then files over
HTTP); the servers' logs are what `bootgen discover` reads.

Steps:
  {"dhcp": {"mac", "arch", "vendor_class", "user_class", "iface", "proxy"}} -> DISCOVER, then
      REQUEST what was offered (full DHCP), or a PXE REQUEST to port 4011 (proxyDHCP, needs "address")
  {"address": {"iface", "cidr"}} -> add an address to the interface (what the firmware's stack does)
  {"tftp": {"server", "file", "source"}} -> read a file
  {"http": {"url", "source", "agent"}} -> GET a URL
Every network wait is bounded (TIMEOUT seconds).
"""
from __future__ import annotations

import http.client
import ipaddress
import json
import os
import socket
import struct
import subprocess
import sys
import time
import urllib.parse

TIMEOUT = 5.0
MAGIC = b"\x63\x82\x53\x63"
DISCOVER, OFFER, REQUEST, ACK = 1, 2, 3, 5


def _option(code: int, value: bytes) -> bytes:
    return bytes([code, len(value)]) + value


def dhcp_packet(kind: int, mac: str, xid: int, *, arch: int | None, vendor_class: str, user_class: str = "",
                requested: str = "", server: str = "", ciaddr: str = "0.0.0.0") -> bytes:
    """A BOOTREQUEST as PXE firmware sends it: broadcast flag, options 53, 93, 94, 97, 60 (and 77, 50, 54)."""
    chaddr = bytes.fromhex(mac.replace(":", "")).ljust(16, b"\0")
    head = struct.pack("!BBBBIHH4s4s4s4s16s64s128s", 1, 1, 6, 0, xid, 0, 0x8000, socket.inet_aton(ciaddr),
                       bytes(4), bytes(4), bytes(4), chaddr, b"", b"")
    options = _option(53, bytes([kind]))
    if arch is not None:
        options += _option(93, struct.pack("!H", arch)) + _option(94, b"\x01\x02\x01")
    options += _option(97, b"\0" + bytes.fromhex(mac.replace(":", "")) * 2 + b"\0\0\0\0")
    if vendor_class:
        options += _option(60, vendor_class.encode())
    if user_class:
        options += _option(77, user_class.encode())
    if requested:
        options += _option(50, socket.inet_aton(requested))
    if server:
        options += _option(54, socket.inet_aton(server))
    options += _option(55, bytes([1, 3, 6, 43, 60, 66, 67, 128, 129, 130])) + b"\xff"
    return head + MAGIC + options


def parse_reply(data: bytes) -> dict:
    """yiaddr, siaddr, file and options of a BOOTREPLY."""
    yiaddr, siaddr = socket.inet_ntoa(data[16:20]), socket.inet_ntoa(data[20:24])
    boot_file = data[108:236].split(b"\0", 1)[0].decode(errors="replace")
    options, i = {}, 240
    while i < len(data) and data[i] != 255:
        if data[i] == 0:
            i += 1
            continue
        code, length = data[i], data[i + 1]
        options[code] = data[i + 2:i + 2 + length]
        i += 2 + length
    return {"xid": struct.unpack("!I", data[4:8])[0], "yiaddr": yiaddr, "siaddr": siaddr, "file": boot_file,
            "options": options}


def _dhcp_socket(iface: str, port: int = 68) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, iface.encode())
    sock.bind(("0.0.0.0", port))
    sock.settimeout(TIMEOUT)
    return sock


def _exchange(sock: socket.socket, packet: bytes, xid: int, wanted: int, to: tuple[str, int]) -> dict:
    sock.sendto(packet, to)
    deadline = time.monotonic() + TIMEOUT
    while True:  # other clients' replies are skipped, within one deadline
        sock.settimeout(max(deadline - time.monotonic(), 0.01))
        data, _ = sock.recvfrom(2048)  # raises socket.timeout past the deadline
        reply = parse_reply(data)
        if reply["xid"] == xid and reply["options"].get(53) == bytes([wanted]):
            return reply


def dhcp(mac: str, iface: str, arch: int | None = None, vendor_class: str = "", user_class: str = "",
         proxy: bool = False, address: str = "") -> dict:
    """One DHCP conversation. Full DHCP: DISCOVER, OFFER, REQUEST, ACK. proxyDHCP: DISCOVER and
    the proxy's OFFER, then a REQUEST to its port 4011 from `address` (the LAN's DHCP gave it)."""
    xid = int.from_bytes(os.urandom(4), "big")
    fields = {"arch": arch, "vendor_class": vendor_class, "user_class": user_class}
    with _dhcp_socket(iface) as sock:
        offer = _exchange(sock, dhcp_packet(DISCOVER, mac, xid, **fields), xid, OFFER, ("255.255.255.255", 67))
        server = socket.inet_ntoa(offer["options"][54])
        if not proxy:
            request = dhcp_packet(REQUEST, mac, xid, requested=offer["yiaddr"], server=server, **fields)
            ack = _exchange(sock, request, xid, ACK, ("255.255.255.255", 67))
            return {"address": ack["yiaddr"], "server": server, "file": ack["file"], "next_server": ack["siaddr"]}
    if offer["file"]:  # a one-item menu with no prompt: the proxy names the loader at once
        return {"address": address, "server": server, "file": offer["file"], "next_server": offer["siaddr"]}
    item = _first_boot_item(offer["options"].get(43, b""))
    return _pxe_request(mac, address, server, xid, fields, item)


def _first_boot_item(vendor: bytes) -> bytes:
    """The first boot server type of the PXE menu (option 43, suboption 9) a proxy offered."""
    i = 0
    while i + 1 < len(vendor) and vendor[i] != 255:
        code, length = vendor[i], vendor[i + 1]
        if code == 9 and length >= 2:
            return vendor[i + 2:i + 4]
        i += 2 + length
    return b""


def _pxe_request(mac: str, address: str, server: str, xid: int, fields: dict, item: bytes) -> dict:
    """The boot server request a PXE ROM sends to a proxy's port 4011, for the menu item it picked."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((address, 68))
        sock.settimeout(TIMEOUT)
        packet = dhcp_packet(REQUEST, mac, xid, ciaddr=address, **fields)
        if item:  # no menu (UEFI): the proxy picks the loader by the client's architecture
            packet = packet[:-1] + _option(43, _option(71, item + b"\0\0") + b"\xff") + b"\xff"
        ack = _exchange(sock, packet, xid, ACK, (server, 4011))
    return {"address": address, "server": server, "file": ack["file"], "next_server": ack["siaddr"]}


def tftp(server: str, file: str, source: str) -> dict:
    """Read one file in octet mode; {"size": n} or {"error": message from the server}."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((source, 0))
        sock.settimeout(TIMEOUT)
        sock.sendto(b"\0\1" + file.encode() + b"\0octet\0", (server, 69))
        size, block = 0, 1
        deadline = time.monotonic() + 12 * TIMEOUT  # a whole transfer; every block within TIMEOUT
        while time.monotonic() < deadline:
            data, peer = sock.recvfrom(4 + 65536)
            opcode = struct.unpack("!H", data[:2])[0]
            if opcode == 5:
                return {"error": data[4:].split(b"\0", 1)[0].decode(errors="replace")}
            if opcode != 3 or struct.unpack("!H", data[2:4])[0] != block:
                continue
            size += len(data) - 4
            sock.sendto(b"\0\4" + data[2:4], peer)
            if len(data) - 4 < 512:
                return {"size": size}
            block = (block + 1) % 65536
        raise TimeoutError(f"{file}: transfer not done in {12 * TIMEOUT:.0f} s")


def http_get(url: str, source: str, agent: str = "iPXE/1.0.0+") -> dict:
    """GET url from the source address; {"status": code, "size": n}."""
    parts = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port or 80, timeout=TIMEOUT, source_address=(source, 0))
    try:
        conn.request("GET", parts.path or "/", headers={"User-Agent": agent})
        response = conn.getresponse()
        return {"status": response.status, "size": len(response.read())}
    finally:
        conn.close()


def add_address(iface: str, cidr: str) -> dict:
    ipaddress.IPv4Interface(cidr)  # refuse anything else before it reaches `ip`
    subprocess.run(["ip", "addr", "add", cidr, "dev", iface], check=True, capture_output=True, timeout=10)
    return {"added": cidr}


STEPS = {"dhcp": lambda a: dhcp(**a), "tftp": lambda a: tftp(**a), "http": lambda a: http_get(**a),
         "address": lambda a: add_address(**a)}


def main(steps: list[dict]) -> None:
    for step in steps:
        (kind, args), = step.items()
        try:
            result = STEPS[kind](args)
        except (OSError, socket.timeout) as exc:
            result = {"failed": f"{type(exc).__name__}: {exc}"}
        print(json.dumps({kind: result}), flush=True)


if __name__ == "__main__":
    main(json.loads(sys.argv[1]))
