"""Embed file contents in Ignition as the shortest of three `data:` URL forms.

Text is smallest URL-escaped, binary smallest in base64, and large or repetitive
content smallest gzipped then base64-encoded. gzip runs with mtime=0 so the same
contents always give the same bytes.
"""
from __future__ import annotations

import base64
import gzip
from urllib.parse import quote

# Characters kept as they are after "data:,". Everything else is %-escaped,
# including '?' and '#', which a URL parser would take as query and fragment.
_SAFE = "-_.~!*'()/:@,;=$&"


def url_escaped(data: bytes) -> str:
    return "data:," + quote(data, safe=_SAFE)


def base64_url(data: bytes) -> str:
    return "data:;base64," + base64.b64encode(data).decode("ascii")


def gzip_bytes(data: bytes) -> bytes:
    """Deterministic gzip: no timestamp, no file name, fixed level."""
    return gzip.compress(data, compresslevel=9, mtime=0)


def data_url(data: bytes, *, allow_compression: bool = True) -> tuple[str, str]:
    """Return (source, compression) for the shortest encoding; compression is "" or "gzip"."""
    best = (url_escaped(data), "")
    candidate = base64_url(data)
    if len(candidate) < len(best[0]):
        best = (candidate, "")
    if allow_compression:
        candidate = base64_url(gzip_bytes(data))
        if len(candidate) < len(best[0]):
            best = (candidate, "gzip")
    return best
