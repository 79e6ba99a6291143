"""site.yaml `boot_configs`: the per-node files a site writes, counted, with and without it."""
import shutil
from collections import Counter
from pathlib import Path

from bootgen.build import Paths, build
from bootgen.publish.manifest import load_tree

SITE = Path(__file__).resolve().parents[1] / "sites" / "ipxe-only"


def _build(tmp_path, monkeypatch, *, ipxe_only: bool):
    shutil.copytree(SITE / "site", tmp_path / "site")
    shutil.copytree(SITE / "nodes", tmp_path / "nodes")
    if not ipxe_only:
        site = tmp_path / "site" / "site.yaml"
        site.write_text(site.read_text().replace("boot_configs: [ipxe]\n", ""))
    monkeypatch.chdir(tmp_path)
    return load_tree(build(Paths(Path("site"), Path("nodes"), Path("build")), fetch=False).write.tree)


def _per_node(manifest) -> dict[str, Counter]:
    counts: dict[str, Counter] = {}
    for entry in manifest.files:
        if entry.node:
            counts.setdefault(entry.node, Counter())[entry.target] += 1
    return counts


def test_an_ipxe_only_node_gets_its_ipxe_entry_per_mac_and_its_os_config(tmp_path, monkeypatch):
    manifest = _build(tmp_path, monkeypatch, ipxe_only=True)
    # coreos-f786 boots from one of its two interfaces: one iPXE entry; its cloud-config at its
    # content address and under each MAC. `installed` boots its disk: its iPXE entry only.
    assert _per_node(manifest) == {"coreos-f786": Counter({"ipxe": 1, "cloud-config": 3}),
                                   "installed": Counter({"ipxe": 1})}
    loaders = sorted(entry.path for entry in manifest.files if entry.target == "bootloader")
    assert loaders == ["ipxe.efi", "undionly.kpxe"]
    site_wide = sorted(entry.path for entry in manifest.files if entry.node is None
                       and entry.target in ("pxelinux", "grub", "ipxe"))
    assert site_wide == ["boot.ipxe", "ipxe/default.ipxe"]


def test_by_default_a_node_also_gets_pxelinux_and_grub_entries_by_mac_and_address(tmp_path, monkeypatch):
    manifest = _build(tmp_path, monkeypatch, ipxe_only=False)
    # per PXE interface a pxelinux, GRUB and iPXE entry; `installed` has a static address on it,
    # so a pxelinux and a GRUB entry by address too
    assert _per_node(manifest) == {"coreos-f786": Counter({"ipxe": 1, "pxelinux": 1, "grub": 1, "cloud-config": 3}),
                                   "installed": Counter({"ipxe": 1, "pxelinux": 2, "grub": 2})}
    loaders = {entry.path for entry in manifest.files if entry.target == "bootloader"}
    assert {"lpxelinux.0", "pxelinux.0", "grubnetx64.efi", "undionly.kpxe", "ipxe.efi"} <= loaders
