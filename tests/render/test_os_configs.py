"""OS configs from the example site, checked by the real consumers' validators.

Every Ignition file must pass `ignition-validate` with no output at all (it
exits 0 on warnings), and every cloud-config must pass `cloud-init schema`.
"""
import hashlib
import re
import json
import shutil
import subprocess
from urllib.parse import unquote

import pytest

from bootgen.build import build
from bootgen.plan import listing_dir
from bootgen.publish.manifest import load_tree


def _ubuntu_dir() -> str:
    """The Ubuntu node's password hash is a secret reference: its configs are under a keyed hash of its name."""
    from pathlib import Path

    from bootgen.secrets import private_name

    return private_name(Path("site"), "ubuntu-4f62c7")


def _files(tree, target):
    """Files of `target`, from the full listing (the public one leaves out secret-bearing files)."""
    return [tree / f.path for f in load_tree(listing_dir(tree)).files if f.target == target]


@pytest.fixture
def tree(example):
    return build(example, fetch=False).write.tree


def test_every_ignition_file_passes_ignition_validate(tree):
    assert shutil.which("ignition-validate"), "install Debian's `ignition` package"
    configs = _files(tree, "ignition")
    assert len(configs) == 7  # node-1, node-2, tink-worker: final + stage 1 each; fcos-1: final only
    for config in configs:
        done = subprocess.run(["ignition-validate", str(config)], capture_output=True, text=True, timeout=60)
        assert (done.returncode, done.stdout + done.stderr) == (0, ""), config


def test_every_cloud_config_passes_cloud_init_schema(tree):
    assert shutil.which("cloud-init"), "install Debian's `cloud-init` package"
    configs = [p for p in _files(tree, "cloud-init") + _files(tree, "cloud-config")
               if p.read_bytes().startswith(b"#cloud-config")]
    assert {p.name for p in configs} >= {"user-data", "vendor-data", "cloud-config.yml"}
    for config in configs:
        done = subprocess.run(["cloud-init", "schema", "-c", str(config)], capture_output=True, text=True,
                              timeout=120)
        assert done.returncode == 0, done.stdout + done.stderr
        assert "Valid cloud-config" in done.stdout, done.stdout + done.stderr


def test_two_stage_install_pins_the_final_config(tree):
    stage1 = json.loads(next(p for p in _files(tree, "ignition") if p.name == "install.ign"
                             and "/node-1/" in str(p)).read_text())
    fetched = stage1["storage"]["files"][0]["contents"]
    final_path = fetched["source"].split("http://10.0.0.5:8080/", 1)[1]
    final_bytes = (tree / final_path).read_bytes()
    assert fetched["verification"]["hash"] == "sha512-" + hashlib.sha512(final_bytes).hexdigest()
    unit = stage1["systemd"]["units"][0]["contents"]
    assert 'flatcar-install -d /dev/sda -i /opt/ignition.json && udevadm settle && systemctl reboot' in unit
    pxelinux = (tree / "pxelinux.cfg" / "0A000046").read_text()  # seed 000: node-1 by its hex IP
    assert "flatcar.first_boot=1 ignition.config.url=http://10.0.0.5:8080/configs/node-1/" in pxelinux
    assert "/install.ign" in pxelinux


def test_final_config_has_hostname_keys_and_static_network(tree):
    final = json.loads(next(p for p in _files(tree, "ignition") if p.name == "ignition.json"
                            and "/node-1/" in str(p)).read_text())
    files = {f["path"]: f for f in final["storage"]["files"]}
    assert files["/etc/hostname"]["contents"]["source"] == "data:,node-1%0A"
    network = files["/etc/systemd/network/10-bootgen-001e06450a01.network"]
    assert unquote(network["contents"]["source"].removeprefix("data:,")) == (
        "[Match]\nMACAddress=00:1e:06:45:0a:01\n\n[Network]\nAddress=10.0.0.70/24\nGateway=10.0.0.1\nDNS=10.0.0.1\n")
    assert final["passwd"]["users"][0]["name"] == "core"
    assert final["passwd"]["users"][0]["sshAuthorizedKeys"][0].startswith("ssh-ed25519 ")


def test_seed_003_kernel_arguments_and_quoting(tree):
    ipxe = (tree / "ipxe" / "00-0c-29-4f-62-c7.ipxe").read_text()
    assert " ip=dhcp url=http://192.168.1.3:12345/ubuntu-22.04.1/ubuntu-22.04.1-live-server-amd64.iso autoinstall" \
           f" ds=nocloud-net;s=http://10.0.0.5:8080/configs/{_ubuntu_dir()}/" in ipxe
    assert " initrd=initrd " in ipxe  # UEFI kernels only see initrds named on the command line
    grub = (tree / "grub" / "grub.cfg-01-00-0c-29-4f-62-c7").read_text()
    assert f"'ds=nocloud-net;s=http://10.0.0.5:8080/configs/{_ubuntu_dir()}/" in grub
    user_data = next(p for p in _files(tree, "cloud-init") if p.name == "user-data").read_text()
    assert "allow-pw: false" in user_data and "install-server: true" in user_data
    assert "192.168.1.4/24" in user_data and "via: 192.168.1.1" in user_data
    assert "iptables-legacy" in user_data


def test_seed_001_cloud_config_names_and_install_script(tree):
    assert (tree / "pxelinux.cfg" / "01-00-25-90-c0-f7-86").is_file()
    assert (tree / "cloud-configs" / "00:25:90:c0:f7:86.yml").read_bytes().startswith(b"#cloud-config\n")
    script = next(p for p in _files(tree, "cloud-config") if p.name == "install.sh").read_text()
    assert "sudo coreos-install -d /dev/sda -c /tmp/cloud-config.yml -C stable -V 1010.5.0" in script
    assert "sudo reboot" in script


def test_tinkerbell_export_for_the_seed_004_worker(tree):
    import yaml

    hardware, template, workflow = yaml.safe_load_all((tree / "tinkerbell" / "tink-worker.yaml").read_text())
    dhcp = hardware["spec"]["interfaces"][0]["dhcp"]
    assert (dhcp["mac"], dhcp["ip"]) == ("08:00:27:00:00:01", {
        "address": "192.168.1.5", "netmask": "255.255.255.248", "gateway": "192.168.1.1"})
    netboot = hardware["spec"]["interfaces"][0]["netboot"]
    assert netboot == {"allowPXE": True, "allowWorkflow": True,
                       "ipxe": {"url": "http://10.0.0.5:8080/ipxe/08-00-27-00-00-01.ipxe"}}
    assert (tree / "ipxe" / "08-00-27-00-00-01.ipxe").is_file()
    actions = yaml.safe_load(template["spec"]["data"])["tasks"][0]["actions"]
    assert actions[1]["command"] == ["/usr/local/bin/flatcar-install", "-s", "-i", "/statedir/ignition.json"]
    fetch = actions[0]["command"][2]
    final_path = fetch.split("http://10.0.0.5:8080/", 1)[1].split()[0]
    digest = hashlib.sha512((tree / final_path).read_bytes()).hexdigest()
    assert f"echo '{digest}  /statedir/ignition.json' | sha512sum -c -" in fetch
    assert workflow["spec"] == {"templateRef": "tink-worker-flatcar-install", "hardwareRef": "tink-worker",
                                "hardwareMap": {"device_1": "08:00:27:00:00:01"}}
    installed = list(yaml.safe_load_all((tree / "tinkerbell" / "node-3.yaml").read_text()))
    assert len(installed) == 1 and installed[0]["spec"]["interfaces"][0]["netboot"]["allowWorkflow"] is False


def test_pixiecore_api_answers(tree):
    answer = json.loads((tree / "pixiecore" / "v1" / "boot" / "00:0c:29:4f:62:c7").read_text())
    assert answer["kernel"] == "http://192.168.1.3:12345/ubuntu-22.04.1/casper/vmlinuz"
    assert answer["initrd"] == ["http://192.168.1.3:12345/ubuntu-22.04.1/casper/initrd"]
    assert f"autoinstall ds=nocloud-net;s=http://10.0.0.5:8080/configs/{_ubuntu_dir()}/" in answer["cmdline"]
    assert not (tree / "pixiecore" / "v1" / "boot" / "00:1e:06:45:0a:03").exists()  # boots its disk


def test_fcos_installs_from_kernel_arguments_with_its_butane_file(tree):
    ipxe = (tree / "ipxe" / "52-54-00-fc-05-01.ipxe").read_text()
    final_url = re.search(r"coreos.inst.ignition_url=(\S+)", ipxe).group(1)
    assert "coreos.inst.install_dev=/dev/nvme0n1" in ipxe
    assert final_url.endswith("/ignition.json")  # no stage 1: coreos-installer writes the final config
    final = json.loads((tree / final_url.split("http://10.0.0.5:8080/", 1)[1]).read_text())
    motd = next(f for f in final["storage"]["files"] if f["path"] == "/etc/motd")
    assert unquote(motd["contents"]["source"].removeprefix("data:,")) == "Installed by bootgen.\n"
    assert not (tree / "pxelinux.cfg" / "01-52-54-00-fc-05-01").exists()  # profile loaders: ipxe, grub
