"""The dnsmasq command line `bootgen serve` prints answers as the site's generated dnsmasq.conf does
(its dhcp.mode, the loaders of the registry for its architectures and Secure Boot), and the real
dnsmasq accepts it."""
from __future__ import annotations

import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

from bootgen.build import Paths, plan_build
from bootgen.watch import dnsmasq_command

ROOT = Path(__file__).resolve().parents[2]
URL = "http://127.0.0.1:8000/"
SITES = {  # name: (site dir, nodes dir, what DHCP hands x86-64 UEFI machines)
    "proxy-ipxe": (ROOT / "site", ROOT / "nodes", "ipxe.efi"),
    "full-grub": (ROOT / "tests" / "sites" / "tftp-local" / "site", ROOT / "tests" / "sites" / "tftp-local" / "nodes",
                  "grubnetx64.efi"),
    "full-ipxe-only": (ROOT / "tests" / "sites" / "ipxe-only" / "site", ROOT / "tests" / "sites" / "ipxe-only" / "nodes",
                       "ipxe.efi"),
    "full-secure-boot-arm64-pi": (ROOT / "examples" / "datacenter" / "site", ROOT / "examples" / "datacenter" / "nodes",
                                  "shimx64.efi"),
}
# What the command line has and the config file says otherwise: the development tree, this
# server as next-server (the config names the site's tftp_server), and no per-machine lines.
OWN_ARGS = ("--keep-in-foreground", "--tftp-root=")
CONF_ONLY = ("tftp-root=", "dhcp-host=")


def _options(conf: str) -> list[str]:
    """The config's options as command-line arguments (its quotes are dnsmasq's own)."""
    lines = [line for line in conf.splitlines() if line and not line.startswith("#")]
    return ["--" + re.sub(r",,[0-9.]+$", ",,127.0.0.1", line.replace('"', ""))
            for line in lines if not line.startswith(CONF_ONLY)]


@pytest.mark.parametrize("name", sorted(SITES))
def test_the_serve_line_says_what_the_generated_config_says(name, tmp_path, monkeypatch):
    site, nodes, uefi_loader = SITES[name]
    monkeypatch.chdir(tmp_path)
    paths = Paths(site, nodes, tmp_path / "build", base_url=URL)
    args = shlex.split(dnsmasq_command(paths))
    assert args[0] == "dnsmasq" and f"--tftp-root={tmp_path / 'build'}" in args
    _, plan = plan_build(paths, fetch=False)
    conf = plan.artifacts["server/dnsmasq.conf"].data.decode()
    assert [a for a in args[1:] if not a.startswith(OWN_ARGS)] == _options(conf)
    assert any(a.endswith(f",{uefi_loader}") or f",{uefi_loader},," in a for a in args), args
    if uefi_loader != "ipxe.efi":
        assert not any(a.endswith(",ipxe.efi,,127.0.0.1") or a.endswith(",ipxe.efi") for a in args
                       if "X86-64_EFI" in a or "tag:efi64" in a), args
    checked = subprocess.run([args[0], "--test", "--conf-file=/dev/null", *args[1:]], capture_output=True, text=True,
                             timeout=30)
    assert checked.returncode == 0, checked.stderr


def test_the_secure_boot_site_hands_shim_to_uefi_and_grub_to_arm64(tmp_path, monkeypatch):
    site, nodes, _ = SITES["full-secure-boot-arm64-pi"]
    monkeypatch.chdir(tmp_path)
    args = shlex.split(dnsmasq_command(Paths(site, nodes, tmp_path / "build", base_url=URL)))
    boots = [a for a in args if a.startswith("--dhcp-boot=tag:!ipxe")]
    assert "--dhcp-boot=tag:!ipxe,tag:efi64,tag:!efihttp64,tag:!arm64efi,tag:!efihttparm64,tag:!noloader," \
           "shimx64.efi,,127.0.0.1" in boots
    assert "--dhcp-boot=tag:!ipxe,tag:!efi64,tag:!efihttp64,tag:arm64efi,tag:!efihttparm64,tag:!noloader," \
           "grubnetaa64.efi,,127.0.0.1" in boots
    assert not any("pxe-service=tag:!ipxe" in a for a in args), "full DHCP answers with dhcp-boot, not a PXE menu"


def test_a_site_with_problems_gets_no_line(tmp_path, monkeypatch):
    site = tmp_path / "site"
    (site / "profiles").mkdir(parents=True)
    (tmp_path / "nodes").mkdir()
    (site / "site.yaml").write_text("name: broken\nbase_url: 12\n")
    monkeypatch.chdir(tmp_path)
    assert dnsmasq_command(Paths(site, tmp_path / "nodes", tmp_path / "build", base_url=URL)) is None


def test_the_ipxe_only_site_hands_bios_undionly_in_the_line_and_the_config_dnsmasq_accepts(tmp_path, monkeypatch):
    site, nodes, _ = SITES["full-ipxe-only"]
    monkeypatch.chdir(tmp_path)
    paths = Paths(site, nodes, tmp_path / "build", base_url=URL)
    args = shlex.split(dnsmasq_command(paths))
    boots = [a for a in args if a.startswith("--dhcp-boot=tag:!ipxe")]
    assert "--dhcp-boot=tag:!ipxe,tag:!efi64,tag:!efihttp64,tag:!noloader,undionly.kpxe,,127.0.0.1" in boots
    assert not any("pxelinux" in a or "grub" in a for a in args), args
    _, plan = plan_build(paths, fetch=False)
    conf = tmp_path / "dnsmasq.conf"
    conf.write_bytes(plan.artifacts["server/dnsmasq.conf"].data)
    assert "dhcp-boot=tag:!ipxe,tag:!efi64,tag:!efihttp64,tag:!noloader,undionly.kpxe,,10.10.10.1" \
        in conf.read_text().splitlines()
    checked = subprocess.run(["dnsmasq", "--test", f"--conf-file={conf}"], capture_output=True, text=True, timeout=30)
    assert checked.returncode == 0, checked.stderr


def test_behind_proxy_dhcp_an_ipxe_only_site_offers_bios_undionly_in_its_pxe_menu(tmp_path, monkeypatch):
    """pxe-service adds `.0` to a BIOS boot file without a suffix of its own, not to undionly.kpxe."""
    shutil.copytree(ROOT / "site", tmp_path / "site")
    site = tmp_path / "site" / "site.yaml"
    site.write_text("boot_configs: [ipxe]\n" + site.read_text())
    monkeypatch.chdir(tmp_path)
    args = shlex.split(dnsmasq_command(Paths(tmp_path / "site", ROOT / "nodes", tmp_path / "build", base_url=URL)))
    assert "--pxe-service=tag:!ipxe,x86PC,bootgen (BIOS),undionly.kpxe" in args
    assert not any("pxelinux" in a for a in args), args
    checked = subprocess.run([args[0], "--test", "--conf-file=/dev/null", *args[1:]], capture_output=True, text=True,
                             timeout=30)
    assert checked.returncode == 0, checked.stderr
