"""A site with `boot_configs: [ipxe]`: the real dnsmasq, serving its generated config in a
namespace, hands a BIOS PXE client undionly.kpxe (no pxelinux in the tree) and a UEFI one
ipxe.efi; a SeaBIOS VM boots the node through iPXE. QEMU's NIC ROM is itself iPXE, so the VM
shows the iPXE path (its user class gets boot.ipxe), not undionly.kpxe being loaded."""
from __future__ import annotations

import pytest

import checks
import rig
import sites
from sites import NodeSpec, SiteSpec

SERVER_IP = "192.168.77.1"
VM_TIMEOUT = 240
NODE = NodeSpec("ipxe-only", "52:54:00:e2:00:71", "192.168.77.71/24")


@pytest.fixture(scope="module")
def ipxe_only_lan(tmp_path_factory, payload, use_namespaces):
    if not use_namespaces:
        pytest.skip("needs the namespace rig")
    dhcp = sites.full_dhcp()
    spec = SiteSpec(f"http://{SERVER_IP}/", SERVER_IP, "http", dhcp, boot_configs=("ipxe",))
    tree = sites.build(tmp_path_factory.mktemp("ipxe-only-site"), spec, (NODE,), payload.kernel, payload.initrd)
    workdir = tmp_path_factory.mktemp("ipxe-only")
    with rig.lan_serving(workdir, tree, payload.kernel, SERVER_IP, http=True) as lan:
        yield tree, lan, workdir


def test_the_tree_has_no_pxelinux_or_grub_files(ipxe_only_lan):
    root = ipxe_only_lan[0].root
    assert (root / "undionly.kpxe").is_file() and (root / "ipxe.efi").is_file()
    assert not (root / "pxelinux.cfg").exists() and not (root / "grub").exists()
    assert not (root / "pxelinux.0").exists() and not (root / "lpxelinux.0").exists()


def test_a_bios_pxe_client_is_offered_undionly_kpxe(ipxe_only_lan):
    _, lan, _ = ipxe_only_lan
    offer = lan.dhcp_offer("52:54:00:e2:00:72", "PXEClient:Arch:00000:UNDI:002001", 0)
    assert offer.get("yiaddr"), offer
    assert rig.offered_boot_file(offer) == "undionly.kpxe", offer


def test_a_uefi_pxe_client_is_offered_ipxe_efi(ipxe_only_lan):
    _, lan, _ = ipxe_only_lan
    offer = lan.dhcp_offer("52:54:00:e2:00:73", "PXEClient:Arch:00007:UNDI:003016", 7)
    assert rig.offered_boot_file(offer) == "ipxe.efi", offer


def test_a_seabios_vm_boots_the_node_through_ipxe(ipxe_only_lan):
    tree, lan, workdir = ipxe_only_lan
    result = rig.boot(rig.Machine(NODE.name, NODE.mac, "bios"), lan, workdir, VM_TIMEOUT)
    checks.assert_booted(tree, NODE.name, result)
