"""bootgen's Butane translation against upstream Butane v0.23.0 and Ignition v2.20's validation.

Each `corpus/*.bu` is one case, a Butane config with a header:

    # <what the case is about>
    # expect: accept|refuse          what upstream `butane --strict` does with it (checked)
    # profile: <variant> <version>   optional: the profile's variant and ignition_version; by default
                                     the file's variant and the Ignition version its Butane version writes

For every case bootgen (`build_ignition` on the file as a profile's `.bu` layer) and `butane --strict`
must agree on accepting or refusing it, except for bootgen's documented differences listed in
DELIBERATE_REFUSALS and EXTENSIONS (README, "Ignition"). Where both accept, the two configs must
mean the same (data: URLs decoded, compression undone) and Ignition's validation must accept
bootgen's with no output at all. Where bootgen refuses, each problem points into the .bu file.

The oracles are static binaries in ../shared/tools (see its README); where they are absent (a
user's checkout) these tests skip.
"""
from __future__ import annotations

import base64
import gzip
import json
import re
import shutil
import subprocess
from pathlib import Path
from urllib.parse import unquote_to_bytes

import pytest

from bootgen.errors import RenderError
from bootgen.osconfig.butane import ButaneLayer, build_ignition, serialize_ignition
from bootgen.osconfig.butane_schema import BUTANE_VERSIONS, SUPPORTED_VERSIONS
from bootgen.source import load_yaml_text

from .conftest import BUTANE, IGNVAL, ignval_output

CORPUS = Path(__file__).parent / "corpus"
CASES = sorted(p.stem for p in CORPUS.glob("*.bu"))

needs_oracles = pytest.mark.skipif(
    not (BUTANE.exists() and IGNVAL.exists()),
    reason=f"upstream butane and ignval not found in {BUTANE.parent} (see the README, Ignition: differential test)")

# Butane accepts these; bootgen refuses them on purpose (README, "Ignition": differences from Butane).
DELIBERATE_REFUSALS = {
    "private-key-local": "private keys",
    "private-key-keys-local": "private keys",
    "private-key-as-ssh-key": "private keys",
    "not-an-ssh-key": "SSH public keys only",
    "password-hash-plaintext": "crypt hashes only",
    "inline-gzip": "no compression on inline contents",
    "local-not-gzip": "contents that would fail at boot",
    "inline-hash-mismatch": "contents that would fail at boot",
    "hash-not-hex": "contents that would fail at boot",
    "link-target-empty-fcos-1.2.0": "contents that would fail at boot",
    "string-as-number": "strict YAML types",
    "null-value": "strict YAML types",
    "user-without-name": "strict YAML types",
    "home-dir-relative": "names systemd and useradd refuse",
    "unit-name-odd": "names systemd and useradd refuse",
    "dropin-name-slash": "names systemd and useradd refuse",
    "unsupported-raid": "sections not translated yet",
    "unsupported-luks": "sections not translated yet",
    "unsupported-trees": "sections not translated yet",
    "unsupported-boot-device": "sections not translated yet",
    "unsupported-ignition-section": "sections not translated yet",
    "unsupported-with-mount-unit": "sections not translated yet",
    "unsupported-grub": "sections not translated yet",
    "version-1.6.0": "Ignition 3.0.0 to 3.4.0",
    "version-experimental": "Ignition 3.0.0 to 3.4.0",
    "variant-not-profile": "the file must fit the profile",
    "version-not-profile": "the file must fit the profile",
}
# Butane refuses these; bootgen accepts them on purpose.
EXTENSIONS = {
    "clc-spellings": "Container Linux Config spellings",
}

SYNTHETIC_PRIVATE_KEY = ("-----BEGIN OPENSSH PRIVATE KEY-----\n"  # the shape of one, made of no key at all
                         "b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZW\n"
                         "QyNTUxOQAAACBzeW50aGV0aWMtYnl0ZXMtZm9yLWEtdGVzdC1vbmx5LW5vdC1hLWtleQAA\n"
                         "-----END OPENSSH PRIVATE KEY-----\n")


@pytest.fixture(scope="module")
def files_dir(tmp_path_factory) -> Path:
    """The corpus's local files, plus ones not kept in the repository: a private key and gzip data."""
    root = tmp_path_factory.mktemp("corpus")
    files = root / "files"
    shutil.copytree(CORPUS / "files", files)
    (files / "id_ed25519").write_text(SYNTHETIC_PRIVATE_KEY)
    (files / "data.gz").write_bytes(gzip.compress(b"gzip data\n", mtime=0))
    (root / "outside.txt").write_text("outside the files directory\n")
    return files


def _header(text: str) -> dict[str, str]:
    return dict(re.findall(r"^# (expect|profile): (.*)$", text, re.M))


def _profile(text: str, header: dict) -> tuple[str, str]:
    if "profile" in header:
        variant, version = header["profile"].split()
        return variant, version
    variant = re.search(r"^variant: (\S+)", text, re.M)
    version = re.search(r"^version: (\S+)", text, re.M)
    variant = variant.group(1) if variant and variant.group(1) in BUTANE_VERSIONS else "flatcar"
    written = BUTANE_VERSIONS[variant].get(version.group(1)) if version else None
    return variant, written if written in SUPPORTED_VERSIONS else "3.3.0"


def _butane(path: Path, files: Path) -> tuple[int, str]:
    done = subprocess.run([str(BUTANE), "--strict", "--files-dir", str(files), str(path)],
                          capture_output=True, text=True, timeout=60)
    return done.returncode, done.stdout if done.returncode == 0 else done.stderr


def _decode_data_url(url: str) -> bytes:
    head, _, data = url[len("data:"):].partition(",")
    return base64.b64decode(data) if head.endswith(";base64") else unquote_to_bytes(data)


def normalize(value):
    """What a config means: data: URLs decoded and decompressed, unset and empty values dropped."""
    if isinstance(value, list):
        return [normalize(item) for item in value]
    if not isinstance(value, dict):
        return value
    value = dict(value)
    source = value.get("source")
    if isinstance(source, str) and source.startswith("data:"):
        data = _decode_data_url(source)
        value["source"] = ("data", gzip.decompress(data) if value.pop("compression", "") == "gzip" else data)
    if isinstance(value.get("sshAuthorizedKeys"), list):  # sshd skips blank and comment lines, and spaces
        value["sshAuthorizedKeys"] = [k.strip() for k in value["sshAuthorizedKeys"]
                                      if k.strip() and not k.strip().startswith("#")]
    out = {}
    for key, item in value.items():
        item = normalize(item)
        if item in ({}, [], None) or (key == "compression" and item == ""):
            continue
        out[key] = item
    return out


@needs_oracles
@pytest.mark.parametrize("name", CASES)
def test_case(name, files_dir, tmp_path):
    path = CORPUS / f"{name}.bu"
    text = path.read_text()
    header = _header(text)
    assert header.get("expect") in ("accept", "refuse"), f"{name}: header needs '# expect: accept|refuse'"
    variant, version = _profile(text, header)

    butane_code, butane_out = _butane(path, files_dir)
    assert (butane_code == 0) == (header["expect"] == "accept"), (
        f"{name}: upstream Butane does not {header['expect']} this case:\n{butane_out}")

    display = f"corpus/{name}.bu"
    doc = load_yaml_text(text, display)
    try:
        config = build_ignition([ButaneLayer(doc.data, doc, ())], files_dir=files_dir, version=version,
                                variant=variant)
    except RenderError as exc:
        problems = exc.problems
        config = None
    bootgen_accepts = config is not None

    expected = butane_code == 0
    if name in DELIBERATE_REFUSALS:
        assert butane_code == 0 and not bootgen_accepts, f"{name}: listed as a deliberate refusal"
    elif name in EXTENSIONS:
        assert butane_code != 0 and bootgen_accepts, f"{name}: listed as a deliberate extension"
    else:
        shown = "" if config is not None else "\n".join(p.format() for p in problems)
        assert bootgen_accepts == expected, (
            f"{name}: Butane {'accepts' if expected else 'refuses'}, bootgen does not agree:\n"
            f"Butane: {butane_out[:2000]}\nbootgen: {shown}")

    if not bootgen_accepts:
        for problem in problems:
            assert problem.location.file == display and problem.location.line, problem.format()
        return
    ign = tmp_path / "bootgen.ign"
    ign.write_bytes(serialize_ignition(config))
    assert ignval_output(ign) == (0, ""), f"{name}: Ignition's validation complains about bootgen's config"
    if butane_code == 0:
        assert normalize(config) == normalize(json.loads(butane_out)), f"{name}: the configs differ"


def test_every_listed_difference_has_its_case():
    assert set(DELIBERATE_REFUSALS) | set(EXTENSIONS) <= set(CASES)


def test_corpus_covers_every_version_bootgen_writes():
    """At least one accepted case per Butane version whose Ignition version bootgen writes."""
    written = {(variant, butane) for variant, table in BUTANE_VERSIONS.items() for butane, ign in table.items()
               if ign in SUPPORTED_VERSIONS}
    covered = {tuple(name.split("-")[2:4]) for name in CASES if name.startswith("every-field-")}
    assert written <= covered, written - covered
