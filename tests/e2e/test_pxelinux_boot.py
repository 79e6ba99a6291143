"""BIOS boots through pxelinux.0 (kernel over TFTP) and lpxelinux.0 (kernel over HTTP).

QEMU's BIOS NIC ROM is iPXE, and the generated dnsmasq.conf rightly hands any
iPXE client boot.ipxe, so on that server a SeaBIOS VM never reaches pxelinux.
These tests stand in for a vendor PXE ROM with QEMU's user-mode DHCP/TFTP: it
offers pxelinux.0 from the built tree, whose TFTP server then serves the
pxelinux.cfg lookups; HTTP comes from nginx with the generated nginx.conf.
The TFTP names each VM asked for are read from a capture of its traffic.
"""
from __future__ import annotations

import re
import socket
from dataclasses import dataclass

import pytest

import checks
import rig
import sites
from sites import NodeSpec, SiteSpec

VM_TIMEOUT = 170  # seconds; a TCG boot through pxelinux takes about 45
LOCAL_BOOT_MARKERS = ("No bootable device",)

BY_MAC = NodeSpec("pxe-mac", "52:54:00:e2:01:01", "10.0.2.20/24")
BY_IP = NodeSpec("pxe-ip", "52:54:00:e2:01:02", "10.0.2.42/24")
HTTP_KERNEL = NodeSpec("lpxe-http", "52:54:00:e2:01:03", "10.0.2.21/24")
# Machines: one per node MAC, one with an unknown MAC holding pxe-ip's reserved
# address (so only the hex-IP file matches), one unknown everywhere.
MACHINES = {
    "pxe-mac": (rig.Machine("pxe-mac", BY_MAC.mac), "10.0.2.20"),
    "pxe-ip": (rig.Machine("pxe-ip", "52:54:00:e2:01:f2"), "10.0.2.42"),
    "pxe-default": (rig.Machine("pxe-default", "52:54:00:e2:01:f3"), "10.0.2.99"),
}


@dataclass(frozen=True)
class Booted:
    tree: sites.Tree
    lan: rig.UserLan
    results: dict[str, rig.BootResult]

    def tftp(self, machine: str) -> list[str]:
        """TFTP names the machine asked for, without a leading slash."""
        return [name.lstrip("/") for name in rig.tftp_requests_from_pcap(self.lan.workdir / f"{machine}.pcap")]

    def http_requests(self) -> list[str]:
        log = self.lan.workdir / "nginx-access.log"
        return re.findall(r'"GET (\S+) HTTP', log.read_text()) if log.exists() else []


def _port(use_namespaces: bool) -> int:
    """80 on a namespace's private loopback, else any free loopback port."""
    if use_namespaces:
        return 80
    checks.note("pxelinux tests: nginx on the host's loopback (no private namespace)")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _boot(tmp_path_factory, payload, use_namespaces, transport, bootfile, nodes, machines) -> Booted:
    workdir = tmp_path_factory.mktemp(f"pxelinux-{transport}")
    port = _port(use_namespaces)
    base = "http://10.0.2.2/" if port == 80 else f"http://10.0.2.2:{port}/"
    spec = SiteSpec(base, "10.0.2.2", transport, {"mode": "none"}, http_port=port)
    source = workdir / "site-src"
    source.mkdir()
    tree = sites.build(source, spec, nodes, payload.kernel, payload.initrd)
    lan = rig.UserLan.create(tree.root, bootfile, workdir, payload.kernel, private=use_namespaces)
    try:
        lan.dhcp_start.update({machine.name: address for machine, address in machines})
        # Probed from where nginx runs: the guest's 10.0.2.2 is that loopback.
        lan.start_nginx(tree.root / "server" / "nginx.conf", f"http://127.0.0.1:{port}/pxelinux.cfg/default")
        results = rig.boot_all([machine for machine, _ in machines], lan, workdir, VM_TIMEOUT, LOCAL_BOOT_MARKERS)
    finally:
        lan.close()
    return Booted(tree, lan, results)


@pytest.fixture(scope="module")
def tftp_kernels(tmp_path_factory, payload, use_namespaces) -> Booted:
    """pxelinux.0 site (kernels over TFTP); three VMs: by MAC, by hex IP, unknown."""
    return _boot(tmp_path_factory, payload, use_namespaces, "tftp", "pxelinux.0", (BY_MAC, BY_IP),
                 list(MACHINES.values()))


@pytest.fixture(scope="module")
def http_kernels(tmp_path_factory, payload, use_namespaces) -> Booted:
    """lpxelinux.0 site (kernels over HTTP); one VM."""
    machine = (rig.Machine("lpxe-http", HTTP_KERNEL.mac), "10.0.2.21")
    return _boot(tmp_path_factory, payload, use_namespaces, "http", "lpxelinux.0", (HTTP_KERNEL,), [machine])


def _configs(names: list[str]) -> list[str]:
    return [name for name in names if name.startswith("pxelinux.cfg/")]


def _hex(address: str) -> str:
    return "".join(f"{int(octet):02X}" for octet in address.split("."))


def test_pxelinux_picks_the_per_mac_file(tftp_kernels):
    checks.assert_booted(tftp_kernels.tree, "pxe-mac", tftp_kernels.results["pxe-mac"])
    assert _configs(tftp_kernels.tftp("pxe-mac")) == ["pxelinux.cfg/01-52-54-00-e2-01-01"]
    assert any(name.startswith("images/") and name.endswith("/vmlinuz") for name in tftp_kernels.tftp("pxe-mac"))


def test_pxelinux_falls_back_to_the_hex_ip_file(tftp_kernels):
    checks.assert_booted(tftp_kernels.tree, "pxe-ip", tftp_kernels.results["pxe-ip"])
    assert _configs(tftp_kernels.tftp("pxe-ip")) == ["pxelinux.cfg/01-52-54-00-e2-01-f2",
                                                     f"pxelinux.cfg/{_hex('10.0.2.42')}"]


def test_pxelinux_unknown_machine_gets_default_and_boots_locally(tftp_kernels):
    checks.assert_local_boot(tftp_kernels.results["pxe-default"])
    hexip = _hex("10.0.2.99")
    expected = (["pxelinux.cfg/01-52-54-00-e2-01-f3"]
                + [f"pxelinux.cfg/{hexip[:n]}" for n in range(len(hexip), 0, -1)] + ["pxelinux.cfg/default"])
    assert _configs(tftp_kernels.tftp("pxe-default")) == expected


def test_lpxelinux_fetches_the_kernel_over_http(http_kernels):
    checks.assert_booted(http_kernels.tree, "lpxe-http", http_kernels.results["lpxe-http"])
    tftp = http_kernels.tftp("lpxe-http")
    assert tftp[0] == "lpxelinux.0" and "pxelinux.cfg/01-52-54-00-e2-01-03" in tftp, tftp
    assert not [name for name in tftp if name.startswith("images/")], f"images came over TFTP: {tftp}"
    requests = http_kernels.http_requests()
    assert any(path.startswith("/images/") and path.endswith("/vmlinuz") for path in requests), requests
