"""UEFI HTTP Boot: OVMF asks as HTTPClient, the generated dnsmasq.conf answers with a URL.

OVMF's HttpBootDxe (PXE turned off through fw_cfg, so HTTP Boot is tried first)
sends vendor class HTTPClient and client architecture 16; the generated config
echoes option 60 and names <base_url>ipxe.efi, which OVMF fetches from nginx;
iPXE then chains the machine's script and boots the kernel over HTTP: no TFTP
at all. A DHCP exchange for arm64 (architecture 19) is checked from the bytes of
the offer the generated config makes, since the same config serves both.
"""
from __future__ import annotations

import pytest

import checks
import rig
import sites
from sites import NodeSpec, SiteSpec

SERVER_IP = "192.168.77.1"
VM_TIMEOUT = 240
NODE = NodeSpec("http-boot", "52:54:00:e2:00:51", "192.168.77.51/24")


@pytest.fixture(scope="module")
def http_boot(tmp_path_factory, payload, use_namespaces):
    if not use_namespaces:
        pytest.skip("needs the namespace rig: QEMU user-mode DHCP cannot send option 60")
    dhcp = sites.full_dhcp()
    spec = SiteSpec(f"http://{SERVER_IP}/", SERVER_IP, "http", dhcp)
    tree = sites.build(tmp_path_factory.mktemp("http-boot-site"), spec, (NODE,), payload.kernel, payload.initrd)
    workdir = tmp_path_factory.mktemp("http-boot")
    lan = rig.NamespaceLan.create(workdir, payload.kernel, SERVER_IP)
    try:
        lan.start_dnsmasq(tree.root / "server" / "dnsmasq.conf")
        lan.start_nginx(tree.root / "server" / "nginx.conf", f"{tree.site.base_url}boot.ipxe")
        machine = rig.Machine(NODE.name, NODE.mac, "uefi-http", memory_mb=512)
        result = rig.boot_all([machine], lan, workdir, VM_TIMEOUT, ("Could not retrieve NBP",))[NODE.name]
    finally:
        lan.close()
    return tree, lan, result


def test_ovmf_http_boot_loads_ipxe_efi_from_the_url_and_boots_the_node(http_boot):
    tree, lan, result = http_boot
    checks.assert_booted(tree, NODE.name, result)
    assert "URI: http://192.168.77.1/ipxe.efi" in result.serial, result.tail()
    log = (lan.workdir / "dnsmasq.log").read_text(errors="replace")
    assert "vendor class: HTTPClient:Arch:00016" in log, log[-3000:]
    assert rig.tftp_requests(lan.workdir / "dnsmasq.log", "192.168.77.51") == [], "HTTP Boot used TFTP"
    requests = (lan.workdir / "nginx-access.log").read_text()
    assert "GET /ipxe.efi " in requests and "GET /ipxe/52-54-00-e2-00-51.ipxe " in requests, requests
    print(f"BOOT-TIME uefi-http-boot ovmf-ipxe-kernel: {result.seconds:.1f} s")


@pytest.fixture(scope="module")
def both_arches_lan(tmp_path_factory, payload, use_namespaces):
    """The generated dnsmasq.conf of a site with x86-64 and arm64 image sets, serving a LAN."""
    if not use_namespaces:
        pytest.skip("needs the namespace rig")
    dhcp = sites.full_dhcp()
    spec = SiteSpec(f"http://{SERVER_IP}/", SERVER_IP, "tftp", dhcp, arch="arm64")
    arm_node = NodeSpec("arm-http", "52:54:00:e2:00:61", "192.168.77.61/24", arch="arm64")
    tree = sites.build(tmp_path_factory.mktemp("http-offer-site"), spec, (arm_node,), payload.kernel, payload.initrd)
    with rig.lan_serving(tmp_path_factory.mktemp("http-offer"), tree, payload.kernel, SERVER_IP) as lan:
        yield lan


def test_x86_64_http_clients_get_a_url_and_option_60(both_arches_lan):
    offer = both_arches_lan.dhcp_offer("52:54:00:e2:00:61", "HTTPClient:Arch:00016:UNDI:003000", 16)
    assert rig.offered_boot_file(offer) == "http://192.168.77.1/ipxe.efi", offer
    assert offer["options"].get("60") == "HTTPClient", offer


def test_arm64_http_clients_get_an_address_but_no_boot_file(both_arches_lan):
    """No arm64 loader from Debian boots over HTTP (GRUB has no HTTP built in): the firmware
    goes on to PXE instead of loading a GRUB that cannot read its configuration."""
    offer = both_arches_lan.dhcp_offer("52:54:00:e2:00:61", "HTTPClient:Arch:00019:UNDI:003000", 19)
    assert offer.get("yiaddr"), offer
    assert not rig.offered_boot_file(offer) and offer["options"].get("60") != "HTTPClient", offer


@pytest.mark.parametrize("vendor_class, arch, loader", [
    ("PXEClient:Arch:00011:UNDI:003000", 11, "grubnetaa64.efi"),
    ("PXEClient:Arch:00007:UNDI:003000", 7, "ipxe.efi"),
])
def test_pxe_clients_get_a_tftp_file_and_no_option_60_http(both_arches_lan, vendor_class, arch, loader):
    offer = both_arches_lan.dhcp_offer("52:54:00:e2:00:62", vendor_class, arch)
    assert rig.offered_boot_file(offer) == loader, offer
    assert offer["options"].get("60") != "HTTPClient", offer


def test_grub_loaded_by_http_boot_cannot_read_its_config(tmp_path_factory, payload, use_namespaces):
    """Why the generated config never hands GRUB to an HTTP Boot client (bootgen.loaders, over_http):
    the same OVMF, handed Debian's grubnetx64.efi by URL instead (the config edited by hand), loads
    it and stops at GRUB's prompt without asking for grub/grub.cfg. If a GRUB from Debian ever
    boots this way, this fails, and its registry entry should say it works over HTTP."""
    if not use_namespaces:
        pytest.skip("needs the namespace rig: QEMU user-mode DHCP cannot send option 60")
    dhcp = sites.full_dhcp(uefi_loader="grub")
    node = NodeSpec("grub-over-http", "52:54:00:e2:00:52", "192.168.77.52/24")
    tree = sites.build(tmp_path_factory.mktemp("grub-http-site"), SiteSpec(f"http://{SERVER_IP}/", SERVER_IP, "http",
                                                                           dhcp), (node,), payload.kernel,
                       payload.initrd)
    conf = (tree.root / "server" / "dnsmasq.conf").read_text()
    assert f"{tree.site.base_url}ipxe.efi" in conf, "the generated config hands HTTP Boot clients iPXE"
    workdir = tmp_path_factory.mktemp("grub-http")
    edited = workdir / "dnsmasq-grub-by-url.conf"
    edited.write_text(conf.replace(f"{tree.site.base_url}ipxe.efi", f"{tree.site.base_url}grubnetx64.efi"))
    lan = rig.NamespaceLan.create(workdir, payload.kernel, SERVER_IP)
    try:
        lan.start_dnsmasq(edited)
        lan.start_nginx(tree.root / "server" / "nginx.conf", f"{tree.site.base_url}boot.ipxe")
        machine = rig.Machine(node.name, node.mac, "uefi-http", memory_mb=512)
        result = rig.boot_all([machine], lan, workdir, VM_TIMEOUT, ("grub>",))[node.name]
    finally:
        lan.close()
    requests = (workdir / "nginx-access.log").read_text()
    assert "GET /grubnetx64.efi " in requests, requests
    assert result.stopped_on == "grub>" and result.cmdline is None, result.tail()
    assert "grub.cfg" not in requests, requests


@pytest.fixture(scope="module")
def x86_only_lan(tmp_path_factory, payload, use_namespaces):
    """The generated dnsmasq.conf of a full-DHCP site with x86-64 image sets only, serving a LAN."""
    if not use_namespaces:
        pytest.skip("needs the namespace rig")
    dhcp = sites.full_dhcp()
    spec = SiteSpec(f"http://{SERVER_IP}/", SERVER_IP, "tftp", dhcp)
    tree = sites.build(tmp_path_factory.mktemp("x86-offer-site"), spec, (NODE,), payload.kernel, payload.initrd)
    with rig.lan_serving(tmp_path_factory.mktemp("x86-offer"), tree, payload.kernel, SERVER_IP) as lan:
        yield lan


@pytest.mark.parametrize("vendor_class, arch", [
    ("PXEClient:Arch:00011:UNDI:003000", 11),   # arm64 UEFI
    ("PXEClient:Arch:00006:UNDI:003000", 6),    # IA32 UEFI
    ("HTTPClient:Arch:00019:UNDI:003000", 19),  # arm64 HTTP Boot
])
def test_a_uefi_architecture_the_site_has_no_loader_for_gets_no_boot_file(x86_only_lan, vendor_class, arch):
    """BIOS is the catch-all line; an arm64 machine in an x86-only site once fell into it and was
    offered pxelinux.0, which it cannot run."""
    offer = x86_only_lan.dhcp_offer("52:54:00:e2:00:63", vendor_class, arch)
    assert offer.get("yiaddr"), offer
    assert not rig.offered_boot_file(offer), offer


def test_bios_clients_still_get_pxelinux_in_an_x86_only_site(x86_only_lan):
    offer = x86_only_lan.dhcp_offer("52:54:00:e2:00:64", "PXEClient:Arch:00000:UNDI:002001", 0)
    assert rig.offered_boot_file(offer) == "pxelinux.0", offer
