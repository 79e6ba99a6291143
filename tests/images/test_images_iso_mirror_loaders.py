"""ISO extraction, the installer mirror layout and boot loader files."""
from __future__ import annotations

import hashlib
import io
import os
import re
import subprocess
from pathlib import Path

import pycdlib
import pytest

from bootgen.errors import ImageError
from bootgen.images import FetchPolicy, boot_loader_files, resolve_images

FAST = FetchPolicy(attempts=2, backoff=0.01, connect_timeout=2, read_timeout=5)
VMLINUZ = os.urandom(70_000)
INITRD = os.urandom(90_000)


def make_iso(path: Path, *, rock_ridge: bool) -> bytes:
    """An Ubuntu-like live ISO holding casper/vmlinuz and casper/initrd."""
    iso = pycdlib.PyCdlib()
    if rock_ridge:
        iso.new(rock_ridge="1.09", joliet=3, vol_ident="Ubuntu-Server 22")
    else:
        iso.new(interchange_level=1)
    names = {"rr_name": "casper", "joliet_path": "/casper"} if rock_ridge else {}
    iso.add_directory("/CASPER", **names)
    for name, data in (("vmlinuz", VMLINUZ), ("initrd", INITRD)):
        extra = {"rr_name": name, "joliet_path": f"/casper/{name}"} if rock_ridge else {}
        iso.add_fp(io.BytesIO(data), len(data), f"/CASPER/{name.upper()}.;1", **extra)
    iso.write(str(path))
    iso.close()
    return path.read_bytes()


def ubuntu_site(site, server, iso_bytes: bytes, extract: str = "{kernel: casper/vmlinuz, initrds: [casper/initrd]}"):
    server.files["/ubuntu-22.04.1-live-server-amd64.iso"] = iso_bytes
    return site.config(f"""
images:
  ubuntu-22.04:
    mirror: true
    iso:
      url: {server.url('ubuntu-22.04.1-live-server-amd64.iso')}
      sha256: "{hashlib.sha256(iso_bytes).hexdigest()}"
      unsigned: true
      extract: {extract}
""")


def resolve(site, config, **kwargs):
    return resolve_images(config, site_dir=site.dir, cache_dir=site.cache, needed=set(config.images),
                          progress=False, policy=FAST, **kwargs)


@pytest.mark.parametrize("rock_ridge", [True, False])
def test_iso_kernel_and_initrd_are_extracted_once(site, server, tmp_path, monkeypatch, rock_ridge):
    iso_bytes = make_iso(tmp_path / "u.iso", rock_ridge=rock_ridge)
    config = ubuntu_site(site, server, iso_bytes)

    result = resolve(site, config)["ubuntu-22.04"]

    sources = {f.tree_path: f.source for f in result.files}
    assert sources[result.kernel.tree_path].read_bytes() == VMLINUZ
    assert result.kernel.tree_path == f"images/{hashlib.sha256(VMLINUZ).hexdigest()[:16]}/vmlinuz"
    assert [sources[r.tree_path].read_bytes() for r in result.initrds] == [INITRD]
    assert result.iso.name == "ubuntu-22.04.1-live-server-amd64.iso"
    assert sources[result.iso.tree_path].read_bytes() == iso_bytes

    import pycdlib

    monkeypatch.setattr(pycdlib, "PyCdlib", lambda: pytest.fail("extracted the ISO again"))
    assert resolve(site, config, fetch=False)["ubuntu-22.04"] == result


def test_iso_without_the_member_fails_with_one_line(site, server, tmp_path):
    iso_bytes = make_iso(tmp_path / "u.iso", rock_ridge=True)
    config = ubuntu_site(site, server, iso_bytes, extract="{initrds: [casper/initrd.lz]}")
    with pytest.raises(ImageError) as excinfo:
        resolve(site, config)
    assert [p.format().split(": error at ")[1] for p in excinfo.value.problems] == [
        f"images.ubuntu-22.04.iso: {server.url('ubuntu-22.04.1-live-server-amd64.iso')}: "
        "cannot extract from ISO: casper/initrd.lz not found in the ISO"]


def test_installer_mirror_layout(site, signer, server, tmp_path):
    image = os.urandom(120_000)
    server.files["/3975.2.0/flatcar_production_image.bin.bz2"] = image
    server.files["/3975.2.0/flatcar_production_image.bin.bz2.sig"] = signer.sign("good", image)
    signer.export("good", site.dir / "keys" / "flatcar.asc")
    config = site.config(f"""
keys:
  flatcar: {{file: keys/flatcar.asc, fingerprint: {signer.fingerprints['good']}}}
images:
  flatcar-stable:
    mirror: true
    version: 3975.2.0
    installer:
      url: {server.url('3975.2.0/flatcar_production_image.bin.bz2')}
      signature: auto
      keys: [flatcar]
""")
    result = resolve(site, config)["flatcar-stable"]

    assert result.installer_base == "mirror/flatcar-stable"
    files = {f.tree_path: f for f in result.files}
    base = "mirror/flatcar-stable"
    assert sorted(files) == sorted([
        f"{base}/3975.2.0/flatcar_production_image.bin.bz2", f"{base}/3975.2.0/flatcar_production_image.bin.bz2.sig",
        f"{base}/current/flatcar_production_image.bin.bz2", f"{base}/current/flatcar_production_image.bin.bz2.sig",
        f"{base}/current/version.txt"])
    assert files[f"{base}/3975.2.0/flatcar_production_image.bin.bz2"].source.read_bytes() == image
    version_txt = files[f"{base}/current/version.txt"].source.read_text()
    # flatcar-install resolves "current" with: sed -n 's/^FLATCAR_VERSION=//p' current/version.txt
    assert "FLATCAR_VERSION=3975.2.0\n" in version_txt and "FLATCAR_BUILD=3975\n" in version_txt
    assert {(f.immutable, f.target) for f in result.files} == {(False, "mirror")}
    assert_installer_can_use(result.files, signer, tmp_path / "tree")


def assert_installer_can_use(files, signer, tree: Path) -> None:
    """Do what `flatcar-install -b <url>/mirror/flatcar-stable -k key.asc` does with the tree."""
    for f in files:
        (tree / f.tree_path).parent.mkdir(parents=True, exist_ok=True)
        os.link(f.source, tree / f.tree_path)
    base = tree / "mirror" / "flatcar-stable"
    # flatcar-install: VERSION_ID=$(wget -qO- "${BASE_URL}/current/version.txt" | sed -n 's/^FLATCAR_VERSION=//p')
    version = re.search(r"^FLATCAR_VERSION=(.*)$", (base / "current" / "version.txt").read_text(), re.M).group(1)
    image = base / version / "flatcar_production_image.bin.bz2"
    home = tree / "gnupg"
    home.mkdir(mode=0o700)
    gpg = ["gpg", "--homedir", str(home), "--batch"]
    subprocess.run(gpg + ["--import"], input=signer.gpg("--armor", "--export", signer.fingerprints["good"]),
                   check=True, capture_output=True, timeout=30)
    try:
        subprocess.run(gpg + ["--verify", f"{image}.sig", str(image)], check=True, capture_output=True, timeout=30)
    finally:
        subprocess.run(["gpgconf", "--homedir", str(home), "--kill", "all"], capture_output=True, timeout=30)


def test_boot_loaders_from_debian_packages():
    files = {f.tree_path: f for f in boot_loader_files()}
    for path in ("pxelinux.0", "lpxelinux.0", "ldlinux.c32", "menu.c32", "libutil.c32", "libcom32.c32",
                 "vesamenu.c32", "efi64/syslinux.efi", "efi64/ldlinux.e64", "undionly.kpxe", "ipxe.efi",
                 "grubnetx64.efi", "grub/x86_64-efi/http.mod", "grub/x86_64-efi/net.mod"):
        assert path in files
        assert files[path].sha256 == hashlib.sha256(files[path].source.read_bytes()).hexdigest()
    assert {(f.immutable, f.target) for f in files.values()} == {(False, "bootloader")}


def test_grubnetx64_prefix_matches_where_modules_are_placed():
    """The prefix baked into Debian's grubnetx64.efi decides where `insmod http` looks."""
    data = Path("/usr/lib/grub/x86_64-efi/monolithic/grubnetx64.efi").read_bytes()
    assert b"\0/grub\0" in data


def test_missing_boot_loader_names_the_package(tmp_path):
    with pytest.raises(ImageError) as excinfo:
        boot_loader_files(search_dirs={"ipxe": tmp_path})
    lines = [p.format() for p in excinfo.value.problems]
    assert len(lines) == 2  # ipxe.efi and undionly.kpxe
    assert all("install the Debian package ipxe" in line for line in lines)
