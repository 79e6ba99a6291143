"""parse_image_config: typed model and located input problems."""
from __future__ import annotations

import pytest

from bootgen.errors import InputError

FPR = "F88CFEDEFF29A5B4D9523864E25D9AED0593B34A"


def write_key(site):
    (site.dir / "keys").mkdir(exist_ok=True)
    (site.dir / "keys" / "flatcar.asc").write_text("not parsed at this stage\n")


def test_parses_the_documented_example(site):
    write_key(site)
    (site.dir / "images").mkdir()
    (site.dir / "images" / "vmlinuz").write_bytes(b"k")
    config = site.config(f"""
keys:
  flatcar:
    file: keys/flatcar.asc
    fingerprint: F88C FEDE FF29 A5B4 D952  3864 E25D 9AED 0593 b34a
images:
  flatcar-stable:
    mirror: true
    version: 3975.2.0
    kernel:
      url: http://example.test/3975.2.0/flatcar_production_pxe.vmlinuz
      signature: auto
      keys: [flatcar]
    installer: {{url: http://example.test/3975.2.0/flatcar_production_image.bin.bz2, signature: auto, keys: [flatcar]}}
  ubuntu:
    mirror: true
    iso:
      url: http://example.test/ubuntu.iso
      sha256: "{'a' * 64}"
      unsigned: true
      extract: {{kernel: casper/vmlinuz, initrds: [casper/initrd]}}
  local-test:
    mirror: true
    kernel: {{file: images/vmlinuz, unsigned: true}}
""")
    assert config.keys["flatcar"].fingerprint == FPR
    stable = config.images["flatcar-stable"]
    assert stable.kernel.signature == "http://example.test/3975.2.0/flatcar_production_pxe.vmlinuz.sig"
    assert stable.kernel.keys == ("flatcar",)
    assert stable.kernel.name == "flatcar_production_pxe.vmlinuz"
    assert stable.kernel.role == "images.flatcar-stable.kernel"
    assert stable.installer.name == "flatcar_production_image.bin.bz2"
    ubuntu = config.images["ubuntu"]
    assert (ubuntu.extract.kernel, ubuntu.extract.initrds) == ("casper/vmlinuz", ("casper/initrd",))
    assert config.images["local-test"].kernel.file == site.dir / "images" / "vmlinuz"


def messages(excinfo) -> list[str]:
    return [p.format() for p in excinfo.value.problems]


def test_collects_every_problem_with_its_line(site):
    with pytest.raises(InputError) as excinfo:
        site.config("""
keys:
  flatcar:
    file: keys/missing.asc
    fingerprint: F88CFEDEFF29
images:
  a:
    mirror: true
    kernel:
      url: http://example.test/vmlinuz
      signature: auto
      keys: [flatcar, nope]
    initrds:
      - url: http://example.test/initrd
""")
    assert messages(excinfo) == [
        "site/site.yaml:4:11: error at $.keys.flatcar.file: "
        "key file 'keys/missing.asc' not found in the site directory",
        "site/site.yaml:5:18: error at $.keys.flatcar.fingerprint: fingerprint must be 40 hex digits (spaces allowed)\n"
        "  hint: copy it from `gpg --show-keys --with-fingerprint <file>`",
        "site/site.yaml:12:23: error at $.images.a.kernel.keys[1]: unknown key 'nope' (site keys: flatcar)",
        "site/site.yaml:14:9: error at $.images.a.initrds[0]: images.a.initrds[0] has no signature and no "
        "`unsigned: true`\n  hint: add `signature: auto` and `keys: [...]`, or `unsigned: true` with a `sha256:` pin",
    ]


def test_unmirrored_images_need_no_signature_but_files_need_mirroring(site):
    with pytest.raises(InputError) as excinfo:
        site.config("""
images:
  upstream:
    kernel: {url: http://example.test/vmlinuz}
    initrds: [{file: images/initrd.img, unsigned: true}]
""")
    assert messages(excinfo) == [
        "site/site.yaml:5:22: error at $.images.upstream.initrds[0].file: "
        "an image from a site file needs `mirror: true`"]


def test_installer_needs_version_and_iso_extract_needs_mirror(site):
    with pytest.raises(InputError) as excinfo:
        site.config("""
images:
  s:
    mirror: true
    installer: {url: http://example.test/flatcar_production_image.bin.bz2, unsigned: true}
  u:
    iso: {url: http://example.test/u.iso, extract: {kernel: casper/vmlinuz}}
""")
    text = "\n".join(messages(excinfo))
    assert "$.images.s: a mirrored installer needs `version:`" in text
    assert "$.images.u.iso.extract: extracting from an ISO needs `mirror: true`" in text


def test_signature_without_keys_is_rejected(site):
    with pytest.raises(InputError, match=r"has a signature but no `keys:` allowed to sign it"):
        site.config("""
images:
  s:
    mirror: true
    kernel: {url: http://example.test/vmlinuz, signature: auto}
""")


def test_an_image_file_not_yet_in_place_is_reported_by_resolving_not_by_parsing(site):
    """Kernels are not kept in Git: the site parses (so `check` passes) and resolving the set,
    as `fetch` and `build` do, names the missing file at its line. Other refusals stay at parsing."""
    from bootgen.errors import ImageError
    from bootgen.images import resolve_images

    config = site.config("""
images:
  lab:
    mirror: true
    kernel: {file: files/vmlinuz, unsigned: true}
""")
    assert config.images["lab"].kernel.absent is not None
    with pytest.raises(ImageError) as excinfo:
        resolve_images(config, needed={"lab"}, site_dir=site.dir, cache_dir=site.cache, progress=False)
    assert messages(excinfo) == [
        "site/site.yaml:5:20: error at $.images.lab.kernel.file: image file 'files/vmlinuz' not found in the "
        "site directory"]
    with pytest.raises(InputError) as excinfo:
        site.config("""
images:
  lab:
    mirror: true
    kernel: {file: ../vmlinuz, unsigned: true}
""")
    assert "leaves the site directory" in messages(excinfo)[0]
