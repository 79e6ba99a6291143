"""Is a kernel file signed for UEFI Secure Boot? Read its PE header's certificate table.

A kernel that Secure Boot firmware (through shim) can start is an EFI PE image
with an Authenticode signature: data directory 4 of the PE optional header (the
certificate table) points at a WIN_CERTIFICATE of type PKCS_SIGNED_DATA. Only
the signature's presence is checked here: whether shim trusts its signer is
known only to the firmware's keys and shim's built-in certificate.
"""
from __future__ import annotations

import struct
from pathlib import Path

_PE32, _PE32_PLUS = 0x10B, 0x20B
_CERT_TABLE = 4
_PKCS_SIGNED_DATA = 0x0002


def signature_problem(path: Path) -> str | None:
    """None if `path` is a PE image with an Authenticode signature; else what it lacks."""
    with open(path, "rb") as handle:
        head = handle.read(4096)
        size = handle.seek(0, 2)
        if head[:2] != b"MZ" or len(head) < 0x40:
            return "is not an EFI (PE) image: no MZ header"
        pe = struct.unpack_from("<I", head, 0x3C)[0]
        if pe + 24 + 2 > len(head) or head[pe:pe + 4] != b"PE\0\0":
            return "is not an EFI (PE) image: no PE header"
        optional = pe + 24
        magic = struct.unpack_from("<H", head, optional)[0]
        if magic not in (_PE32, _PE32_PLUS):
            return "is not an EFI (PE) image: unknown optional header"
        count_at, directories = (optional + 92, optional + 96) if magic == _PE32 else (optional + 108, optional + 112)
        if count_at + 4 > len(head) or struct.unpack_from("<I", head, count_at)[0] <= _CERT_TABLE:
            return "has no certificate table, so no Authenticode signature"
        offset, length = struct.unpack_from("<II", head, directories + 8 * _CERT_TABLE)
        if length < 8 or offset + length > size:
            return "has no Authenticode signature (its certificate table is empty)"
        handle.seek(offset)
        _length, _revision, kind = struct.unpack("<IHH", handle.read(8))
    if kind != _PKCS_SIGNED_DATA:
        return "has a certificate table without an Authenticode (PKCS#7) signature"
    return None
