"""site.yaml `boot_configs` that leaves out a config some machine of the site reads is refused
at its file:line:col, every such problem in one run."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from bootgen.build import Paths, plan_build
from bootgen.errors import InputError

SITE = Path(__file__).resolve().parents[1] / "sites" / "ipxe-only"
WHERE = "site/site.yaml:6:15: error at $.boot_configs: boot_configs leaves out"


@pytest.fixture
def site(tmp_path, monkeypatch) -> Path:
    shutil.copytree(SITE / "site", tmp_path / "site")
    shutil.copytree(SITE / "nodes", tmp_path / "nodes")
    monkeypatch.chdir(tmp_path)
    return tmp_path / "site" / "site.yaml"


def _edit(site: Path, old: str, new: str) -> None:
    text = site.read_text()
    assert old in text
    site.write_text(text.replace(old, new, 1))


def _problems() -> list[str]:
    with pytest.raises(InputError) as err:
        plan_build(Paths(Path("site"), Path("nodes"), Path("build")), fetch=False)
    return [p.format() for p in err.value.problems]


def test_the_ipxe_only_site_is_accepted(site):
    plan_build(Paths(Path("site"), Path("nodes"), Path("build")), fetch=False)


def test_secure_boot_needs_grub(site):
    _edit(site, "boot_configs: [ipxe]\n", "boot_configs: [ipxe]\nsecure_boot: true\n")
    problems = _problems()
    assert f"{WHERE} grub, but the site sets secure_boot, and Secure Boot machines boot shim, which loads GRUB\n" \
           "  hint: add grub to boot_configs" in problems


def test_uefi_loader_grub_needs_grub(site):
    _edit(site, "  range: [10.10.10.100, 10.10.10.200]\n", "  range: [10.10.10.100, 10.10.10.200]\n"
                                                             "  uefi_loader: grub\n")
    assert _problems() == [
        f"{WHERE} grub, but UEFI machines are handed grub first (dhcp.uefi_loader), which reads it\n"
        "  hint: add grub to boot_configs, or set `dhcp.uefi_loader` to a loader whose config it has "
        "(ipxe, grub; syslinux reads pxelinux's)"]


def test_grub_only_leaves_bios_and_the_default_uefi_loader_without_a_config(site):
    _edit(site, "boot_configs: [ipxe]", "boot_configs: [grub]")
    problems = _problems()
    assert any(p.startswith(f"{WHERE} ipxe, but UEFI machines are handed ipxe first") for p in problems)
    assert any(p.startswith(f"{WHERE} ipxe, but BIOS machines need pxelinux or iPXE (undionly.kpxe)")
               for p in problems)


def test_arm64_image_sets_need_grub(site):
    _edit(site, "images:\n", "images:\n  arm:\n    arch: arm64\n    mirror: true\n"
                             "    kernel: {file: images/vmlinuz, unsigned: true}\n")
    assert _problems() == [f"{WHERE} grub, but image set 'arm' is for arm64 machines, which boot through GRUB only\n"
                           "  hint: add grub to boot_configs"]


def test_a_profile_with_none_of_the_sites_configs_is_refused_at_its_loaders(site):
    profile = site.parent / "profiles" / "live.yaml"
    profile.write_text(profile.read_text() + "loaders: [pxelinux, grub]\n")
    line = len(profile.read_text().splitlines())
    assert _problems() == [
        f"site/profiles/live.yaml:{line}:10: error at $.loaders: profile 'live' has loaders pxelinux, grub, "
        "none of them in site.yaml's boot_configs (ipxe)\n"
        "  hint: add one of the site's boot_configs to the profile's loaders"]


def test_an_unknown_boot_config_is_a_schema_error(site):
    _edit(site, "boot_configs: [ipxe]", "boot_configs: [ipxe, petitboot]")
    problems = _problems()
    assert len(problems) == 1 and problems[0].startswith("site/site.yaml:6:")


def test_raspberry_pi_image_sets_need_the_pis_configs(site):
    (site.parent / "images" / "start4.elf").write_bytes(b"firmware stand-in")
    site.write_text(site.read_text() + "  pi:\n    arch: arm64\n    mirror: true\n    firmware:\n"
                    "      - {file: images/start4.elf, unsigned: true}\n"
                    "    kernel: {file: images/vmlinuz, unsigned: true}\n")
    assert _problems() == [f"{WHERE} raspberrypi, but image set 'pi' has Raspberry Pi firmware, and Pis read their "
                           "own config\n  hint: add raspberrypi to boot_configs"]
    _edit(site, "boot_configs: [ipxe]", "boot_configs: [ipxe, raspberrypi]")
    plan_build(Paths(Path("site"), Path("nodes"), Path("build")), fetch=False)
