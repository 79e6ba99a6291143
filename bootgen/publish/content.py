"""HTTP metadata per file: Content-Type by kind, Cache-Control by mutability."""
from __future__ import annotations

from pathlib import PurePosixPath

IMMUTABLE_CACHE = "public, max-age=31536000, immutable"
ENTRY_POINT_CACHE = "no-cache"

# Explicit registry: extension -> type, checked first so binaries inside text
# directories (grub/x86_64-efi/*.mod) stay binary. Other files fall through to
# the name and directory rules in content_type(); note that `grub.cfg-01-<mac>`
# has no registered suffix and is text by its directory.
_BY_SUFFIX = {
    ".json": "application/json",
    ".ign": "application/json",
    ".ipxe": "text/plain; charset=utf-8",
    ".cfg": "text/plain; charset=utf-8",
    ".conf": "text/plain; charset=utf-8",
    ".txt": "text/plain; charset=utf-8",
    ".yaml": "text/plain; charset=utf-8",
    ".iso": "application/x-iso9660-image",
    ".efi": "application/octet-stream",
    ".kpxe": "application/octet-stream",
    ".c32": "application/octet-stream",
    ".e64": "application/octet-stream",
    ".mod": "application/octet-stream",  # GRUB modules under grub/x86_64-efi/
    ".lst": "text/plain; charset=utf-8",
    ".0": "application/octet-stream",
    ".img": "application/octet-stream",
    ".gz": "application/octet-stream",
    ".xz": "application/octet-stream",
}
# Text files firmware or cloud-init fetch by fixed names without an extension.
_TEXT_DIRS = ("pxelinux.cfg", "grub", "ipxe", "configs", "server")
_TEXT_NAMES = {"SHA256SUMS", "user-data", "meta-data", "vendor-data", "network-config"}


def content_type(path: str) -> str:
    """Content-Type for a tree path; images and boot loaders are octet-stream."""
    pure = PurePosixPath(path)
    if pure.suffix.lower() in _BY_SUFFIX:
        return _BY_SUFFIX[pure.suffix.lower()]
    if pure.name in _TEXT_NAMES or (len(pure.parts) > 1 and pure.parts[0] in _TEXT_DIRS):
        return "text/plain; charset=utf-8"
    return "application/octet-stream"


def cache_control(immutable: bool) -> str:
    """Content-addressed objects are cached forever; entry points are revalidated every time."""
    return IMMUTABLE_CACHE if immutable else ENTRY_POINT_CACHE
