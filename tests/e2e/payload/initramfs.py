"""Build the e2e test initramfs: busybox, NIC driver modules and an /init.

The archive is a gzip'd cpio in the kernel's "newc" format, written here
directly so the build needs neither root (for the /dev/console node) nor the
cpio tool. Run as a script to build one by hand:

    python tests/e2e/payload/initramfs.py /var/cache/bootgen-e2e/kernel out.img
"""
from __future__ import annotations

import gzip
import sys
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
BUSYBOX = Path("/bin/busybox")
# The PCI transport is no dependency of virtio_net, so it is named itself.
NIC_MODULES = ("virtio_pci", "virtio_net", "e1000")

S_IFDIR, S_IFREG, S_IFCHR = 0o040000, 0o100000, 0o020000


@dataclass(frozen=True)
class Entry:
    """One member of the cpio archive."""

    name: str
    mode: int
    data: bytes = b""
    rdev: tuple[int, int] = (0, 0)


def _header(entry: Entry, ino: int) -> bytes:
    name = entry.name.encode() + b"\0"
    fields = [
        ino, entry.mode, 0, 0, 1, 0, len(entry.data),
        0, 0, entry.rdev[0], entry.rdev[1], len(name), 0,
    ]
    return b"070701" + b"".join(b"%08X" % value for value in fields) + name


def _pad(length: int) -> bytes:
    return b"\0" * (-length % 4)


def cpio_newc(entries: list[Entry]) -> bytes:
    """Serialize entries as a newc cpio archive (the format the kernel unpacks)."""
    out = bytearray()
    for ino, entry in enumerate([*entries, Entry("TRAILER!!!", 0)], start=1):
        out += _header(entry, ino)
        out += _pad(len(out))
        out += entry.data
        out += _pad(len(out))
    return bytes(out)


def module_dir(kernel_dir: Path) -> Path:
    """The one lib/modules/<version> directory of an unpacked kernel package."""
    versions = sorted((kernel_dir / "lib" / "modules").iterdir())
    if len(versions) != 1:
        raise RuntimeError(f"expected one kernel version under {kernel_dir}/lib/modules, found {versions}")
    return versions[0]


def modules_in_load_order(mod_dir: Path, wanted: tuple[str, ...]) -> list[str]:
    """Relative paths of the wanted modules and their dependencies, dependencies first.

    modules.dep lists each module's full dependency closure; loading the
    dependencies in reverse order of that list satisfies each one before use.
    """
    deps: dict[str, list[str]] = {}
    for line in (mod_dir / "modules.dep").read_text().splitlines():
        target, _, rest = line.partition(":")
        deps[target] = rest.split()
    by_name = {Path(path).name.split(".ko")[0]: path for path in deps}
    order: list[str] = []
    for name in wanted:
        if name not in by_name:
            raise RuntimeError(f"module {name} is not in {mod_dir}/modules.dep")
        for path in [*reversed(deps[by_name[name]]), by_name[name]]:
            if path not in order:
                order.append(path)
    return order


def initramfs_entries(kernel_dir: Path, busybox: Path = BUSYBOX) -> list[Entry]:
    """Every file of the test initramfs (`busybox` for the kernel's architecture)."""
    mod_dir = module_dir(kernel_dir)
    modules = modules_in_load_order(mod_dir, NIC_MODULES)
    entries = [Entry(name, S_IFDIR | 0o755) for name in ("bin", "dev", "etc", "proc", "sys", "tmp", "lib", "lib/modules")]
    entries += [
        Entry("dev/console", S_IFCHR | 0o600, rdev=(5, 1)),
        Entry("bin/busybox", S_IFREG | 0o755, busybox.read_bytes()),
        Entry("init", S_IFREG | 0o755, (HERE / "init.sh").read_bytes()),
        Entry("etc/udhcpc.script", S_IFREG | 0o755, (HERE / "udhcpc.script").read_bytes()),
        Entry("etc/modules.order", S_IFREG | 0o644, "".join(f"{Path(m).name}\n" for m in modules).encode()),
    ]
    entries += [Entry(f"lib/modules/{Path(m).name}", S_IFREG | 0o644, (mod_dir / m).read_bytes()) for m in modules]
    return entries


def build_initramfs(kernel_dir: Path, out: Path, busybox: Path = BUSYBOX) -> Path:
    """Write the gzip'd initramfs for the kernel unpacked at kernel_dir to out."""
    archive = cpio_newc(initramfs_entries(kernel_dir, busybox))
    out.write_bytes(gzip.compress(archive, compresslevel=6, mtime=0))
    return out


if __name__ == "__main__":
    build_initramfs(Path(sys.argv[1]), Path(sys.argv[2]))
