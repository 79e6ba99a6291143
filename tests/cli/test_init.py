"""`bootgen init`: the scaffold builds cleanly, with the user's own key and every profile it offers."""
import json
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from bootgen.cli import main
from bootgen.passwords import hash_password

ED25519 = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIE+2vROc1NjaQocj54llQOnVW0ro0rug8lR1LGbPerF1 me@laptop"
PRIVATE = "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQ\n-----END OPENSSH PRIVATE KEY-----\n"


def _run(*args, home: Path):
    return CliRunner().invoke(main, list(args), env={"HOME": str(home)})


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)
    return home


def _site(directory: Path) -> dict:
    return yaml.safe_load((directory / "site" / "site.yaml").read_text())


def _build(directory: Path, monkeypatch, *args):
    monkeypatch.chdir(directory)
    return CliRunner().invoke(main, ["build", *args])


def test_kernel_args_keep_the_comma_of_one_argument(home, monkeypatch):
    assert _run("init", "s", home=home).exit_code == 0
    assert _site(Path("s"))["defaults"]["kernel_args"] == ["console=tty0", "console=ttyS0,115200n8"]
    assert _build(Path("s"), monkeypatch).exit_code == 0
    append = [line for line in Path("build/pxelinux.cfg/0A000046").read_text().splitlines() if "APPEND" in line]
    assert append and " console=tty0 console=ttyS0,115200n8 " in append[0]


def test_gitignore_keeps_build_and_state_out_of_git(home):
    assert _run("init", "s", home=home).exit_code == 0
    lines = Path("s/.gitignore").read_text().splitlines()
    assert "/build" in lines and "/build-*" in lines and "/.bootgen/" in lines
    if shutil.which("git"):  # what git itself makes of it
        subprocess.run(["git", "init", "-q", "s"], check=True, timeout=30)
        Path("s/build").write_text("x")
        Path("s/build-lab").write_text("x")  # an environment's output link
        Path("s/.bootgen").mkdir()
        Path("s/.bootgen/stamp").write_text("x")
        status = subprocess.run(["git", "-C", "s", "status", "--porcelain", "--untracked-files=all"],
                                capture_output=True, text=True, check=True, timeout=30).stdout
        assert "build" not in status and ".bootgen" not in status and "site/site.yaml" in status


def test_an_existing_gitignore_is_extended_not_replaced(home):
    Path("s").mkdir()
    Path("s/.gitignore").write_text("*.swp\n/build")
    assert _run("init", "s", home=home).exit_code == 0
    assert Path("s/.gitignore").read_text() == "*.swp\n/build\n/build-*\n/.bootgen/\n"


def test_key_from_ssh_key_file_is_authorized(home, monkeypatch):
    Path("me.pub").write_text(ED25519 + "\n")
    result = _run("init", "s", "--ssh-key", "me.pub", home=home)
    assert result.exit_code == 0, result.output
    assert "machines will authorize the SSH key(s) in me.pub" in result.output
    assert _site(Path("s"))["defaults"]["ssh_authorized_keys"] == [ED25519]
    assert _build(Path("s"), monkeypatch).exit_code == 0
    configs = [json.loads(p.read_text()) for p in Path("build/configs/node-1").glob("*/ignition.json")]
    keys = [k for c in configs for u in c["passwd"]["users"] for k in u.get("sshAuthorizedKeys", [])]
    assert keys == [ED25519]


def test_keys_from_home_ssh_are_authorized(home):
    (home / ".ssh" / "id_ed25519.pub").write_text(ED25519 + "\n")
    (home / ".ssh" / "broken.pub").write_text("not a key\n")
    result = _run("init", "s", home=home)
    assert result.exit_code == 0, result.output
    assert f"in {home / '.ssh' / 'id_ed25519.pub'}" in result.output
    assert _site(Path("s"))["defaults"]["ssh_authorized_keys"] == [ED25519]


def test_no_key_scaffolds_without_one_and_says_how_to_add_it(home, monkeypatch):
    result = _run("init", "s", home=home)
    assert result.exit_code == 0
    assert ("warning: no SSH public key found (--ssh-key FILE or ~/.ssh/*.pub): machines will authorize none; "
            "add yours under defaults.ssh_authorized_keys in s/site/site.yaml") in result.output
    assert _site(Path("s"))["defaults"]["ssh_authorized_keys"] == []
    assert "AAAAC3NzaC1lZDI1NTE5AAAAIBnVq1w" not in Path("s/site/site.yaml").read_text()  # the old placeholder
    monkeypatch.chdir("s")
    assert CliRunner().invoke(main, ["check"]).exit_code == 0


def test_a_private_key_is_refused_and_nothing_is_written(home):
    Path("me").write_text(PRIVATE)
    result = _run("init", "s", "--ssh-key", "me", home=home)
    assert result.exit_code == 1
    assert "me: error at --ssh-key: this is a PRIVATE key" in result.output
    assert "b3BlbnNzaC1rZXktdjE" not in result.output
    assert not Path("s").exists()


def test_every_scaffolded_profile_checks_and_builds(home, monkeypatch):
    assert _run("init", "s", home=home).exit_code == 0
    profiles = sorted(p.stem for p in Path("s/site/profiles").glob("*.yaml"))
    assert profiles == ["fcos-install", "flatcar-install", "ubuntu-autoinstall"]
    Path("s/nodes/fcos-1.yaml").write_text(
        "profile: fcos-install\ninterfaces:\n  - mac: 52:54:00:12:34:57\n    address: 10.0.0.71/24\n")
    Path("s/nodes/ubuntu-1.yaml").write_text(
        "profile: ubuntu-autoinstall\ninterfaces:\n  - mac: 52:54:00:12:34:58\n"
        f"cloud_init:\n  password_hash: '{hash_password('x', rounds=5000)}'\n")
    monkeypatch.chdir("s")
    check = CliRunner().invoke(main, ["check"])
    assert check.exit_code == 0, check.output
    assert "ok: 3 nodes, 3 profiles" in check.output
    built = CliRunner().invoke(main, ["build"])
    assert built.exit_code == 0, built.output
    assert Path("build/ipxe/52-54-00-12-34-57.ipxe").read_text().count("coreos.inst.install_dev=/dev/sda") == 1
    assert "ds=nocloud-net;s=http://10.0.0.5:8080/configs/ubuntu-1/" in \
        Path("build/ipxe/52-54-00-12-34-58.ipxe").read_text()
    if shutil.which("ignition-validate"):
        configs = [p for p in Path("build/configs").rglob("*") if p.name in ("install.ign", "ignition.json")]
        assert len(configs) == 3  # node-1's two stages and fcos-1's final config
        for config in configs:
            done = subprocess.run(["ignition-validate", str(config)], capture_output=True, text=True, timeout=60)
            assert done.returncode == 0 and not done.stdout + done.stderr, (config, done.stderr)
    if shutil.which("cloud-init"):
        user_data = list(Path("build/configs/ubuntu-1").glob("*/user-data"))
        assert len(user_data) == 1
        done = subprocess.run(["cloud-init", "schema", "-c", str(user_data[0])], capture_output=True, text=True,
                              timeout=120)
        assert done.returncode == 0 and "Valid cloud-config" in done.stdout, done.stdout + done.stderr
