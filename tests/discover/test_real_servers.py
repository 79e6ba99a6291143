"""`bootgen discover` on logs written by the real dnsmasq and nginx, serving a `bootgen build` tree.

The e2e rig runs the generated server/dnsmasq.conf and server/nginx.conf in a
network namespace; pretend machines (lan_client.py) on the same bridge speak
DHCP (with the client architecture and vendor class PXE firmware sends), TFTP
and HTTP to them, as firmware, boot loaders and iPXE would. BOOTGEN_UPDATE_FIXTURES=1
copies the logs into fixtures/ for the parser's unit tests.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from lan_rig import FIXTURES, ClientPort, rig

import sites

SERVER_IP = "192.168.77.1"
BASE = f"http://{SERVER_IP}/"
KNOWN = sites.NodeSpec("known-1", "52:54:00:aa:00:01", "192.168.77.11/24")
UEFI = {"arch": 7, "vendor_class": "PXEClient:Arch:00007:UNDI:003016"}
BIOS = {"arch": 0, "vendor_class": "PXEClient:Arch:00000:UNDI:002001"}
ARM64 = {"arch": 11, "vendor_class": "PXEClient:Arch:00011:UNDI:003000"}
IPXE = {"user_class": "iPXE"}


def _serve(tmp_path: Path, dhcp: dict) -> tuple[sites.Tree, rig.NamespaceLan, Path]:
    source = tmp_path / "src"
    source.mkdir()
    (source / "kernel").write_bytes(b"not a kernel: nothing boots here")
    (source / "initrd").write_bytes(b"not an initrd")
    spec = sites.SiteSpec(BASE, SERVER_IP, "http", {"subnet": "192.168.77.0/24", "interface": "br0", **dhcp})
    tree = sites.build(source, spec, (KNOWN,), source / "kernel", source / "initrd")
    (tmp_path / "lan").mkdir()
    lan = rig.NamespaceLan.create(tmp_path / "lan", Path("/nonexistent"), SERVER_IP)  # no VM: no kernel
    try:
        # A private lease file (the system's would carry leases between runs); no ping before an
        # offer, which costs 3 s per new client and changes nothing in the log lines.
        lan.start_dnsmasq(tree.root / "server" / "dnsmasq.conf",
                          [f"--dhcp-leasefile={lan.workdir}/leases", "--no-ping"])
        lan.start_nginx(tree.root / "server" / "nginx.conf", f"{BASE}boot.ipxe")
    except BaseException:
        lan.close()
        raise
    return tree, lan, source


def _discover(source: Path, lan: rig.NamespaceLan, *extra: str) -> dict:
    cmd = [sys.executable, "-m", "bootgen", "discover", "--format", "json", "--dnsmasq-log",
           str(lan.workdir / "dnsmasq.log"), "--nginx-log", str(lan.workdir / "nginx-access.log"), *extra]
    done = subprocess.run(cmd, cwd=source, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return {m["mac"] or m["serial"] or m["addresses"][-1]: m for m in json.loads(done.stdout)["machines"]}


def _keep_logs(lan: rig.NamespaceLan, name: str) -> None:
    if os.environ.get("BOOTGEN_UPDATE_FIXTURES"):
        shutil.copyfile(lan.workdir / "dnsmasq.log", FIXTURES / f"dnsmasq-{name}.log")
        shutil.copyfile(lan.workdir / "nginx-access.log", FIXTURES / f"nginx-{name}.log")


def _fetched(machine: dict) -> dict[tuple[str, str], str]:
    return {(f["via"], f["path"]): f["result"] for f in machine["fetched"]}


def test_full_dhcp_site(tmp_path, namespaces):
    """dnsmasq hands out addresses: TFTP and HTTP requests are joined to MACs by the leases."""
    tree, lan, source = _serve(tmp_path, {"mode": "full", "range": ["192.168.77.100", "192.168.77.199"]})
    try:
        port = ClientPort.attach(lan)
        uefi = _boot(port, "52:54:00:d1:00:01", UEFI, ["ipxe.efi"],
                     ["boot.ipxe", "ipxe/52-54-00-d1-00-01.ipxe", "ipxe/default.ipxe"])
        bios = _boot(port, "52:54:00:d1:00:02", BIOS,
                     ["lpxelinux.0", "ldlinux.c32", "pxelinux.cfg/01-52-54-00-d1-00-02", "pxelinux.cfg/default"])
        known = _boot(port, KNOWN.mac, BIOS, ["lpxelinux.0", "pxelinux.cfg/01-52-54-00-aa-00-01"])
        pi = _boot(port, "dc:a6:32:d1:00:03", BIOS, ["7092246e/start4.elf", "start4.elf"])
        arm = _boot(port, "52:54:00:d1:00:04", ARM64, ["ipxe-arm64.efi"])
        port.run([{"address": {"iface": "eth0", "cidr": "192.168.77.60/24"}},
                  {"http": {"url": f"{BASE}boot.ipxe", "source": "192.168.77.60"}}])
    finally:
        lan.close()
    _keep_logs(lan, "full")
    assert known == KNOWN.address.split("/")[0]  # dhcp-host gave the known node its address
    found = _discover(source, lan)
    assert set(found) == {"52:54:00:d1:00:01", "52:54:00:d1:00:02", "dc:a6:32:d1:00:03", "52:54:00:d1:00:04",
                          "192.168.77.60"}, "the known node, and nginx's readiness probe from the server, are left out"
    assert found["52:54:00:d1:00:01"]["architectures"] == ["x86_64-efi"]
    assert found["52:54:00:d1:00:01"]["addresses"] == [uefi]
    assert _fetched(found["52:54:00:d1:00:01"]) == {
        ("tftp", "ipxe.efi"): "sent", ("http", "boot.ipxe"): "200",
        ("http", "ipxe/52-54-00-d1-00-01.ipxe"): "404", ("http", "ipxe/default.ipxe"): "200"}
    assert found["52:54:00:d1:00:02"]["architectures"] == ["bios"]
    assert found["52:54:00:d1:00:02"]["addresses"] == [bios]
    assert _fetched(found["52:54:00:d1:00:02"]) == {
        ("tftp", "lpxelinux.0"): "sent", ("tftp", "ldlinux.c32"): "sent",
        ("tftp", "pxelinux.cfg/01-52-54-00-d1-00-02"): "not found", ("tftp", "pxelinux.cfg/default"): "sent"}
    assert found["dc:a6:32:d1:00:03"]["serial"] == "7092246e"
    assert found["dc:a6:32:d1:00:03"]["architectures"] == ["raspberry-pi"]
    assert found["dc:a6:32:d1:00:03"]["addresses"] == [pi]
    assert found["52:54:00:d1:00:04"]["architectures"] == ["arm64-efi"]
    assert _fetched(found["52:54:00:d1:00:04"]) == {("tftp", "ipxe-arm64.efi"): "not found"}
    assert arm in found["52:54:00:d1:00:04"]["addresses"]
    assert found["192.168.77.60"]["mac"] is None and _fetched(found["192.168.77.60"]) == {("http", "boot.ipxe"): "200"}
    with_known = _discover(source, lan, "--all")
    assert with_known[KNOWN.mac]["node"] == "known-1"
    assert _fetched(with_known[KNOWN.mac])[("tftp", "pxelinux.cfg/01-52-54-00-aa-00-01")] == "sent"
    assert _discover(source, lan, "--since", "2000-01-01") == found
    assert _discover(source, lan, "--since", "2099-01-01") == {}


def _boot(port: ClientPort, mac: str, firmware: dict, tftp: list[str], http: list[str] = ()) -> str:
    """One machine's network boot: DHCP, its loader and configs over TFTP, then iPXE's DHCP and HTTP."""
    (lease,) = port.run([{"dhcp": {"mac": mac, "iface": port.iface, **firmware}}])
    address = lease["dhcp"]["address"]
    steps = [{"address": {"iface": port.iface, "cidr": f"{address}/24"}}]
    steps += [{"tftp": {"server": SERVER_IP, "file": name, "source": address}} for name in tftp]
    if http:
        steps.append({"dhcp": {"mac": mac, "iface": port.iface, **firmware, **IPXE}})
        steps += [{"http": {"url": BASE + path, "source": address}} for path in http]
    port.run(steps)
    return address


def test_proxy_dhcp_site(tmp_path, namespaces):
    """Beside the LAN's own DHCP server, dnsmasq sees addresses only in some PXE requests: a UEFI
    machine is joined to its TFTP request by the per-MAC iPXE script it then fetched."""
    tree, lan, source = _serve(tmp_path, {"mode": "proxy"})
    try:
        port = ClientPort.attach(lan)
        bios_ip, uefi_ip = "192.168.77.51", "192.168.77.52"  # what the LAN's own DHCP server gave them
        port.run([{"address": {"iface": "eth0", "cidr": f"{bios_ip}/24"}},
                  {"address": {"iface": "eth0", "cidr": f"{uefi_ip}/24"}}])
        offers = port.run([
            {"dhcp": {"mac": "52:54:00:d2:00:01", "iface": "eth0", "proxy": True, "address": bios_ip, **BIOS}},
            {"dhcp": {"mac": "52:54:00:d2:00:02", "iface": "eth0", "proxy": True, "address": uefi_ip, **UEFI}}])
        port.run([{"tftp": {"server": SERVER_IP, "file": offers[0]["dhcp"]["file"], "source": bios_ip}},
                  {"tftp": {"server": SERVER_IP, "file": offers[1]["dhcp"]["file"], "source": uefi_ip}},
                  {"http": {"url": f"{BASE}boot.ipxe", "source": uefi_ip}},
                  {"http": {"url": f"{BASE}ipxe/52-54-00-d2-00-02.ipxe", "source": uefi_ip}}])
    finally:
        lan.close()
    _keep_logs(lan, "proxy")
    found = _discover(source, lan)
    assert set(found) == {"52:54:00:d2:00:01", "52:54:00:d2:00:02"}
    assert found["52:54:00:d2:00:01"]["architectures"] == ["bios"]
    assert _fetched(found["52:54:00:d2:00:01"]) == {("tftp", "lpxelinux.0"): "sent"}
    assert found["52:54:00:d2:00:02"]["architectures"] == ["x86_64-efi"]
    assert found["52:54:00:d2:00:02"]["addresses"] == [uefi_ip]
    assert _fetched(found["52:54:00:d2:00:02"]) == {("tftp", "ipxe.efi"): "sent", ("http", "boot.ipxe"): "200",
                                                    ("http", "ipxe/52-54-00-d2-00-02.ipxe"): "404"}


def test_discovered_added_built_and_served(tmp_path, namespaces):
    """The first-day loop: a machine boots unknown, `discover` lists it, `add` writes its node,
    `build` and a dnsmasq restart serve it, and its next boot gets its own address and files."""
    tree, lan, source = _serve(tmp_path, {"mode": "full", "range": ["192.168.77.100", "192.168.77.199"]})
    mac, per_mac = "52:54:00:d3:00:01", "pxelinux.cfg/01-52-54-00-d3-00-01"
    try:
        port = ClientPort.attach(lan)
        first = _boot(port, mac, BIOS, ["lpxelinux.0", per_mac, "pxelinux.cfg/default"])
        assert set(_discover(source, lan)) == {mac}
        bootgen = [sys.executable, "-m", "bootgen"]
        for args in (["add", mac, "--address", "192.168.77.30/24", "--gateway", "192.168.77.1"],
                     ["build", "--offline"]):
            done = subprocess.run(bootgen + args, cwd=source, capture_output=True, text=True, timeout=120)
            assert done.returncode == 0, done.stdout + done.stderr
        assert "LOCALBOOT 0" in (tree.root / per_mac).read_text()  # added machines boot their disk
        dnsmasq = next(server for server in lan.servers if server.name == "dnsmasq")
        dnsmasq.stop()  # dnsmasq reads dhcp-host lines at start
        lan.servers.remove(dnsmasq)
        lan.start_dnsmasq(tree.root / "server" / "dnsmasq.conf",
                          [f"--dhcp-leasefile={lan.workdir}/leases-2", "--no-ping"])
        second = _boot(port, mac, BIOS, ["lpxelinux.0", per_mac])
    finally:
        lan.close()
    assert first.startswith("192.168.77.1") and second == "192.168.77.30"
    assert _discover(source, lan) == {}
    machine = _discover(source, lan, "--all")[mac]
    assert machine["node"] == "node-d30001"
    assert machine["addresses"] == [first, second]
    assert [(f["path"], f["result"], f["count"]) for f in machine["fetched"] if f["path"] == per_mac] == [
        (per_mac, "sent", 2)]  # the last answer: the file now exists
