"""Secure Boot per profile: a profile's `secure_boot` overrides the site's (spec.secure_boot), and
bootgen's dnsmasq hands that profile's x86-64 machines the other chain, tagged by MAC."""
from __future__ import annotations

import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

from bootgen.build import Paths, build, plan_build
from bootgen.errors import InputError
from bootgen.load import Reader, load_inputs
from bootgen.spec import resolve
from bootgen.watch import dnsmasq_command

from .test_secure_boot_build import SHIM, SITE, _line_col, _signed_kernel

SB_MAC = "52:54:00:aa:00:51"  # a node of the Secure Boot profile, with no static address
GRUB_DEFAULT = "dhcp-boot=tag:!ipxe,tag:efi64,tag:!efihttp64,tag:!secureboot,grubnetx64.efi,,10.10.10.1"
SHIM_TAGGED = "dhcp-boot=tag:!ipxe,tag:efi64,tag:!efihttp64,tag:secureboot,shimx64.efi,,10.10.10.1"


@pytest.fixture
def mixed_site(tmp_path, monkeypatch) -> Paths:
    """tftp-local (no Secure Boot, uefi_loader: grub, full DHCP) plus a Secure Boot profile and its node."""
    shutil.copytree(SITE / "site", tmp_path / "site")
    shutil.copytree(SITE / "nodes", tmp_path / "nodes")
    site = tmp_path / "site" / "site.yaml"
    site.write_text(site.read_text() + "  signed:\n    mirror: true\n"
                    "    kernel: {file: images/signed-vmlinuz, unsigned: true}\n")
    (tmp_path / "site" / "profiles" / "signed.yaml").write_text(
        "images: signed\nos_config: none\nsecure_boot: true\nloaders: [grub]\n")
    (tmp_path / "nodes" / "sb-1.yaml").write_text(f"profile: signed\ninterfaces:\n  - mac: {SB_MAC}\n")
    shutil.copyfile(_signed_kernel(), tmp_path / "site" / "images" / "signed-vmlinuz")
    monkeypatch.chdir(tmp_path)
    return Paths(Path("site"), Path("nodes"), Path("build"))


def test_the_profile_wins_over_the_site_and_says_where(mixed_site):
    inputs = load_inputs(mixed_site.site, mixed_site.nodes)
    specs = {node.name: resolve(inputs.site, inputs.profiles, node) for node in inputs.nodes}
    assert specs["sb-1"].secure_boot and not specs["installed"].secure_boot
    origin = specs["sb-1"].settings["secure_boot"]
    assert (origin.location.file, origin.origin.field) == ("site/profiles/signed.yaml", "$.secure_boot")


def test_dnsmasq_hands_shim_to_the_profiles_machines_only(mixed_site):
    tree = build(mixed_site, fetch=False).write.tree
    assert (tree / "shimx64.efi").read_bytes() == SHIM.read_bytes()
    lines = (tree / "server" / "dnsmasq.conf").read_text().splitlines()
    assert GRUB_DEFAULT in lines and SHIM_TAGGED in lines
    assert f"dhcp-host={SB_MAC},set:secureboot" in lines
    assert lines.count("dhcp-match=set:efi64,option:client-arch,7") == 1
    assert not any(line.startswith("dhcp-host=") and "secureboot" in line and SB_MAC not in line for line in lines)
    grub = (tree / "grub" / "grub.cfg-01-52-54-00-aa-00-51").read_text()
    assert "  linux /images/" in grub and "signed-vmlinuz" in grub
    checked = subprocess.run(["dnsmasq", "--test", "-C", str(tree / "server" / "dnsmasq.conf")], capture_output=True,
                             text=True, timeout=30)
    assert checked.returncode == 0, checked.stderr


def test_only_the_secure_boot_profiles_kernel_must_be_signed(mixed_site):
    """tftp-local's own `local` set has an unsigned stand-in kernel and builds; the signed profile's does not."""
    build(mixed_site, fetch=False)
    (mixed_site.site / "images" / "signed-vmlinuz").write_bytes(b"not a kernel\n")
    with pytest.raises(InputError) as err:
        build(mixed_site, fetch=False)
    line, column = _line_col(mixed_site.site / "site.yaml", "kernel: {file: images/signed-vmlinuz")
    assert [p.format().split("\n")[0] for p in err.value.problems] == [
        f"site/site.yaml:{line}:{column}: error at $.images.signed.kernel: image set 'signed': the kernel "
        "signed-vmlinuz is not an EFI (PE) image: no MZ header; Secure Boot firmware would refuse to start it"]


def test_a_profile_turns_secure_boot_off_in_a_secure_boot_site(mixed_site):
    site = mixed_site.site / "site.yaml"
    site.write_text(site.read_text().replace("  uefi_loader: grub\n", "").replace(
        "kernel_transport: tftp", "kernel_transport: tftp\nsecure_boot: true"))
    (mixed_site.site / "profiles" / "signed.yaml").write_text("images: signed\nos_config: none\nloaders: [grub]\n")
    (mixed_site.site / "profiles" / "live.yaml").write_text(
        (mixed_site.site / "profiles" / "live.yaml").read_text() + "secure_boot: false\n")
    tree = build(mixed_site, fetch=False).write.tree  # `local`'s unsigned kernel is no Secure Boot profile's
    lines = (tree / "server" / "dnsmasq.conf").read_text().splitlines()
    assert "dhcp-boot=tag:!ipxe,tag:efi64,tag:!efihttp64,tag:!nosecureboot,shimx64.efi,,10.10.10.1" in lines
    assert "dhcp-boot=tag:!ipxe,tag:efi64,tag:!efihttp64,tag:nosecureboot,ipxe.efi,,10.10.10.1" in lines
    assert "dhcp-host=d4:ae:52:c5:07:f9,set:nosecureboot,10.10.10.21,installed" in lines
    assert not any(line.startswith(f"dhcp-host={SB_MAC}") for line in lines)


@pytest.mark.parametrize("mode, message", [
    ("proxy", "GRUB cannot boot behind proxyDHCP"),
    ("none", "with dhcp.mode none bootgen's dnsmasq does not choose the loader per machine"),
])
def test_a_secure_boot_profile_needs_bootgens_dhcp(mixed_site, mode, message):
    site = mixed_site.site / "site.yaml"
    site.write_text(site.read_text().replace("  mode: full\n", f"  mode: {mode}\n").replace(
        "  uefi_loader: grub\n", ""))
    with pytest.raises(InputError) as err:
        plan_build(mixed_site, fetch=False)
    line, column = _line_col(mixed_site.site / "profiles" / "signed.yaml", "secure_boot")
    assert [(p.location.file, p.location.line, p.path) for p in err.value.problems] == [
        ("site/profiles/signed.yaml", line, "$.secure_boot")]
    assert message in err.value.problems[0].message


def test_the_serve_line_tags_the_profiles_machines(mixed_site):
    args = shlex.split(dnsmasq_command(Paths(mixed_site.site, mixed_site.nodes, Path("build"),
                                             base_url="http://127.0.0.1:8000/")))
    assert f"--dhcp-host={SB_MAC},set:secureboot" in args
    assert "--" + SHIM_TAGGED.replace("10.10.10.1", "127.0.0.1") in args
    checked = subprocess.run([args[0], "--test", "--conf-file=/dev/null", *args[1:]], capture_output=True, text=True,
                             timeout=30)
    assert checked.returncode == 0, checked.stderr


def test_an_edit_of_a_profiles_secure_boot_gives_the_tree_a_cold_build_gives(mixed_site):
    """Only the dnsmasq answers change (no node uses the profile, the signed chain is in the tree
    either way): the incremental build must still write them."""
    site = mixed_site.site / "site.yaml"
    site.write_text(site.read_text().replace("  uefi_loader: grub\n", "").replace(
        "kernel_transport: tftp", "kernel_transport: tftp\nsecure_boot: true"))
    (mixed_site.nodes / "sb-1.yaml").unlink()
    shutil.copyfile(_signed_kernel(), mixed_site.site / "images" / "vmlinuz")  # the `live` profile's, now signed
    profile = mixed_site.site / "profiles" / "signed.yaml"
    profile.write_text(profile.read_text().replace("secure_boot: true\n", ""))
    build(mixed_site, fetch=False)
    profile.write_text(profile.read_text() + "secure_boot: false\n")
    incremental = (build(mixed_site, fetch=False).write.tree / "server" / "dnsmasq.conf").read_text()
    shutil.rmtree(".bootgen")
    Path("build").unlink()
    cold = (build(mixed_site, fetch=False).write.tree / "server" / "dnsmasq.conf").read_text()
    assert incremental == cold
    assert "tag:!nosecureboot,shimx64.efi" in cold


def test_explain_shows_what_http_boot_hands_a_secure_boot_node_with_ipxe(mixed_site):
    """DHCP hands every x86-64 HTTP Boot client ipxe.efi by URL, Secure Boot site or not; explain
    showed only shim for a Secure Boot node, though one whose firmware has Secure Boot off (the
    datacenter example's http-app-1) boots ipxe.efi that way."""
    from bootgen.explain import explain

    profile = mixed_site.site / "profiles" / "signed.yaml"
    profile.write_text(profile.read_text().replace("loaders: [grub]", "loaders: [grub, ipxe]"))
    shown = {(row["loader"], row["firmware"]): row["first_loader"]
             for row in explain(mixed_site.site, mixed_site.nodes, Path(".bootgen"), "sb-1").firmware}
    assert shown == {("grub", "UEFI Secure Boot"): "shimx64.efi → grubx64.efi", ("ipxe", "BIOS"): "undionly.kpxe",
                     ("ipxe", "UEFI HTTP Boot with Secure Boot off"): "ipxe.efi"}
    plain = {row["firmware"] for row in explain(mixed_site.site, mixed_site.nodes, Path(".bootgen"),
                                                "installed").firmware}
    assert "UEFI HTTP Boot with Secure Boot off" not in plain  # not a Secure Boot node: its UEFI row has ipxe.efi
