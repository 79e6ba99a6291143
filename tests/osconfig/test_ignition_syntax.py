"""Ignition's syntax checks (unit files, URLs, data: URLs) as bootgen reimplements them, against Ignition.

The fixed cases run everywhere; the generated ones compare bootgen's verdict on a few thousand
random near-valid strings with Ignition v2.20's validation (../shared/tools/ignval) in two calls.
Every Ignition file the example site writes must pass that validation with no output at all.
"""
from __future__ import annotations

import json
import random

import pytest

from bootgen.osconfig.ignition_syntax import decode_data_url, has_install_section, unit_problem, url_problem

from .conftest import IGNVAL, ignval_output
from bootgen.publish.manifest import load_tree

needs_ignval = pytest.mark.skipif(not IGNVAL.exists(), reason=f"Ignition's validation not found at {IGNVAL}")


@pytest.mark.parametrize("text,problem", [
    ("[Service]\nExecStart=/bin/true\n", None),
    ("Stray=1\n[Unit]\n", None),  # options before the first section are ignored
    ("[Service\nExecStart=/bin/true\n", "invalid unit content: unable to find end of section"),
    ("[Service\nExecStart=a]\n", None),  # a section name may span lines
    ("[Service] x\n", "invalid unit content: found garbage after section name: x"),
    ("[Service]\nExecStart /bin/true\n",
     "invalid unit content: unexpected newline encountered while parsing option name"),
    ("[Service]\nExecStart", "invalid unit content: EOF"),
    ("[Service]\nA=" + "x" * 2100 + "\n", "invalid unit content: line too long (max 2048 bytes)"),
    ("[Service]\nA=" + ("x" * 1500 + " \\\n") * 3 + "\n", None),
])
def test_unit_syntax(text, problem):
    assert unit_problem(text) == problem


def test_install_section_needs_an_option():
    assert has_install_section("[Install]\nWantedBy=x\n")
    assert not has_install_section("[Install]\n")
    assert not has_install_section("[ Install ]\nWantedBy=x\n")


@pytest.mark.parametrize("url,version,problem", [
    ("http://x/a b#frag", (3, 0, 0), None),
    ("HTTP://x/", (3, 0, 0), None),
    ("http://[::1/a", (3, 4, 0), "unable to parse url"),
    ("http://x/%zz", (3, 4, 0), "unable to parse url"),
    ("https://x:abc/", (3, 4, 0), "unable to parse url"),
    ("ftp://x/a", (3, 4, 0), "invalid url scheme"),
    ("gs://b/k", (3, 1, 0), "invalid url scheme"),
    ("gs://b/k", (3, 2, 0), None),
    ("arn:aws:s3:::b/k", (3, 3, 0), "invalid url scheme"),
    ("arn:aws:s3:::b/k", (3, 4, 0), None),
    ("arn:aws:sqs:::b/k", (3, 4, 0), "invalid S3 ARN format"),
    ("s3://b/k?versionId=", (3, 4, 0), "invalid S3 object VersionId"),
    ("data:abc", (3, 4, 0), "missing media type slash"),
    ("data:;base64,YW", (3, 4, 0), "illegal base64 data"),
    ("", (3, 4, 0), None),
])
def test_url_problem(url, version, problem):
    assert url_problem(url, version) == problem


def test_data_url_decoding():
    assert decode_data_url("data:,a%20b") == (b"a b", "text/plain")
    assert decode_data_url("data:text/x;charset=\"u\";base64,aGk=") == (b"hi", "text/x")


def _check(kind: str, values: list[str], tmp_path) -> dict[int, str]:
    """Ignition's findings for a batch of unit contents or file sources, by index."""
    if kind == "units":
        config = {"systemd": {"units": [{"name": f"u{i}.service", "contents": v} for i, v in enumerate(values)]}}
    else:
        config = {"storage": {"files": [{"path": f"/f{i}", "contents": {"source": v}} for i, v in enumerate(values)]}}
    config["ignition"] = {"version": "3.4.0"}
    path = tmp_path / f"{kind}.ign"
    path.write_text(json.dumps(config))
    _, output = ignval_output(path)
    found = {}
    for line in output.splitlines():
        parts = line.split(".", 4)
        if line.startswith("error at $.") and len(parts) > 3:
            found[int(parts[3])] = line
    return found


UNIT_ATOMS = ["[", "]", "[Unit]", "[Install]", "\n", "\r\n", " ", "\t", "=", "A", "B=c", "#", ";", "\\", "\\\n",
              "\u00e9", "\u00a0", "\u2003", "x" * 10]
URL_ATOMS = ["//", "/", "x", "[::1]", "[fe80::1%25en0]", "[", "]", ":", ":80", ":abc", "@", "u:p@", "%", "%zz", "%41",
             "%25", "?", "#", "&", "=", "versionId", "versionId=", ";", " ", "\u00e9", "{", "|", "^", "\"", "<",
             ",", ";base64,", "text/plain", "charset=\"x y\"", "\\", "YQ==", "YWJj", "(", "!", "*", "~", "aws", "s3",
             "accesspoint/", "x-foo/bar"]
SCHEMES = ["http:", "https:", "HTTP:", "tftp:", "s3:", "gs:", "data:", "arn:", "ftp:", "", "1a:", "a+b:", "dAta:"]


@needs_ignval
def test_unit_syntax_agrees_with_ignition(tmp_path):
    rng = random.Random(14)
    texts = []
    for _ in range(1500):
        text = "".join(rng.choice(UNIT_ATOMS) for _ in range(rng.randint(0, 12)))
        if rng.random() < 0.1:
            at = rng.randint(0, len(text))
            text = text[:at] + rng.choice("a[=# ") * rng.choice([2047, 2048, 2049, 4096, 5000]) + text[at:]
        texts.append(text)
    ignition = _check("units", texts, tmp_path)
    assert 300 < len(ignition) < 1200  # the generator makes both kinds
    disagree = [t for i, t in enumerate(texts) if (unit_problem(t) is None) != (i not in ignition)]
    assert not disagree, disagree[:5]


@needs_ignval
def test_url_syntax_agrees_with_ignition(tmp_path):
    rng = random.Random(14)
    urls = [rng.choice(SCHEMES) + "".join(rng.choice(URL_ATOMS) for _ in range(rng.randint(1, 8))) for _ in range(3000)]
    ignition = _check("urls", urls, tmp_path)
    assert 600 < len(ignition) < 2700
    disagree = [u for i, u in enumerate(urls) if (url_problem(u) is None) != (i not in ignition)]
    assert not disagree, disagree[:5]


@needs_ignval
def test_example_site_ignition_passes_ignition_validation(example):
    from bootgen.build import build

    tree = build(example, fetch=False).write.tree
    configs = [tree / f.path for f in load_tree(tree).files if f.target == "ignition"]
    assert configs
    for config in configs:
        assert ignval_output(config) == (0, ""), config
