"""What image resolution hands to the build: files to place and references for boot configs."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class PlacedFile:
    """A file the tree gets a copy of (checked against `sha256` as it is copied)."""

    tree_path: str  # e.g. "images/3fa9c1d2e4b5a6f7/flatcar_production_pxe.vmlinuz"
    source: Path  # file in the cache, the site dir or a boot loader package, to copy from
    sha256: str
    size: int
    immutable: bool  # True for content-addressed paths; False for fixed names
    target: str  # "image", "mirror", "bootloader"


@dataclass(frozen=True)
class ImageRef:
    """What boot configs need to refer to one image."""

    name: str  # original file name
    tree_path: str | None  # set when mirrored (content-addressed path in the tree)
    url: str | None  # upstream URL when referenced (not mirrored)


@dataclass(frozen=True)
class ResolvedImageSet:
    """One image set, ready for boot configs and the tree writer."""

    name: str
    kernel: ImageRef | None
    initrds: tuple[ImageRef, ...]
    iso: ImageRef | None
    installer_base: str | None  # tree path of the installer mirror base dir
    version: str | None
    files: tuple[PlacedFile, ...]
    firmware: tuple[ImageRef, ...] = ()  # Raspberry Pi boot firmware, in the tree when mirrored

    def placed(self, ref: ImageRef) -> PlacedFile | None:
        """The placed file of a mirrored image (to place it under another name too); None when
        the set is taken as declared (`bootgen check`), with no file placed."""
        return next((f for f in self.files if f.tree_path == ref.tree_path), None)


def image_tree_path(sha256: str, name: str) -> str:
    """Content-addressed tree path: images/<first 16 hex of sha256>/<original name>."""
    return f"images/{sha256[:16]}/{name}"
