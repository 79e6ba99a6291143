"""arm64 nodes: their own image set and loader, and never an x86 kernel."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from bootgen.build import Paths, build, plan_build
from bootgen.errors import InputError, RenderError

ROOT = Path(__file__).resolve().parents[2]
SITE = ROOT / "tests" / "sites" / "tftp-local"
ARM_SET = """  arm:
    arch: arm64
    mirror: true
    kernel: {file: images/vmlinuz-arm64, unsigned: true}
"""


@pytest.fixture
def arm_site(tmp_path, monkeypatch):
    shutil.copytree(SITE / "site", tmp_path / "site")
    shutil.copytree(SITE / "nodes", tmp_path / "nodes")
    (tmp_path / "site" / "images" / "vmlinuz-arm64").write_bytes(b"MZ arm64 kernel stand-in")
    site = tmp_path / "site" / "site.yaml"
    site.write_text(site.read_text() + ARM_SET)
    profile = tmp_path / "site" / "profiles" / "live.yaml"
    profile.write_text(profile.read_text().replace("images: local\n", "images: local\nimages_arm64: arm\n"))
    (tmp_path / "nodes" / "pi-server.yaml").write_text(
        "arch: arm64\nprofile: live\ninterfaces:\n  - mac: 52:54:00:aa:00:41\n    address: 10.10.10.41/24\n")
    monkeypatch.chdir(tmp_path)
    return Paths(Path("site"), Path("nodes"), Path("build"))


def _problems(paths) -> list[str]:
    with pytest.raises((InputError, RenderError)) as err:
        plan_build(paths, fetch=False)
    return [p.format().split("\n")[0] for p in err.value.problems]


def test_an_arm64_node_boots_its_arm64_kernel_through_grubnetaa64(arm_site):
    tree = build(arm_site, fetch=False).write.tree
    dnsmasq = (tree / "server" / "dnsmasq.conf").read_text()
    assert "dhcp-match=set:arm64efi,option:client-arch,11\n" in dnsmasq
    assert "dhcp-boot=tag:!ipxe,tag:!efi64,tag:!efihttp64,tag:arm64efi,tag:!efihttparm64,grubnetaa64.efi,," \
           "10.10.10.1\n" in dnsmasq
    assert "dhcp-boot=tag:!ipxe,tag:efi64,tag:!efihttp64,tag:!arm64efi,tag:!efihttparm64,grubnetx64.efi,," \
           "10.10.10.1\n" in dnsmasq
    # HTTP Boot: GRUB cannot fetch its files over HTTP, so x86-64 gets iPXE and arm64 no boot file
    assert "dhcp-boot=tag:!ipxe,tag:!efi64,tag:efihttp64,tag:!arm64efi,tag:!efihttparm64," \
           "http://10.10.10.1:8080/ipxe.efi\n" in dnsmasq
    assert ",tag:efihttparm64," not in dnsmasq and "tag:efihttparm64,60" not in dnsmasq
    assert (tree / "grubnetaa64.efi").read_bytes() == \
        Path("/usr/lib/grub/arm64-efi/monolithic/grubnetaa64.efi").read_bytes()
    assert (tree / "grub" / "arm64-efi" / "http.mod").is_file()
    grub = (tree / "grub" / "grub.cfg-01-52-54-00-aa-00-41").read_text()
    assert "/vmlinuz-arm64" in grub
    assert not (tree / "pxelinux.cfg" / "01-52-54-00-aa-00-41").exists()  # no BIOS arm64 machine
    x86 = (tree / "grub" / "grub.cfg-01-00-25-90-c0-f7-86").read_text()
    assert "/vmlinuz-arm64" not in x86 and "/vmlinuz" in x86


def test_an_x86_only_site_places_no_arm64_loader():
    from bootgen.images import boot_loader_files
    assert not any("aa64" in f.tree_path or "arm64" in f.tree_path for f in boot_loader_files())


def test_an_arm64_node_of_a_profile_without_an_arm64_set_is_refused(arm_site):
    profile = arm_site.site / "profiles" / "live.yaml"
    profile.write_text(profile.read_text().replace("images_arm64: arm\n", ""))
    assert _problems(arm_site) == [
        "nodes/pi-server.yaml:1:7: error at $.arch: node 'pi-server' is arm64, but profile 'live' has no arm64 "
        "image set"]


def test_a_profile_naming_an_x86_set_for_arm64_is_refused(arm_site):
    profile = arm_site.site / "profiles" / "live.yaml"
    profile.write_text(profile.read_text().replace("images_arm64: arm\n", "images_arm64: local\n"))
    assert _problems(arm_site) == [
        "site/profiles/live.yaml:3:15: error at $.images_arm64: image set 'local' is for x86_64 machines, but "
        "`images_arm64` boots arm64 machines"]


def test_arm64_behind_proxy_dhcp_is_refused(arm_site):
    site = arm_site.site / "site.yaml"
    site.write_text(site.read_text().replace("  mode: full\n", "  mode: proxy\n").replace("  uefi_loader: grub\n", ""))
    problems = _problems(arm_site)
    assert len(problems) == 1 and "error at $.images.arm.arch: image set 'arm' is for arm64 machines" in problems[0]
