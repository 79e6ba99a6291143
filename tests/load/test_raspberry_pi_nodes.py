"""Raspberry Pi nodes: serial numbers are validated and unique, like MACs."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from bootgen.build import Paths, build, plan_build
from bootgen.errors import InputError, RenderError

ROOT = Path(__file__).resolve().parents[2]
SITE = ROOT / "tests" / "sites" / "tftp-local"
PI_SET = """  pi:
    arch: arm64
    mirror: true
    firmware:
      - {file: images/start4.elf, unsigned: true}
    kernel: {file: images/vmlinuz, unsigned: true}
"""
PI_NODE = "serial: {serial}\narch: arm64\nprofile: live\ninterfaces:\n  - mac: {mac}\n"


@pytest.fixture
def pi_site(tmp_path, monkeypatch):
    shutil.copytree(SITE / "site", tmp_path / "site")
    shutil.copytree(SITE / "nodes", tmp_path / "nodes")
    (tmp_path / "site" / "images" / "start4.elf").write_bytes(b"firmware stand-in")
    site = tmp_path / "site" / "site.yaml"
    site.write_text(site.read_text() + PI_SET)
    profile = tmp_path / "site" / "profiles" / "live.yaml"
    profile.write_text(profile.read_text().replace("images: local\n", "images: local\nimages_arm64: pi\n"))
    (tmp_path / "nodes" / "pi-a.yaml").write_text(PI_NODE.format(serial="7092246E", mac="dc:a6:32:00:00:01"))
    monkeypatch.chdir(tmp_path)
    return Paths(Path("site"), Path("nodes"), Path("build"))


def _problems(paths) -> list[str]:
    with pytest.raises((InputError, RenderError)) as err:
        plan_build(paths, fetch=False)
    return [p.format().split("\n")[0] for p in err.value.problems]


def test_a_pi_gets_its_serial_directory(pi_site):
    tree = build(pi_site, fetch=False).write.tree
    assert sorted(p.name for p in (tree / "7092246e").iterdir()) == \
        ["cmdline.txt", "config.txt", "start4.elf", "vmlinuz"]  # the set has no initrd
    cmdline = (tree / "7092246e" / "cmdline.txt").read_text()
    assert cmdline.startswith("cloud-config-url=http://10.10.10.1:8080/configs/pi-a/") and cmdline.endswith("\n")
    assert not (tree / "grubnetaa64.efi").exists()  # a Pi does not boot UEFI: no arm64 GRUB needed
    assert "Raspberry Pi Boot" not in (tree / "server" / "dnsmasq.conf").read_text()  # full DHCP: no PXE menu


@pytest.mark.parametrize("serial", ["7092246", "7092246e0", "7092246g", "0x092246"])
def test_a_serial_is_eight_hex_digits(pi_site, serial):
    (pi_site.nodes / "pi-a.yaml").write_text(PI_NODE.format(serial=f'"{serial}"', mac="dc:a6:32:00:00:01"))
    assert _problems(pi_site) == [
        f"nodes/pi-a.yaml:1:9: error at $.serial: '{serial}' is not a Raspberry Pi serial number (8 hex digits, "
        "the end of `Serial` in /proc/cpuinfo, e.g. 7092246e)"]


def test_a_serial_used_twice_is_named_like_a_mac(pi_site):
    (pi_site.nodes / "pi-b.yaml").write_text(PI_NODE.format(serial="7092246e", mac="dc:a6:32:00:00:02"))
    assert _problems(pi_site) == [
        "nodes/pi-b.yaml:1:9: error at $.serial: serial 7092246e is also used by node 'pi-a' (nodes/pi-a.yaml:1:9)"]


def test_a_pi_must_be_arm64(pi_site):
    (pi_site.nodes / "pi-a.yaml").write_text("serial: 7092246e\nprofile: live\ninterfaces:\n  - mac: dc:a6:32:00:00:01\n")
    assert _problems(pi_site) == [
        "nodes/pi-a.yaml:1:9: error at $.serial: node 'pi-a' is a Raspberry Pi (it has a serial number) but not "
        "arch: arm64"]


def test_pi_firmware_must_be_mirrored(pi_site):
    site = pi_site.site / "site.yaml"
    site.write_text(site.read_text().replace(PI_SET, PI_SET.replace("    mirror: true\n", "")))
    problems = _problems(pi_site)
    assert any("error at $.images.pi.firmware: Raspberry Pi firmware needs `mirror: true`" in p for p in problems)


@pytest.mark.parametrize("name", ["cmdline.txt", "config.txt", "vmlinuz"])
def test_a_firmware_file_may_not_take_a_name_the_pi_directory_already_uses(pi_site, name):
    """Firmware, kernel and initrds share the Pi's directory with the config.txt and cmdline.txt
    bootgen writes there: one name for two files would leave one of them unserved."""
    (pi_site.site / "images" / "fw").mkdir()
    (pi_site.site / "images" / "fw" / name).write_bytes(b"the operator's own copy\n")
    site = pi_site.site / "site.yaml"
    site.write_text(site.read_text().replace(
        "      - {file: images/start4.elf, unsigned: true}\n",
        f"      - {{file: images/start4.elf, unsigned: true}}\n      - {{file: images/fw/{name}, unsigned: true}}\n"))
    owner = "bootgen writes it" if name.endswith(".txt") else "$.images.pi.kernel has it too"
    problems = _problems(pi_site)
    assert len(problems) == 1 and problems[0].endswith(
        f"error at $.images.pi.firmware[1]: '{name}' is a file name this Raspberry Pi set already uses in a "
        f"Pi's directory ({owner})"), problems
    line = site.read_text().splitlines().index(f"      - {{file: images/fw/{name}, unsigned: true}}") + 1
    assert problems[0].startswith(f"site/site.yaml:{line}:"), problems


def test_a_name_taken_from_an_iso_counts_too(pi_site):
    site = pi_site.site / "site.yaml"
    site.write_text(site.read_text().replace(PI_SET, PI_SET.replace(
        "    kernel: {file: images/vmlinuz, unsigned: true}\n",
        "    iso:\n      url: http://192.0.2.1/pi.iso\n      sha256: " + "ab" * 32 + "\n"
        "      extract: {kernel: boot/vmlinuz, initrds: [boot/firmware/config.txt]}\n")))
    problems = _problems(pi_site)
    assert any(p.endswith("error at $.images.pi.iso.extract.initrds[0]: 'config.txt' is a file name this Raspberry Pi "
                          "set already uses in a Pi's directory (bootgen writes it)") for p in problems), problems


def test_an_arm64_uefi_node_may_not_boot_a_raspberry_pi_set(pi_site):
    """With no serial the node is an arm64 UEFI server: a Pi's set (firmware, no UEFI loader placed
    for it) would leave it with a GRUB file no loader reads, and full DHCP would hand it pxelinux.0."""
    (pi_site.nodes / "arm-uefi.yaml").write_text("arch: arm64\nprofile: live\ninterfaces:\n  - mac: 52:54:00:00:00:99\n")
    assert _problems(pi_site) == [
        "nodes/arm-uefi.yaml:1:7: error at $.arch: node 'arm-uefi' is an arm64 UEFI machine (it has no serial "
        "number), but profile 'live' boots arm64 machines from image set 'pi', a Raspberry Pi's (it has `firmware`)"]


def test_two_files_of_one_node_on_one_path_are_refused_before_either_is_placed(pi_site, monkeypatch):
    """A guard under the name checks above: a target that names one path twice for one node
    (here the Pi's own target, made to) is an error, and no tree is made."""
    from bootgen.plan import Artifact
    from bootgen.render import targets

    pi = targets.TARGETS["raspberrypi"]

    def twice(ctx, entry):
        files = pi(ctx, entry)
        kernel = next(a for a in files if a.path.endswith("/vmlinuz"))
        return files + [Artifact.from_bytes(kernel.path, b"generated\n", target="raspberrypi", node=kernel.node)]

    monkeypatch.setitem(targets.TARGETS, "raspberrypi", twice)
    with pytest.raises(RenderError) as err:
        build(pi_site, fetch=False)
    assert [p.format().split("\n")[0] for p in err.value.problems] == [
        "nodes/pi-a.yaml:1:1: error: node 'pi-a': two of its files claim 7092246e/vmlinuz: raspberrypi for node "
        "'pi-a' and raspberrypi for node 'pi-a'"]
    assert not pi_site.out.exists()
