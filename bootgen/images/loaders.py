"""Boot loader binaries from Debian packages, placed in the tree as bootgen.loaders lists them.

GRUB: Debian's grubnetx64.efi is built with prefix `/grub` (visible with
`strings grubnetx64.efi`), so it looks for `grub/grub.cfg` and loads modules
from `grub/x86_64-efi/<name>.mod` on its TFTP/HTTP server. It has no HTTP
built in, so http.mod and the modules it needs (moddep.lst) ship beside it.
"""
from __future__ import annotations

from pathlib import Path

from ..errors import ImageError, Location, Problem
from ..loaders import ALL_BOOT_CONFIGS, GRUB_MODULE_SOURCES, placed_loaders
from .digests import hash_file
from .placed import PlacedFile

GRUB_PREFIX = "grub"
GRUB_NET_MODULES = ("http",)  # modules grub.cfg will `insmod`


def boot_loader_files(*, search_dirs: dict[str, Path] | None = None, secure_boot: bool = False,
                      arches: frozenset[str] = frozenset({"x86_64"}),
                      boot_configs: tuple[str, ...] = ALL_BOOT_CONFIGS) -> tuple[PlacedFile, ...]:
    """Boot loaders to place in the tree, sorted by tree path.

    `search_dirs` maps a Debian package name to a directory to read its files
    from instead of `/` (its files keep their installed paths below it). The
    signed Secure Boot chain is placed only when `secure_boot` is set. A missing
    file raises ImageError naming the package to install. Loaders for an
    architecture other than x86-64 are placed only if it is in `arches`, and those (GRUB's modules
    among them) of a boot config the site does not write (`boot_configs`) not at all.
    """
    search_dirs = search_dirs or {}

    def installed(package: str, path: str) -> Path:
        return Path(search_dirs.get(package, "/")) / path.lstrip("/")

    wanted = {loader.tree_path: (loader.package, installed(loader.package, loader.source))
              for loader in placed_loaders(secure_boot=secure_boot, arches=arches, boot_configs=boot_configs)}
    problems: list[Problem] = []
    for platform, (package, directory, arch) in GRUB_MODULE_SOURCES.items():
        if arch not in arches or "grub" not in boot_configs:
            continue
        grub_dir = installed(package, directory)
        try:
            for module in grub_modules(grub_dir / "moddep.lst", GRUB_NET_MODULES):
                wanted[f"{GRUB_PREFIX}/{platform}/{module}.mod"] = (package, grub_dir / f"{module}.mod")
        except OSError:
            problems.append(_missing(package, grub_dir / "moddep.lst"))
    placed = []
    for tree_path, (package, source) in sorted(wanted.items()):
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


def _missing(package: str, path: Path) -> Problem:
    return Problem(Location("bootloaders"), f"{path} not found",
                   hint=f"install the Debian package {package} (apt-get install {package})")
