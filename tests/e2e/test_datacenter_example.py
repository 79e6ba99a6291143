"""The second example site, examples/datacenter/, checked, built and booted as an operator would.

The example keeps no binaries in Git: its mirrored image sets name files under
site/files/ that the operator puts in place from Debian packages. Here they come
from the packages the other boot tests download (scripts/e2e-deps.sh): Debian's
signed amd64 kernel, its arm64 kernel and the Pi 4's device tree from that
package, with the test initramfs. Debian's raspi-firmware is not among them
(non-free-firmware), so start4.elf and fixup4.dat are stand-ins whose bytes are
only compared. Three of its nodes then boot from the built tree: Secure Boot
(shim, signed GRUB, Debian's signed kernel), arm64 (GRUB) and UEFI HTTP Boot
(iPXE by URL). The example's own site.yaml and node files are used unchanged;
only where the tree is served from differs (its `server.root` is
/srv/bootgen/current, so the test serves the built tree from a copy of the
generated configs with that one path replaced).
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

import raspi
import rig

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "datacenter"
SERVER_IP = "192.168.0.3"  # the example's tftp_server and base_url host
SERVED_ROOT = "/srv/bootgen/current"  # the example's server.root
VM_TIMEOUT = 300  # seconds; 18-35 s alone under TCG (arm64 emulated), far more on busy shared cores
PI_SERIAL = "7092246e"
PI_STAND_INS = {"start4.elf": b"start4.elf stand-in\n" * 64, "fixup4.dat": b"fixup4.dat stand-in\n" * 64}


def _bootgen(workdir: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    return subprocess.run([sys.executable, "-m", "bootgen", *args], cwd=workdir, capture_output=True, text=True,
                          timeout=180, env=env)


def _fresh_copy(dest: Path) -> Path:
    """The example as a fresh clone has it: no files put in place, nothing built."""
    shutil.copytree(EXAMPLE, dest, ignore=shutil.ignore_patterns("build", ".bootgen", "files"))
    return dest


def _put_files_in_place(site: Path, payload, arm64_payload) -> None:
    """What the operator does before building (examples/datacenter/README.md), from the e2e cache."""
    dtbs = sorted((rig.CACHE / "arm64" / "usr" / "lib").glob("linux-image-*/broadcom/bcm2711-rpi-4-b.dtb"))
    assert len(dtbs) == 1, f"run scripts/e2e-deps.sh: expected the Pi 4 device tree in the arm64 kernel, got {dtbs}"
    files = {"amd64/vmlinuz": payload.kernel, "amd64/initrd.img": payload.initrd,
             "arm64/vmlinuz": arm64_payload.kernel, "arm64/initrd.img": arm64_payload.initrd,
             "raspi/bcm2711-rpi-4-b.dtb": dtbs[0]}
    for name, source in files.items():
        (site / "files" / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, site / "files" / name)
    for name, data in PI_STAND_INS.items():
        (site / "files" / "raspi" / name).write_bytes(data)


def _kernel_args(root: Path, node: str) -> list[str]:
    """The node's kernel command line as the example writes it: site defaults, profile, node."""
    site = yaml.safe_load((root / "site" / "site.yaml").read_text())
    node_yaml = yaml.safe_load((root / "nodes" / f"{node}.yaml").read_text())
    profile_name = node_yaml.get("profile") or site["defaults"]["profile"]
    profile = yaml.safe_load((root / "site" / "profiles" / f"{profile_name}.yaml").read_text())
    return [*site["defaults"].get("kernel_args", []), *profile.get("kernel_args", []),
            *node_yaml.get("kernel_args", [])]


@pytest.fixture(scope="module")
def example(tmp_path_factory, payload, arm64_payload) -> Path:
    root = _fresh_copy(tmp_path_factory.mktemp("datacenter") / "datacenter")
    _put_files_in_place(root / "site", payload, arm64_payload)
    done = _bootgen(root, "build", "--offline")
    assert done.returncode == 0, done.stdout + done.stderr
    return root


def test_check_passes_offline_from_a_fresh_clone_and_build_names_the_missing_files(tmp_path):
    root = _fresh_copy(tmp_path / "datacenter")
    checked = _bootgen(root, "check")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    built = _bootgen(root, "build", "--offline")
    assert built.returncode == 1, built.stdout + built.stderr
    assert re.search(r"site/site\.yaml:\d+:\d+: error at \$\.images\.debian-amd64\.kernel\.file: "
                     r"image file 'files/amd64/vmlinuz' not found in the site directory", built.stderr), built.stderr
    assert not (root / "build").exists()


def test_the_tree_holds_every_firmware_path(example):
    tree = example / "build"
    for loader in ("shimx64.efi", "grubx64.efi", "grubnetaa64.efi"):
        assert (tree / loader).is_file(), loader
    assert (tree / "grubx64.efi").read_bytes() == \
        Path("/usr/lib/grub/x86_64-efi-signed/grubnetx64.efi.signed").read_bytes()
    arm64_kernel = (example / "site" / "files" / "arm64" / "vmlinuz").read_bytes()
    arm64_grub = (tree / "grub" / "grub.cfg-01-52-54-00-dc-00-21").read_text()
    kernel_path = re.search(r"^\s*linux (\S+)", arm64_grub, re.M).group(1)
    assert (tree / kernel_path.lstrip("/")).read_bytes() == arm64_kernel, "the arm64 node got another kernel"
    assert not (tree / "pxelinux.cfg" / "01-52-54-00-dc-00-21").exists(), "an arm64 node got a pxelinux entry"
    pi = tree / PI_SERIAL
    assert (pi / "vmlinuz").read_bytes() == arm64_kernel
    for name, data in PI_STAND_INS.items():
        assert (pi / name).read_bytes() == data
    assert (pi / "bcm2711-rpi-4-b.dtb").read_bytes() == \
        (example / "site" / "files" / "raspi" / "bcm2711-rpi-4-b.dtb").read_bytes()
    assert (pi / "cmdline.txt").read_text() == " ".join(_kernel_args(example, f"pi-{PI_SERIAL}")) + "\n"
    dnsmasq = (tree / "server" / "dnsmasq.conf").read_text().splitlines()
    assert "dhcp-match=set:arm64efi,option:client-arch,11" in dnsmasq
    assert any(line.endswith(",shimx64.efi,,192.168.0.3") and "tag:efi64" in line for line in dnsmasq), dnsmasq
    assert "dhcp-host=dc:a6:32:70:92:46,192.168.0.6,pi-7092246e" in dnsmasq


def _served_copy(config: Path, tree: Path, workdir: Path) -> Path:
    """The generated config with the example's server.root replaced by where the tree is."""
    text = config.read_text()
    assert SERVED_ROOT in text, f"expected {SERVED_ROOT} in {config}"
    copy = workdir / f"served-{config.name}"
    copy.write_text(text.replace(SERVED_ROOT, str(tree.resolve())))
    return copy


def _boot(example: Path, node: str, firmware: str, workdir: Path, kernel: Path, stop_on: tuple[str, ...],
          memory_mb: int = 1024, http: bool = False) -> tuple[rig.BootResult, Path]:
    """Boot the example's node from the built tree, served by the tree's own dnsmasq.conf (and
    nginx.conf); (its result, the dnsmasq log)."""
    tree = example / "build"
    mac = yaml.safe_load((example / "nodes" / f"{node}.yaml").read_text())["interfaces"][0]["mac"]
    lan = rig.NamespaceLan.create(workdir, kernel, SERVER_IP)
    try:
        lan.start_dnsmasq(_served_copy(tree / "server" / "dnsmasq.conf", tree, workdir))
        if http:
            lan.start_nginx(_served_copy(tree / "server" / "nginx.conf", tree, workdir), f"http://{SERVER_IP}/boot.ipxe")
        result = rig.boot_all([rig.Machine(node, mac, firmware, memory_mb=memory_mb)], lan, workdir, VM_TIMEOUT,
                              stop_on)[node]
    finally:
        lan.close()
    assert result.cmdline is not None, f"the example's kernel never ran; serial log ends:\n{result.tail()}"
    assert result.cmdline_words() == _kernel_args(example, node), result.cmdline
    return result, workdir / "dnsmasq.log"


def _requested(log: Path, address: str, names: tuple[str, ...]) -> None:
    tftp = rig.tftp_requests(log, address)
    for name in names:
        assert any(request.endswith(name) for request in tftp), (name, tftp)


def test_the_secure_boot_node_boots_shim_grub_and_its_signed_kernel(example, tmp_path, payload, use_namespaces):
    if not use_namespaces:
        pytest.skip("needs the namespace rig: the example's dnsmasq.conf must hand out shim")
    result, log = _boot(example, "sb-web-1", "uefi-sb", tmp_path, payload.kernel,
                        ("Access Denied", "Security Violation", "bad shim signature"))
    assert "UEFI Secure Boot is enabled" in result.serial or "Secure boot enabled" in result.serial, result.tail()
    _requested(log, "192.168.0.11", ("/shimx64.efi", "/grubx64.efi", "/grub/grub.cfg",
                                     "/grub/grub.cfg-01-52-54-00-dc-00-11"))
    print(f"BOOT-TIME datacenter-example secure-boot: {result.seconds:.1f} s")


def test_the_arm64_node_boots_grubnetaa64_and_its_arm64_kernel(example, tmp_path, payload, use_namespaces):
    if not use_namespaces:
        pytest.skip("needs the namespace rig: the example's dnsmasq.conf must tag the arm64 client")
    result, log = _boot(example, "arm64-db-1", "aavmf", tmp_path, payload.kernel, ("Access Denied",))
    assert "Booting Linux on physical CPU" in result.serial, result.tail()
    _requested(log, "192.168.0.21", ("/grubnetaa64.efi", "/grub/grub.cfg-01-52-54-00-dc-00-21"))
    print(f"BOOT-TIME datacenter-example arm64: {result.seconds:.1f} s")


def test_the_http_boot_node_boots_ipxe_by_url_with_no_tftp(example, tmp_path, payload, use_namespaces):
    """A machine with Secure Boot off that boots by UEFI HTTP Boot: the example's dnsmasq.conf
    hands it ipxe.efi by URL, the only Debian loader that boots over HTTP."""
    if not use_namespaces:
        pytest.skip("needs the namespace rig: QEMU user-mode DHCP cannot send option 60")
    result, log = _boot(example, "http-app-1", "uefi-http", tmp_path, payload.kernel, ("Could not retrieve NBP",),
                        memory_mb=512, http=True)
    assert f"URI: http://{SERVER_IP}/ipxe.efi" in result.serial, result.tail()
    assert rig.tftp_requests(log, "192.168.0.31") == [], "HTTP Boot used TFTP"
    requests = (tmp_path / "nginx-access.log").read_text()
    assert "GET /ipxe/52-54-00-dc-00-31.ipxe " in requests and "GET /images/" in requests, requests
    print(f"BOOT-TIME datacenter-example http-boot: {result.seconds:.1f} s")


def test_the_pi_gets_its_address_and_next_server_then_every_file_of_its_serial_directory(example, tmp_path,
                                                                                         use_namespaces):
    """Full DHCP (this example) rather than proxyDHCP (test_raspberry_pi.py): the Pi 4 asks as a
    BIOS PXE client; the offer carries its reserved address and this server as next-server, and
    its TFTP requests are all answered from <serial>/ of the built tree."""
    if not use_namespaces:
        pytest.skip("needs a network namespace for the example's dnsmasq")
    tree = example / "build"
    node = yaml.safe_load((example / "nodes" / f"pi-{PI_SERIAL}.yaml").read_text())["interfaces"][0]
    lan = rig.NamespaceLan.create(tmp_path, Path("/dev/null"), SERVER_IP)
    try:
        lan.start_dnsmasq(_served_copy(tree / "server" / "dnsmasq.conf", tree, tmp_path))
        offer = lan.dhcp_offer(node["mac"], "PXEClient:Arch:00000:UNDI:002001", 0)
        got = raspi.replay_pi4_requests(lan, SERVER_IP, PI_SERIAL, tmp_path)
    finally:
        lan.close()
    assert (offer.get("yiaddr"), offer.get("siaddr")) == (node["address"].split("/")[0], SERVER_IP), offer
    for name, data in got.items():
        assert data == (tree / PI_SERIAL / name).read_bytes(), name
    assert got["cmdline.txt"].decode() == " ".join(_kernel_args(example, f"pi-{PI_SERIAL}")) + "\n"
