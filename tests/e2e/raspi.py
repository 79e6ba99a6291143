"""What a Raspberry Pi 4 asks the boot server for, replayed with a TFTP client (QEMU cannot
network-boot a Pi)."""
from __future__ import annotations

import subprocess
from pathlib import Path

# The Pi 4 bootloader, then start4.elf, per the Raspberry Pi documentation of network boot:
# (path, must exist). The first request probes whether the serial directory exists.
PI4_SEQUENCE = [
    ("start4.elf", True), ("config.txt", True), ("pieeprom.sig", False), ("recover4.elf", False),
    ("recovery.elf", False), ("start4.elf", True), ("fixup4.dat", True),
    ("recovery.elf", False), ("config.txt", True), ("dt-blob.bin", False), ("bootcfg.txt", False),
    ("bcm2711-rpi-4-b.dtb", True), ("overlays/overlay_map.dtb", False), ("config.txt", True),
    ("cmdline.txt", True), ("armstub8-gic.bin", False), ("vmlinuz", True), ("initrd.img", True),
]


def tftp_get(lan, server_ip: str, path: str, out: Path) -> bool:
    """Fetch one file over TFTP from inside the LAN's namespace (curl); whether it was served."""
    done = subprocess.run(lan.wrap(["curl", "-s", "--max-time", "20", "-o", str(out), f"tftp://{server_ip}/{path}"]),
                          capture_output=True, timeout=60)
    return done.returncode == 0


def replay_pi4_requests(lan, server_ip: str, serial: str, workdir: Path) -> dict[str, bytes]:
    """The Pi 4's requests for its serial directory, in order; the bytes of each file served.
    A file the Pi needs and does not get fails the caller's test here."""
    got = {}
    for index, (name, needed) in enumerate(PI4_SEQUENCE):
        out = workdir / f"{index}-{name.replace('/', '_')}"
        found = tftp_get(lan, server_ip, f"{serial}/{name}", out)
        assert found or not needed, f"{serial}/{name} not served"
        if found:
            got[name] = out.read_bytes()
    return got
