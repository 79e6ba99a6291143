"""Boot real firmware from a `bootgen build` tree served by the generated dnsmasq.conf and nginx.conf.

The servers run in a network namespace on a bridge; each VM's tap is on that
bridge, so the VM sees the same DHCP/TFTP/HTTP a site's machines would. Under
SeaBIOS, QEMU's NIC boot ROM is iPXE: the generated dnsmasq.conf rightly hands
it boot.ipxe. Under OVMF the NIC has no ROM, so OVMF's own PXE client fetches
the UEFI loader from the tree (ipxe.efi or grubnetx64.efi).
"""
from __future__ import annotations

import re
import socket
from dataclasses import dataclass
from pathlib import Path

import pytest

import checks
import rig
import sites
from sites import NodeSpec, SiteSpec

SERVER_IP = "192.168.77.1"
VM_TIMEOUT = 170  # seconds; a TCG boot through iPXE takes about 50
LOCAL_BOOT_MARKERS = ("No bootable device",)
# iPXE gave up booting from the network and returns to the firmware (under UEFI, after `exit`).
IPXE_DONE = "No more network devices"
# OVMF moves on to HTTP boot only once every PXE offer failed: no need to wait out the timeout.
GAVE_UP_MARKERS = (">>Start HTTP Boot over IPv4",)

IPXE_NODES = (
    NodeSpec("bios-ipxe", "52:54:00:e2:00:01", "192.168.77.11/24"),
    NodeSpec("uefi-ipxe", "52:54:00:e2:00:02", "192.168.77.12/24"),
    NodeSpec("installed", "52:54:00:e2:00:03", "192.168.77.13/24", boot="local"),
    NodeSpec("installed-uefi", "52:54:00:e2:00:08", "192.168.77.18/24", boot="local"),
)
GRUB_NODES = (NodeSpec("uefi-grub", "52:54:00:e2:00:04", "192.168.77.14/24"),
              NodeSpec("uefi-grub-ip", "52:54:00:e2:00:07", "192.168.77.17/24"))
# The machine of node uefi-grub-ip has a NIC the node file does not name (replaced, say),
# and the DHCP server's reservation gives that NIC the node's address: GRUB finds it by address.
NEW_NIC = {"uefi-grub-ip": "52:54:00:e2:00:17"}
PROXY_NODES = (
    NodeSpec("proxy-bios", "52:54:00:e2:00:05", "192.168.77.15/24"),
    NodeSpec("proxy-uefi", "52:54:00:e2:00:06", "192.168.77.16/24"),
)
PLAIN_DHCP_IP = "192.168.77.2"
UEFI_NODES = {"uefi-ipxe", "uefi-grub", "uefi-grub-ip", "installed-uefi", "proxy-uefi"}  # booted under OVMF; the others under SeaBIOS


@dataclass(frozen=True)
class Served:
    """A built tree, the LAN that served it and what each VM printed."""

    tree: sites.Tree
    lan: object
    results: dict[str, rig.BootResult]

    def http_requests(self) -> list[str]:
        """Paths nginx was asked for (its access log), in order."""
        log = self.lan.workdir / "nginx-access.log"
        return re.findall(r'"GET (\S+) HTTP', log.read_text()) if log.exists() else []


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _site(uefi_loader: str, transport: str, namespace: bool, dhcp_mode: str) -> SiteSpec:
    if namespace:
        dhcp = {"mode": dhcp_mode, "subnet": "192.168.77.0/24", "interface": "br0", "uefi_loader": uefi_loader}
        if dhcp_mode == "full":
            dhcp["range"] = ["192.168.77.100", "192.168.77.199"]
        return SiteSpec(f"http://{SERVER_IP}/", SERVER_IP, transport, dhcp)
    port = _free_port()
    return SiteSpec(f"http://10.0.2.2:{port}/", "10.0.2.2", transport,
                    {"mode": "none", "uefi_loader": uefi_loader}, http_port=port)


def _serve_in_namespace(tree: sites.Tree, workdir: Path, payload) -> rig.NamespaceLan:
    lan = rig.NamespaceLan.create(workdir, payload.kernel, SERVER_IP)
    try:
        if tree.site.dhcp["mode"] == "proxy":
            hosts = {node.mac: node.address.split("/")[0] for node in tree.nodes}
            lan.start_plain_dhcp(PLAIN_DHCP_IP, ("192.168.77.100", "192.168.77.199"), hosts)
        lan.start_dnsmasq(_with_new_nics(tree, workdir))
        lan.start_nginx(tree.root / "server" / "nginx.conf", f"{tree.site.base_url}boot.ipxe")
    except BaseException:
        lan.close()
        raise
    return lan


def _with_new_nics(tree: sites.Tree, workdir: Path) -> Path:
    """The generated dnsmasq.conf with each NEW_NIC machine's reservation moved to its new MAC."""
    text = (tree.root / "server" / "dnsmasq.conf").read_text()
    for node in tree.nodes:
        if node.name in NEW_NIC:
            assert f"dhcp-host={node.mac}," in text
            text = text.replace(f"dhcp-host={node.mac},", f"dhcp-host={NEW_NIC[node.name]},")
    conf = workdir / "dnsmasq.conf"
    conf.write_text(text)
    return conf


def _serve_user_mode(tree: sites.Tree, workdir: Path, payload, uefi_loader: str) -> rig.UserLan:
    checks.note("generated dnsmasq.conf not exercised: QEMU user-mode DHCP/TFTP serves the tree, "
                "nginx (generated nginx.conf) on loopback")
    uefi_file = {"ipxe": "ipxe.efi", "grub": "grubnetx64.efi"}[uefi_loader]
    lan = rig.UserLan.create(tree.root, f"{tree.site.base_url}boot.ipxe", workdir, payload.kernel, private=False)
    lan.bootfile_for.update({node.name: uefi_file for node in tree.nodes if node.name in UEFI_NODES})
    try:
        # Probed on the host's loopback, which the guest sees as 10.0.2.2.
        lan.start_nginx(tree.root / "server" / "nginx.conf", f"http://127.0.0.1:{tree.site.http_port}/boot.ipxe")
    except BaseException:
        lan.close()
        raise
    return lan


def _machine(node: NodeSpec) -> rig.Machine:
    mac = NEW_NIC.get(node.name, node.mac)
    if node.name in UEFI_NODES:
        # GRUB 2.06 runs out of heap fetching the kernel over HTTP with 256 MB under OVMF.
        return rig.Machine(node.name, mac, "uefi", memory_mb=512)
    return rig.Machine(node.name, mac, "bios")


def _serve_and_boot(tmp_path_factory, payload, use_namespaces, nodes, uefi_loader, transport, dhcp_mode="full"):
    workdir = tmp_path_factory.mktemp(f"served-{uefi_loader}-{dhcp_mode}")
    spec = _site(uefi_loader, transport, use_namespaces, dhcp_mode)
    source = workdir / "site-src"
    source.mkdir()
    tree = sites.build(source, spec, nodes, payload.kernel, payload.initrd)
    if use_namespaces:
        lan = _serve_in_namespace(tree, workdir, payload)
    else:
        lan = _serve_user_mode(tree, workdir, payload, uefi_loader)
    try:
        results = rig.boot_all([_machine(node) for node in nodes], lan, workdir, VM_TIMEOUT,
                               LOCAL_BOOT_MARKERS + GAVE_UP_MARKERS, {"installed-uefi": (IPXE_DONE,)})
    finally:
        lan.close()
    return Served(tree, lan, results)


@pytest.fixture(scope="module")
def ipxe_site(tmp_path_factory, payload, use_namespaces) -> Served:
    """Site with UEFI machines chained to iPXE, kernels over TFTP for pxelinux; three VMs booted."""
    return _serve_and_boot(tmp_path_factory, payload, use_namespaces, IPXE_NODES, "ipxe", "tftp")


@pytest.fixture(scope="module")
def grub_site(tmp_path_factory, payload, use_namespaces) -> Served:
    """Site with UEFI machines on GRUB, kernels over HTTP; two VMs booted (by MAC, by address)."""
    return _serve_and_boot(tmp_path_factory, payload, use_namespaces, GRUB_NODES, "grub", "http")


def test_bios_ipxe_chains_the_per_mac_script(ipxe_site):
    result = ipxe_site.results["bios-ipxe"]
    checks.assert_booted(ipxe_site.tree, "bios-ipxe", result)
    requests = ipxe_site.http_requests()
    assert "/boot.ipxe" in requests
    assert "/ipxe/52-54-00-e2-00-01.ipxe" in requests, requests


def _needs_namespace_for_uefi_ipxe(served: Served) -> None:
    if not isinstance(served.lan, rig.NamespaceLan):
        checks.note("UEFI iPXE not booted: QEMU's user-mode DHCP offers ipxe.efi to iPXE itself too "
                    "(a chain-load loop); only the namespace rig with the generated dnsmasq.conf can boot it")
        pytest.skip("UEFI iPXE needs the namespace rig (QEMU user-mode DHCP cannot tell iPXE apart)")


def test_uefi_ipxe_efi_from_the_tree(ipxe_site):
    _needs_namespace_for_uefi_ipxe(ipxe_site)
    result = ipxe_site.results["uefi-ipxe"]
    checks.assert_booted(ipxe_site.tree, "uefi-ipxe", result)
    assert "/ipxe/52-54-00-e2-00-02.ipxe" in ipxe_site.http_requests()
    if isinstance(ipxe_site.lan, rig.NamespaceLan):
        tftp = rig.tftp_requests(ipxe_site.lan.workdir / "dnsmasq.log", "192.168.77.12")
        assert any(name.endswith("/ipxe.efi") for name in tftp), f"OVMF did not load ipxe.efi over TFTP: {tftp}"


def test_installed_node_boots_locally(ipxe_site):
    result = ipxe_site.results["installed"]
    checks.assert_local_boot(result)
    assert "/ipxe/52-54-00-e2-00-03.ipxe" in ipxe_site.http_requests()


def test_installed_uefi_node_hands_back_to_the_firmware(ipxe_site):
    """Under UEFI the local-boot entry exits iPXE at once (there is no BIOS drive 0x80 to
    sanboot): no SAN attempt, no fall-through to the unknown machines' script, and iPXE
    ends its network boot, returning to the firmware's boot manager."""
    _needs_namespace_for_uefi_ipxe(ipxe_site)
    result = ipxe_site.results["installed-uefi"]
    requests = ipxe_site.http_requests()
    assert "/ipxe/52-54-00-e2-00-08.ipxe" in requests
    checks.assert_local_boot(result, (IPXE_DONE,))
    assert "Could not open SAN device" not in result.serial and "Could not boot" not in result.serial, result.tail()
    assert "/ipxe/default.ipxe" not in requests, requests


def test_uefi_grub_per_mac_config(grub_site):
    result = grub_site.results["uefi-grub"]
    checks.assert_booted(grub_site.tree, "uefi-grub", result)
    if isinstance(grub_site.lan, rig.NamespaceLan):
        tftp = rig.tftp_requests(grub_site.lan.workdir / "dnsmasq.log", "192.168.77.14")
        assert any(name.endswith("/grubnetx64.efi") for name in tftp), tftp
        assert any(name.endswith("/grub/grub.cfg-01-52-54-00-e2-00-04") for name in tftp), tftp
    assert "/images/" in " ".join(grub_site.http_requests()), "GRUB did not fetch the kernel over HTTP"


def test_uefi_grub_finds_a_machine_by_its_address(grub_site):
    """A NIC the node file does not name, given the node's address by DHCP: grub.cfg looks up
    grub.cfg-<address> from ${net_default_ip} and boots the node, not the local disk."""
    if not isinstance(grub_site.lan, rig.NamespaceLan):
        pytest.skip("needs the namespace rig: QEMU user-mode DHCP cannot reserve an address")
    checks.assert_booted(grub_site.tree, "uefi-grub-ip", grub_site.results["uefi-grub-ip"])
    tftp = rig.tftp_requests(grub_site.lan.workdir / "dnsmasq.log", "192.168.77.17")
    assert any(name.endswith("/grub/grub.cfg-01-52-54-00-e2-00-17") for name in tftp), tftp
    assert any(name.endswith("/grub/grub.cfg-192.168.77.17") for name in tftp), tftp
    assert not any(name.endswith("/grub/grub.cfg-default") for name in tftp), tftp


@pytest.fixture(scope="module")
def proxy_site(tmp_path_factory, payload, use_namespaces) -> Served:
    """proxyDHCP site beside the LAN's own plain DHCP server (the example site's setup); two VMs."""
    return _serve_and_boot(tmp_path_factory, payload, use_namespaces, PROXY_NODES, "ipxe", "tftp", "proxy")


@pytest.mark.parametrize("node", ["proxy-bios", "proxy-uefi"])
def test_proxy_dhcp_beside_the_lans_dhcp_server(proxy_site, node):
    if node in UEFI_NODES:
        _needs_namespace_for_uefi_ipxe(proxy_site)
    checks.assert_booted(proxy_site.tree, node, proxy_site.results[node])
    mac = proxy_site.tree.node(node).mac.replace(":", "-")
    assert f"/ipxe/{mac}.ipxe" in proxy_site.http_requests()
    if isinstance(proxy_site.lan, rig.NamespaceLan):
        plain_log = (proxy_site.lan.workdir / "dhcp-plain.log").read_text()
        assert f"DHCPACK(eth0) {proxy_site.tree.node(node).address.split('/')[0]}" in plain_log
        if node in UEFI_NODES:
            tftp = rig.tftp_requests(proxy_site.lan.workdir / "dnsmasq.log", "192.168.77.16")
            assert any(name.endswith("/ipxe.efi") for name in tftp), f"OVMF did not load ipxe.efi: {tftp}"


def test_discover_finds_the_booted_machines(ipxe_site, tmp_path):
    """`bootgen discover` on the logs real firmware left: each VM by its MAC, with the architecture its
    DHCP client class says and the files it fetched; with no node files all of them are unknown."""
    if not isinstance(ipxe_site.lan, rig.NamespaceLan):
        pytest.skip("the generated dnsmasq.conf served no DHCP (QEMU user-mode networking)")
    import json
    import subprocess
    import sys

    source = ipxe_site.tree.root.parent
    (tmp_path / "none").mkdir()
    logs = ["--dnsmasq-log", str(ipxe_site.lan.workdir / "dnsmasq.log"),
            "--nginx-log", str(ipxe_site.lan.workdir / "nginx-access.log")]
    runs = {}
    for nodes in ("nodes", str(tmp_path / "none")):
        done = subprocess.run([sys.executable, "-m", "bootgen", "discover", "--format", "json", "--all", "--nodes",
                               nodes, *logs], cwd=source, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        runs[nodes] = {m["mac"]: m for m in json.loads(done.stdout)["machines"] if m["mac"]}
    known, unknown = runs["nodes"], runs[str(tmp_path / "none")]
    for node in IPXE_NODES:
        assert known[node.mac]["node"] == node.name and unknown[node.mac]["node"] is None
        arch = "x86_64-efi" if node.name in UEFI_NODES else "bios"
        assert arch in known[node.mac]["architectures"], known[node.mac]
        fetched = {(f["via"], f["path"]) for f in known[node.mac]["fetched"]}
        assert ("http", f"ipxe/{node.mac.replace(':', '-')}.ipxe") in fetched, fetched
    assert ("tftp", "ipxe.efi") in {(f["via"], f["path"]) for f in known["52:54:00:e2:00:02"]["fetched"]}
