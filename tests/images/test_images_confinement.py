"""Image files, signatures and key files named in site.yaml stay inside the site (bootgen.confine).

Parse-time refusals at every place a site file can be named (kernel, initrds,
installer, iso, signature, key), a real signed image served through in-site
symlinks, and files that turn into FIFOs or symlinks after site.yaml was read:
nothing blocks, nothing outside the site is hashed, verified or placed.
"""
from __future__ import annotations

import hashlib
import os

import pytest

from bootgen.errors import ImageError, InputError
from bootgen.images import FetchPolicy, resolve_images
from bootgen.images.digests import hash_file
from bootgen.images.verify import Keyring

FAST = FetchPolicy(attempts=1, backoff=0.01, connect_timeout=2, read_timeout=5)
KERNEL = b"signed lab kernel\n" * 1000
MARKER = b"SECRET-MARKER-images-4b1d"
FPR = "F88CFEDEFF29A5B4D9523864E25D9AED0593B34A"

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def secret(tmp_path):
    path = tmp_path / "outside" / "shadow"
    path.parent.mkdir()
    path.write_bytes(b"root:" + MARKER + b":19000::::::\n")
    return path


def resolve(site, config):
    return resolve_images(config, site_dir=site.dir, cache_dir=site.cache, needed=set(config.images),
                          progress=False, policy=FAST)


@pytest.mark.parametrize("slot,yaml,field", [
    ("kernel", "kernel: {{file: {v}, unsigned: true}}", "$.images.lab.kernel.file"),
    ("initrd", "initrds: [{{file: {v}, unsigned: true}}]", "$.images.lab.initrds[0].file"),
    ("installer", "version: '1.0.0'\n    installer: {{file: {v}, unsigned: true}}", "$.images.lab.installer.file"),
    ("iso", "iso: {{file: {v}, unsigned: true}}", "$.images.lab.iso.file"),
    ("signature", "kernel: {{file: images/k, signature: {v}, keys: [k]}}", "$.images.lab.kernel.signature"),
])
@pytest.mark.parametrize("escape", ["dotdot", "absolute", "symlink", "fifo"])
def test_every_image_slot_is_gated(site, secret, slot, yaml, field, escape):
    (site.dir / "images").mkdir()
    (site.dir / "images" / "k").write_bytes(b"k")
    (site.dir / "keys").mkdir()
    (site.dir / "keys" / "k.asc").write_text("key\n")
    value = {"dotdot": "../outside/shadow", "absolute": str(secret), "symlink": "images/esc",
             "fifo": "images/fifo"}[escape]
    (site.dir / "images" / "esc").symlink_to(secret)
    os.mkfifo(site.dir / "images" / "fifo")
    body = yaml.format(v=value)
    text = f"keys:\n  k: {{file: keys/k.asc, fingerprint: {FPR}}}\nimages:\n  lab:\n    mirror: true\n    {body}\n"
    with pytest.raises(InputError) as info:
        site.config(text)
    (problem,) = info.value.problems
    assert problem.path == field
    line_no = next(i for i, line in enumerate(text.splitlines(), 1) if value in line)
    line = text.splitlines()[line_no - 1]
    assert (problem.location.line, problem.location.column) == (line_no, line.index(value) + 1)
    assert MARKER.decode() not in problem.format()


def test_auto_signature_of_a_site_file_is_gated_at_its_own_field(site, secret):
    (site.dir / "images").mkdir()
    (site.dir / "images" / "k").write_bytes(b"k")
    (site.dir / "images" / "k.sig").symlink_to(secret)
    (site.dir / "keys").mkdir()
    (site.dir / "keys" / "k.asc").write_text("key\n")
    with pytest.raises(InputError) as info:
        site.config(f"keys:\n  k: {{file: keys/k.asc, fingerprint: {FPR}}}\n"
                    "images:\n  lab:\n    mirror: true\n    kernel: {file: images/k, signature: auto, keys: [k]}\n")
    (problem,) = info.value.problems
    assert problem.path == "$.images.lab.kernel.signature"
    assert problem.message == "signature file 'images/k.sig' resolves outside the site directory"


def test_key_file_symlinked_out_is_refused_and_not_read(site, secret):
    (site.dir / "keys").mkdir()
    (site.dir / "keys" / "k.asc").symlink_to(secret)
    with pytest.raises(InputError) as info:
        site.config(f"keys:\n  k:\n    file: keys/k.asc\n    fingerprint: {FPR}\n")
    (problem,) = info.value.problems
    assert (problem.location.line, problem.location.column, problem.path) == (3, 11, "$.keys.k.file")
    assert problem.message == "key file 'keys/k.asc' resolves outside the site directory"


def test_url_ending_in_dotdot_is_not_a_file_name(site):
    with pytest.raises(InputError) as info:
        site.config("images:\n  lab:\n    kernel: {url: 'http://example.test/a/..'}\n")
    assert info.value.problems[0].path == "$.images.lab.kernel.url"


def test_signed_image_key_and_signature_through_in_site_symlinks(site, signer):
    """site/images/a -> real/b, a.sig -> real/b.sig, keys/k.asc -> real/k.asc: all inside, all fine."""
    real = site.dir / "real"
    real.mkdir()
    (real / "b").write_bytes(KERNEL)
    (real / "b.sig").write_bytes(signer.sign("good", KERNEL))
    signer.export("good", real / "k.asc")
    (site.dir / "images").mkdir()
    (site.dir / "images" / "a").symlink_to("../real/b")
    (site.dir / "images" / "a.sig").symlink_to("../real/b.sig")
    (site.dir / "keys").symlink_to("real", target_is_directory=True)
    config = site.config(f"keys:\n  k: {{file: keys/k.asc, fingerprint: {signer.fingerprints['good']}}}\n"
                         "images:\n  lab:\n    mirror: true\n"
                         "    kernel: {file: images/a, signature: auto, keys: [k]}\n")
    assert config.keys["k"].file == (real / "k.asc").resolve()
    (real / "k.asc").unlink()  # the key was read once when site.yaml was; gpg never opens the path
    result = resolve(site, config)["lab"]
    sha = hashlib.sha256(KERNEL).hexdigest()
    assert result.kernel.tree_path == f"images/{sha[:16]}/a"  # the declared name, not the target's
    (placed,) = result.files
    assert placed.source == (real / "b").resolve()


def test_site_image_replaced_by_a_fifo_after_loading_fails_without_blocking(site):
    (site.dir / "images").mkdir()
    (site.dir / "images" / "k").write_bytes(KERNEL)
    config = site.config("images:\n  lab:\n    mirror: true\n    kernel: {file: images/k, unsigned: true}\n")
    (site.dir / "images" / "k").unlink()
    os.mkfifo(site.dir / "images" / "k")
    with pytest.raises(ImageError) as info:
        resolve(site, config)
    (problem,) = info.value.problems
    assert "no longer a regular file" in problem.message


def test_site_image_replaced_by_a_symlink_out_after_loading_is_not_placed(site, secret):
    (site.dir / "images").mkdir()
    (site.dir / "images" / "k").write_bytes(KERNEL)
    config = site.config("images:\n  lab:\n    mirror: true\n    kernel: {file: images/k, unsigned: true}\n")
    (site.dir / "images" / "k").unlink()
    (site.dir / "images" / "k").symlink_to(secret)
    with pytest.raises(ImageError) as info:
        resolve(site, config)
    assert MARKER.decode() not in info.value.problems[0].format()


def test_hashing_a_fifo_is_refused_at_once(tmp_path):
    os.mkfifo(tmp_path / "fifo")
    with pytest.raises(OSError):
        hash_file(tmp_path / "fifo")


def test_signature_that_is_a_fifo_is_refused_at_once(tmp_path, site, signer):
    signer.export("good", site.dir / "k.asc")
    config = site.config(f"keys:\n  k: {{file: k.asc, fingerprint: {signer.fingerprints['good']}}}\n")
    (tmp_path / "data").write_bytes(KERNEL)
    os.mkfifo(tmp_path / "sig")
    with Keyring(config.keys) as keyring:
        verdict = keyring.check(tmp_path / "data", tmp_path / "sig", ("k",))
    assert not verdict.ok
    assert "cannot read the signature" in verdict.reason
