"""UEFI Secure Boot: OVMF with Microsoft's keys enrolled boots the built tree's signed chain.

The generated dnsmasq.conf hands x86-64 UEFI machines shimx64.efi (Debian's
shim-signed, signed by Microsoft's UEFI CA); shim fetches grubx64.efi (Debian's
signed network GRUB) from beside itself and verifies it; GRUB reads grub/grub.cfg,
which finds the machine's own file, and loads Debian's signed kernel over TFTP,
asking shim to verify it. The negative case proves the firmware enforces Secure
Boot: an unsigned loader from the same tree is refused.
"""
from __future__ import annotations

import pytest

import checks
import rig
import sites
from sites import NodeSpec, SiteSpec

SERVER_IP = "192.168.77.1"
VM_TIMEOUT = 240  # seconds; a TCG boot through shim and GRUB takes about 20 alone, more on shared cores
NODE = NodeSpec("sb-node", "52:54:00:e2:00:31", "192.168.77.31/24")
REFUSED = "Access Denied"


def _site() -> SiteSpec:
    dhcp = sites.full_dhcp()
    return SiteSpec(f"http://{SERVER_IP}/", SERVER_IP, "http", dhcp, secure_boot=True)


@pytest.fixture(scope="module")
def secure_tree(tmp_path_factory, payload) -> sites.Tree:
    source = tmp_path_factory.mktemp("secure-boot-site")
    return sites.build(source, _site(), (NODE,), payload.kernel, payload.initrd)


@pytest.fixture(scope="module")
def secure_boot(secure_tree, tmp_path_factory, payload, use_namespaces):
    if not use_namespaces:
        pytest.skip("needs the namespace rig: the generated dnsmasq.conf must hand out shim")
    workdir = tmp_path_factory.mktemp("secure-boot")
    lan = rig.NamespaceLan.create(workdir, payload.kernel, SERVER_IP)
    try:
        lan.start_dnsmasq(secure_tree.root / "server" / "dnsmasq.conf")
        lan.start_nginx(secure_tree.root / "server" / "nginx.conf", f"{secure_tree.site.base_url}boot.ipxe")
        machine = rig.Machine(NODE.name, NODE.mac, "uefi-sb", memory_mb=1024)
        result = rig.boot_all([machine], lan, workdir, VM_TIMEOUT, (REFUSED, "Security Violation",
                                                                   "bad shim signature"))[NODE.name]
    finally:
        lan.close()
    return lan, result


def test_shim_grub_and_a_signed_kernel_boot_with_secure_boot_enforced(secure_tree, secure_boot):
    lan, result = secure_boot
    checks.assert_booted(secure_tree, NODE.name, result)
    assert "UEFI Secure Boot is enabled" in result.serial or "Secure boot enabled" in result.serial, result.tail()
    tftp = rig.tftp_requests(lan.workdir / "dnsmasq.log", "192.168.77.31")
    for name in ("/shimx64.efi", "/grubx64.efi", "/grub/grub.cfg", "/grub/grub.cfg-01-52-54-00-e2-00-31"):
        assert any(request.endswith(name) for request in tftp), (name, tftp)
    assert any("/images/" in request for request in tftp), f"GRUB did not load the kernel over TFTP: {tftp}"
    print(f"BOOT-TIME secure-boot shim-grub-kernel: {result.seconds:.1f} s")


def test_an_unsigned_loader_is_refused_by_the_firmware(secure_tree, tmp_path_factory, payload):
    """The same firmware and keys, handed the tree's unsigned ipxe.efi: the firmware refuses it,
    so the positive test's success is Secure Boot's doing."""
    workdir = tmp_path_factory.mktemp("secure-boot-refused")
    lan = rig.UserLan.create(secure_tree.root, "ipxe.efi", workdir, payload.kernel, private=rig.namespaces_work())
    try:
        machine = rig.Machine("unsigned", "52:54:00:e2:00:32", "uefi-sb", memory_mb=1024)
        result = rig.boot_all([machine], lan, workdir, VM_TIMEOUT, (REFUSED, "iPXE initialising"))["unsigned"]
    finally:
        lan.close()
    assert result.stopped_on == REFUSED, result.tail()
    assert 'failed to load Boot0002 "UEFI PXEv4' in result.serial, result.tail()


MIXED = (NodeSpec("sb-profile-node", "52:54:00:e2:00:33", "192.168.77.33/24", secure_boot=True),
         NodeSpec("plain-uefi-node", "52:54:00:e2:00:34", "192.168.77.34/24"))


def test_a_secure_boot_profile_in_a_site_without_it_gets_shim_by_mac(tmp_path_factory, payload, use_namespaces):
    """Per-profile secure_boot: one dnsmasq.conf hands the Secure Boot profile's machine shim (its MAC
    is tagged) and the other UEFI machine the site's ipxe.efi; both boot their own command line."""
    if not use_namespaces:
        pytest.skip("needs the namespace rig: the generated dnsmasq.conf must tell the machines apart")
    site = SiteSpec(_site().base_url, SERVER_IP, "http", _site().dhcp)  # no site-wide secure_boot
    tree = sites.build(tmp_path_factory.mktemp("mixed-site"), site, MIXED, payload.kernel, payload.initrd)
    workdir = tmp_path_factory.mktemp("mixed")
    lan = rig.NamespaceLan.create(workdir, payload.kernel, SERVER_IP)
    try:
        lan.start_dnsmasq(tree.root / "server" / "dnsmasq.conf")
        lan.start_nginx(tree.root / "server" / "nginx.conf", f"{tree.site.base_url}boot.ipxe")
        machines = [rig.Machine(MIXED[0].name, MIXED[0].mac, "uefi-sb", memory_mb=1024),
                    rig.Machine(MIXED[1].name, MIXED[1].mac, "uefi", memory_mb=512)]
        results = rig.boot_all(machines, lan, workdir, VM_TIMEOUT, (REFUSED, "Security Violation", "bad shim signature"))
    finally:
        lan.close()
    for node in MIXED:
        checks.assert_booted(tree, node.name, results[node.name])
    signed = rig.tftp_requests(workdir / "dnsmasq.log", "192.168.77.33")
    plain = rig.tftp_requests(workdir / "dnsmasq.log", "192.168.77.34")
    assert any(r.endswith("/shimx64.efi") for r in signed) and not any("ipxe.efi" in r for r in signed), signed
    assert any(r.endswith("/ipxe.efi") for r in plain) and not any("shimx64" in r for r in plain), plain
    print(f"BOOT-TIME secure-boot-per-profile: {results[MIXED[0].name].seconds:.1f} s (shim), "
          f"{results[MIXED[1].name].seconds:.1f} s (ipxe.efi)")
