"""Raspberry Pi 4 network boot by serial number, as far as it can be driven without a Pi.

QEMU cannot network-boot a Pi, so the Pi 4 bootloader's TFTP requests (its
documented order, with a serial-number directory) are replayed with a TFTP
client (curl) against the generated dnsmasq.conf, serving the built tree, in a
network namespace. Every file the Pi must get comes back byte for byte; the ones
it only probes for may be missing, as on a real server.
"""
from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
import yaml

import raspi
import rig
from bootgen.publish.manifest import load_tree

SERVER_IP = "192.168.77.1"
SERIAL = "7092246e"  # seed 003
KERNEL_ARGS = ["console=serial0,115200", "ip=dhcp", "root=/dev/nfs", "nfsroot=192.168.77.1:/srv/pi/7092246e,vers=4",
               "rw"]
FIRMWARE = ("start4.elf", "fixup4.dat", "bcm2711-rpi-4-b.dtb")


def _write_site(root: Path) -> Path:
    """A proxyDHCP site (seed 003's setup) with a PC and the Pi 7092246e."""
    site, nodes = root / "site", root / "nodes"
    (site / "profiles").mkdir(parents=True)
    (site / "pi").mkdir()
    nodes.mkdir()
    for name in (*FIRMWARE, "vmlinuz", "initrd.img"):  # stand-ins: only their bytes are checked
        (site / "pi" / name).write_bytes(f"{name} for the test\n".encode() * 100)
    raw = {"file": "", "unsigned": True}
    site_yaml = {
        "name": "pi", "base_url": f"http://{SERVER_IP}/", "tftp_server": SERVER_IP,
        "dhcp": {"mode": "proxy", "subnet": "192.168.77.0/24", "interface": "br0"},
        "server": {"root": str(root / "build")},
        "defaults": {"profile": "pi-nfs", "boot": "live"},
        "images": {"pi-os": {"arch": "arm64", "mirror": True,
                             "firmware": [{**raw, "file": f"pi/{name}"} for name in FIRMWARE],
                             "kernel": {**raw, "file": "pi/vmlinuz"}, "initrds": [{**raw, "file": "pi/initrd.img"}]},
                   "pc": {"kernel": {"url": f"http://{SERVER_IP}/vmlinuz"}}},
    }
    (site / "site.yaml").write_text(yaml.safe_dump(site_yaml, sort_keys=False))
    (site / "profiles" / "pi-nfs.yaml").write_text(yaml.safe_dump(
        {"images": "pc", "images_arm64": "pi-os", "kernel_args": ["console=serial0,115200"]}))
    (nodes / "pi-7092246e.yaml").write_text(yaml.safe_dump(
        {"serial": SERIAL.upper(), "arch": "arm64", "interfaces": [{"mac": "dc:a6:32:01:02:03"}],
         "kernel_args": KERNEL_ARGS[1:]}))
    (nodes / "pc.yaml").write_text(yaml.safe_dump({"interfaces": [{"mac": "52:54:00:e2:00:71"}]}))
    return root


@pytest.fixture(scope="module")
def pi_tree(tmp_path_factory):
    import os
    import sys
    root = _write_site(tmp_path_factory.mktemp("pi-site"))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    done = subprocess.run([sys.executable, "-m", "bootgen", "build", "--site", str(root / "site"), "--nodes",
                           str(root / "nodes"), "--out", str(root / "build"), "--offline"],
                          cwd=root, capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    return root / "build"


def test_pi4_tftp_sequence_is_answered_from_the_serial_directory(pi_tree, tmp_path, use_namespaces):
    if not use_namespaces:
        pytest.skip("needs a network namespace for dnsmasq's TFTP server")
    (tmp_path / "lan").mkdir()
    lan = rig.NamespaceLan.create(tmp_path / "lan", Path("/dev/null"), SERVER_IP)
    try:
        lan.start_dnsmasq(pi_tree / "server" / "dnsmasq.conf")
        got = raspi.replay_pi4_requests(lan, SERVER_IP, SERIAL, tmp_path)
    finally:
        lan.close()
    for name, data in got.items():
        assert data == (pi_tree / SERIAL / name).read_bytes(), name
    assert got["cmdline.txt"].decode() == " ".join(KERNEL_ARGS) + "\n"
    assert "kernel=vmlinuz\n" in got["config.txt"].decode()
    assert "initramfs initrd.img followkernel\n" in got["config.txt"].decode()
    log = (tmp_path / "lan" / "dnsmasq.log").read_text()
    assert re.search(rf"sent \S*/{SERIAL}/start4\.elf to ", log), log  # from the serial directory, by dnsmasq


def test_pcs_keep_their_boot_entry_first(pi_tree):
    """Seed 003's order: the PCs' x86PC entry first, the Pi's after it, no prompt."""
    lines = (pi_tree / "server" / "dnsmasq.conf").read_text().splitlines()
    services = [line for line in lines if line.startswith("pxe-service=tag:!ipxe,x86PC")]
    assert services == ['pxe-service=tag:!ipxe,x86PC,"bootgen (BIOS)",lpxelinux',
                        'pxe-service=tag:!ipxe,x86PC,"Raspberry Pi Boot"']
    assert 'pxe-prompt="bootgen",0' in lines
    pi_files = sorted(f.path for f in load_tree(pi_tree).files if f.path.startswith(f"{SERIAL}/"))
    assert pi_files == sorted(f"{SERIAL}/{name}" for name in (*FIRMWARE, "vmlinuz", "initrd.img", "config.txt",
                                                                 "cmdline.txt"))
