"""Embedded contents: the shortest data: URL form wins, decodes back exactly, and is deterministic."""
from __future__ import annotations

import base64
import gzip
import hashlib
from urllib.parse import unquote_to_bytes

import pytest

from bootgen.osconfig.butane import build_ignition, serialize_ignition
from bootgen.osconfig.butane_encode import base64_url, data_url, gzip_bytes, url_escaped


def decode(resource: dict) -> bytes:
    """What Ignition writes to disk for a data: URL resource."""
    header, _, payload = resource["source"].partition(",")
    assert header in ("data:", "data:;base64")
    data = base64.b64decode(payload) if header.endswith(";base64") else unquote_to_bytes(payload)
    return gzip.decompress(data) if resource["compression"] == "gzip" else data


def noise(size: int) -> bytes:
    """Incompressible but reproducible bytes."""
    out = b""
    block = b"seed"
    while len(out) < size:
        block = hashlib.sha512(block).digest()
        out += block
    return out[:size]


TEXT = "node-1\n"
BINARY = noise(3000)
REPETITIVE = ("Environment=KEY=value\n" * 400).encode()


@pytest.mark.parametrize("data,prefix,compression", [
    (TEXT.encode(), "data:,", ""),
    (BINARY, "data:;base64,", ""),
    (REPETITIVE, "data:;base64,", "gzip"),
], ids=["text-url-escaped", "binary-base64", "repetitive-gzip"])
def test_shortest_form_wins(data, prefix, compression):
    source, chosen = data_url(data)
    assert source.startswith(prefix) and chosen == compression
    candidates = [url_escaped(data), base64_url(data), base64_url(gzip_bytes(data))]
    assert len(source) == min(len(c) for c in candidates)
    assert decode({"source": source, "compression": chosen}) == data


def test_url_escaping_round_trips_awkward_text():
    data = "a?b#c%d e+f/ü\n\t\"'".encode()
    source, compression = data_url(data, allow_compression=False)
    assert "?" not in source and "#" not in source and " " not in source
    assert decode({"source": source, "compression": compression}) == data


def test_gzip_is_deterministic():
    assert gzip_bytes(REPETITIVE) == gzip_bytes(REPETITIVE)
    assert gzip_bytes(REPETITIVE)[4:8] == b"\0\0\0\0"  # mtime field is zero


def test_embedded_files_in_a_config(layer, tmp_path, assert_valid_ignition):
    files = tmp_path / "files"
    (files / "bin").mkdir(parents=True)
    (files / "bin" / "blob").write_bytes(BINARY)
    (files / "env").write_bytes(REPETITIVE)
    text = ("ignition:\n  storage:\n    files:\n"
            "      - path: /etc/motd\n        contents: {inline: \"node-1\\n\"}\n"
            "        append: [{inline: \"more?#\\n\"}]\n"
            "      - path: /opt/blob\n        mode: 0755\n        contents: {local: bin/blob}\n"
            "      - path: /etc/env\n        contents: {local: env}\n")
    config = build_ignition([layer(text)], files_dir=files)
    motd, blob, env = config["storage"]["files"]
    assert decode(motd["contents"]) == b"node-1\n" and decode(motd["append"][0]) == b"more?#\n"
    assert decode(blob["contents"]) == BINARY and blob["contents"]["compression"] == ""
    assert decode(env["contents"]) == REPETITIVE and env["contents"]["compression"] == "gzip"
    again = build_ignition([layer(text)], files_dir=files)
    assert serialize_ignition(config) == serialize_ignition(again)
    assert_valid_ignition(config)
