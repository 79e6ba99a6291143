"""Content-Type and Cache-Control per file kind, on the names `bootgen build` really writes."""
from __future__ import annotations

import pytest

from bootgen.content import cache_control, content_type

TEXT = "text/plain; charset=utf-8"
BINARY = "application/octet-stream"


@pytest.mark.parametrize("path, expected", [
    ("boot.ipxe", TEXT), ("ipxe/52-54-00-12-34-56.ipxe", TEXT),
    ("pxelinux.cfg/01-52-54-00-12-34-56", TEXT), ("pxelinux.cfg/0A000046", TEXT), ("pxelinux.cfg/default", TEXT),
    ("grub/grub.cfg", TEXT), ("grub/grub.cfg-01-52-54-00-12-34-56", TEXT), ("grub/grub.cfg-10.0.0.70", TEXT),
    ("grub/x86_64-efi/http.mod", BINARY), ("efi64/ldlinux.e64", BINARY), ("efi64/syslinux.efi", BINARY),
    ("pxelinux.0", BINARY), ("lpxelinux.0", BINARY), ("ldlinux.c32", BINARY), ("undionly.kpxe", BINARY),
    ("configs/node-1/3fa9c1d2e4b5a6f7/ignition.json", "application/json"),
    ("configs/node-1/3fa9c1d2e4b5a6f7/install.ign", "application/json"),
    ("configs/node-2/3fa9c1d2e4b5a6f7/user-data", TEXT), ("configs/node-2/3fa9c1d2e4b5a6f7/meta-data", TEXT),
    ("images/0123456789abcdef/vmlinuz", BINARY), ("images/0123456789abcdef/initrd.img", BINARY),
    ("images/0123456789abcdef/debian.iso", "application/x-iso9660-image"),
    ("server/dnsmasq.conf", TEXT), ("SHA256SUMS", TEXT), ("manifest.json", "application/json"),
])
def test_content_type(path, expected):
    assert content_type(path) == expected


def test_cache_control():
    assert cache_control(True) == "public, max-age=31536000, immutable"
    assert cache_control(False) == "no-cache"


def test_every_registered_loader_is_typed_by_the_rules_nginx_also_follows():
    """nginx knows only the suffix and directory rules, not the loader registry: a loader whose
    registered type the rules would not give it could not be served with that type."""
    from bootgen import content
    from bootgen.loaders import LOADERS

    for loader in LOADERS:
        assert content_type(loader.tree_path) == loader.content_type
        saved = content._LOADER_TYPES
        try:
            content._LOADER_TYPES = {}
            assert content_type(loader.tree_path) == loader.content_type, loader.tree_path
        finally:
            content._LOADER_TYPES = saved
