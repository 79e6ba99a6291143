"""Secure Boot at build time: the signed chain from Debian's packages, and kernels that must be signed."""
from __future__ import annotations

import shutil
import struct
from pathlib import Path

import pytest

from bootgen.build import Paths, build, plan_build
from bootgen.errors import InputError
from bootgen.images.authenticode import signature_problem

ROOT = Path(__file__).resolve().parents[2]
SITE = ROOT / "tests" / "sites" / "tftp-local"
SHIM = Path("/usr/lib/shim/shimx64.efi.signed")
SIGNED_GRUB = Path("/usr/lib/grub/x86_64-efi-signed/grubnetx64.efi.signed")
E2E_KERNELS = sorted(Path("/var/cache/bootgen-e2e/kernel/boot").glob("vmlinuz-*"))


def _signed_kernel() -> Path:
    """A Debian kernel (signed by Debian's Secure Boot key), from the e2e fixtures' cache."""
    if not E2E_KERNELS:
        import subprocess
        subprocess.run(["sh", str(ROOT / "scripts" / "e2e-deps.sh")], check=True, timeout=1200)
    return sorted(Path("/var/cache/bootgen-e2e/kernel/boot").glob("vmlinuz-*"))[0]


def _strip_signature(source: Path, dest: Path) -> None:
    """The kernel with its certificate table entry zeroed, as `sbattach --remove` leaves it."""
    data = bytearray(source.read_bytes())
    pe = struct.unpack_from("<I", data, 0x3C)[0]
    directories = pe + 24 + (96 if struct.unpack_from("<H", data, pe + 24)[0] == 0x10B else 112)
    offset, length = struct.unpack_from("<II", data, directories + 8 * 4)
    struct.pack_into("<II", data, directories + 8 * 4, 0, 0)
    dest.write_bytes(bytes(data[:offset]) if offset + length == len(data) else bytes(data))


def test_authenticode_presence():
    kernel = _signed_kernel()
    assert signature_problem(kernel) is None
    assert signature_problem(SHIM) is None
    assert signature_problem(SIGNED_GRUB) is None
    assert "no Authenticode signature" in signature_problem(Path("/usr/lib/ipxe/ipxe.efi"))
    assert "not an EFI (PE) image" in signature_problem(Path("/usr/lib/PXELINUX/pxelinux.0"))


def test_a_stripped_kernel_is_unsigned(tmp_path):
    _strip_signature(_signed_kernel(), tmp_path / "vmlinuz")
    assert "no Authenticode signature" in signature_problem(tmp_path / "vmlinuz")


@pytest.fixture
def secure_site(tmp_path, monkeypatch):
    shutil.copytree(SITE / "site", tmp_path / "site")
    shutil.copytree(SITE / "nodes", tmp_path / "nodes")
    site = tmp_path / "site" / "site.yaml"
    site.write_text(site.read_text().replace("  uefi_loader: grub\n", "").replace("kernel_transport: tftp",
                                                                                  "kernel_transport: tftp\nsecure_boot: true"))
    monkeypatch.chdir(tmp_path)
    return Paths(Path("site"), Path("nodes"), Path("build"))


def _line_col(path: Path, needle: str) -> tuple[int, int]:
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if needle in line:
            return number, line.index(needle) + 1
    raise AssertionError(needle)


def test_an_unsigned_kernel_is_refused_with_its_declaration(secure_site):
    plan_build(secure_site, fetch=False)  # `check` reads no image bytes: the signature is the build's to check
    with pytest.raises(InputError) as err:
        build(secure_site, fetch=False)
    line, column = _line_col(secure_site.site / "site.yaml", "kernel:")
    assert [p.format().split("\n")[0] for p in err.value.problems] == [
        f"site/site.yaml:{line}:{column}: error at $.images.local.kernel: image set 'local': the kernel vmlinuz "
        "is not an EFI (PE) image: no MZ header; Secure Boot firmware would refuse to start it"]


def test_a_kernel_not_in_the_tree_is_refused(secure_site):
    site = secure_site.site / "site.yaml"
    site.write_text(site.read_text().replace("    mirror: true\n", "    mirror: false\n").replace(
        "kernel: {file: images/vmlinuz, unsigned: true}", "kernel: {url: 'http://10.10.10.1:8080/vmlinuz'}").replace(
        "      - {file: images/initrd.img, unsigned: true}", "      - {url: 'http://10.10.10.1:8080/initrd.img'}"))
    with pytest.raises(InputError) as err:
        plan_build(secure_site, fetch=False)
    assert "under secure_boot GRUB loads kernels over TFTP from the tree only" in err.value.problems[0].message
    assert err.value.problems[0].path == "$.images.local.kernel"


def test_a_signed_kernel_builds_the_signed_chain(secure_site):
    shutil.copyfile(_signed_kernel(), secure_site.site / "images" / "vmlinuz")
    tree = build(secure_site, fetch=False).write.tree
    assert (tree / "shimx64.efi").read_bytes() == SHIM.read_bytes()
    assert (tree / "grubx64.efi").read_bytes() == SIGNED_GRUB.read_bytes()
    dnsmasq = (tree / "server" / "dnsmasq.conf").read_text()
    assert "dhcp-boot=tag:!ipxe,tag:efi64,tag:!efihttp64,tag:!noloader,shimx64.efi,,10.10.10.1" in dnsmasq
    grub = next((tree / "grub").glob("grub.cfg-01-*")).read_text()
    assert "insmod http" not in grub and "(http," not in grub
    assert "  linux /images/" in grub


def test_secure_boot_with_ipxe_as_uefi_loader_is_refused(secure_site):
    site = secure_site.site / "site.yaml"
    site.write_text(site.read_text().replace("  mode: full\n", "  mode: full\n  uefi_loader: ipxe\n"))
    with pytest.raises(InputError) as err:
        plan_build(secure_site, fetch=False)
    assert [p.path for p in err.value.problems] == ["$.dhcp.uefi_loader"]
    assert "Debian's iPXE and syslinux.efi are not signed" in err.value.problems[0].hint


def test_secure_boot_behind_proxy_dhcp_is_refused(secure_site):
    site = secure_site.site / "site.yaml"
    site.write_text(site.read_text().replace("  mode: full\n", "  mode: proxy\n"))
    with pytest.raises(InputError) as err:
        plan_build(secure_site, fetch=False)
    assert [p.path for p in err.value.problems] == ["$.secure_boot"]
