"""arm64 UEFI: QEMU's virt machine with Debian's AAVMF network-boots an arm64 Debian kernel.

The generated dnsmasq.conf tags the client by its architecture (option 93 = 11,
ARM64_EFI) and hands it grubnetaa64.efi from grub-efi-arm64-bin:arm64; GRUB reads
grub/grub.cfg, finds the machine's own file and loads the arm64 kernel of the
profile's `images_arm64` set. Slow (TCG emulation of another CPU), bounded.
"""
from __future__ import annotations

import pytest

import checks
import rig
import sites
from sites import NodeSpec, SiteSpec

SERVER_IP = "192.168.77.1"
VM_TIMEOUT = 300  # seconds; about 17 s alone on an idle machine (TCG), far more on busy shared cores
NODE = NodeSpec("arm64-node", "52:54:00:e2:00:41", "192.168.77.41/24", arch="arm64")


@pytest.fixture(scope="module")
def arm64_boot(tmp_path_factory, payload, arm64_payload, use_namespaces):
    if not use_namespaces:
        pytest.skip("needs the namespace rig: the generated dnsmasq.conf must tag the arm64 client")
    kernel, initrd = arm64_payload.kernel, arm64_payload.initrd
    dhcp = sites.full_dhcp()
    spec = SiteSpec(f"http://{SERVER_IP}/", SERVER_IP, "tftp", dhcp, arch="arm64")
    tree = sites.build(tmp_path_factory.mktemp("arm64-site"), spec, (NODE,), kernel, initrd)
    workdir = tmp_path_factory.mktemp("arm64")
    lan = rig.NamespaceLan.create(workdir, payload.kernel, SERVER_IP)
    try:
        lan.start_dnsmasq(tree.root / "server" / "dnsmasq.conf")
        lan.start_nginx(tree.root / "server" / "nginx.conf", f"{tree.site.base_url}boot.ipxe")
        machine = rig.Machine(NODE.name, NODE.mac, "aavmf", memory_mb=1024)
        result = rig.boot_all([machine], lan, workdir, VM_TIMEOUT, ("Access Denied",))[NODE.name]
    finally:
        lan.close()
    return tree, lan, result


def test_aavmf_boots_the_arm64_kernel_through_grubnetaa64(arm64_boot):
    tree, lan, result = arm64_boot
    checks.assert_booted(tree, NODE.name, result)
    assert "Booting Linux on physical CPU" in result.serial, result.tail()
    tftp = rig.tftp_requests(lan.workdir / "dnsmasq.log", "192.168.77.41")
    for name in ("/grubnetaa64.efi", "/grub/grub.cfg", "/grub/grub.cfg-01-52-54-00-e2-00-41"):
        assert any(request.endswith(name) for request in tftp), (name, tftp)
    assert "grubnetx64.efi" not in " ".join(tftp) and "ipxe.efi" not in " ".join(tftp), tftp
    print(f"BOOT-TIME arm64 aavmf-grubnetaa64-kernel: {result.seconds:.1f} s")
