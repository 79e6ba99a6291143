"""Boot loader binaries from Debian packages, placed at the tree root.

GRUB: Debian's grubnetx64.efi is built with prefix `/grub` (visible with
`strings grubnetx64.efi`), so it looks for `grub/grub.cfg` and loads modules
from `grub/x86_64-efi/<name>.mod` on its TFTP/HTTP server. It has no HTTP
built in, so http.mod and the modules it needs (moddep.lst) ship beside it.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..errors import ImageError, Location, Problem
from .digests import hash_file
from .placed import PlacedFile

GRUB_PREFIX = "grub"
GRUB_PLATFORM = "x86_64-efi"
GRUB_NET_MODULES = ("http",)  # modules grub.cfg will `insmod`


@dataclass(frozen=True)
class _Package:
    """Where a Debian package installs the files we take from it."""

    name: str
    directory: Path


_PXELINUX = _Package("pxelinux", Path("/usr/lib/PXELINUX"))
_SYSLINUX_COMMON = _Package("syslinux-common", Path("/usr/lib/syslinux/modules"))
_SYSLINUX_EFI = _Package("syslinux-efi", Path("/usr/lib/SYSLINUX.EFI"))
_IPXE = _Package("ipxe", Path("/usr/lib/ipxe"))
_GRUB = _Package("grub-efi-amd64-bin", Path("/usr/lib/grub/x86_64-efi"))

# tree path -> (package, path relative to the package directory)
_LOADERS: dict[str, tuple[_Package, str]] = {
    "pxelinux.0": (_PXELINUX, "pxelinux.0"),
    "lpxelinux.0": (_PXELINUX, "lpxelinux.0"),
    **{name: (_SYSLINUX_COMMON, f"bios/{name}") for name in
       ("ldlinux.c32", "menu.c32", "libutil.c32", "libcom32.c32", "vesamenu.c32")},
    "efi64/syslinux.efi": (_SYSLINUX_EFI, "efi64/syslinux.efi"),
    "efi64/ldlinux.e64": (_SYSLINUX_COMMON, "efi64/ldlinux.e64"),
    "undionly.kpxe": (_IPXE, "undionly.kpxe"),
    "ipxe.efi": (_IPXE, "ipxe.efi"),
    "grubnetx64.efi": (_GRUB, "monolithic/grubnetx64.efi"),
}


def boot_loader_files(*, search_dirs: dict[str, Path] | None = None) -> tuple[PlacedFile, ...]:
    """Boot loaders to place at the tree root, sorted by tree path.

    `search_dirs` maps a Debian package name to a directory to use instead of
    where the package installs (e.g. {"ipxe": Path("/opt/ipxe")}). A missing
    file raises ImageError naming the package to install.
    """
    search_dirs = search_dirs or {}
    wanted = dict(_LOADERS)
    problems: list[Problem] = []
    grub_dir = Path(search_dirs.get(_GRUB.name, _GRUB.directory))
    try:
        for module in grub_modules(grub_dir / "moddep.lst", GRUB_NET_MODULES):
            wanted[f"{GRUB_PREFIX}/{GRUB_PLATFORM}/{module}.mod"] = (_GRUB, f"{module}.mod")
    except OSError:
        problems.append(_missing(_GRUB, grub_dir / "moddep.lst"))
    placed = []
    for tree_path, (package, relative) in sorted(wanted.items()):
        source = Path(search_dirs.get(package.name, package.directory)) / relative
        if not source.is_file():
            problems.append(_missing(package, source))
            continue
        digests = hash_file(source)
        placed.append(PlacedFile(tree_path, source, digests.sha256, digests.size, False, "bootloader"))
    if problems:
        raise ImageError(problems)
    return tuple(placed)


def grub_modules(moddep: Path, roots: tuple[str, ...]) -> list[str]:
    """`roots` and everything they depend on, per GRUB's moddep.lst (`name: dep dep`)."""
    deps: dict[str, list[str]] = {}
    for line in moddep.read_text(encoding="utf-8").splitlines():
        name, _, rest = line.partition(":")
        deps[name.strip()] = rest.split()
    seen: list[str] = []
    stack = list(roots)
    while stack:
        module = stack.pop()
        if module not in seen:
            seen.append(module)
            stack.extend(deps.get(module, []))
    return sorted(seen)


def _missing(package: _Package, path: Path) -> Problem:
    return Problem(Location("bootloaders"), f"{path} not found",
                   hint=f"install the Debian package {package.name} (apt-get install {package.name})")
