"""The README's install path works as written on Debian 12: its two commands exist and are what CI
runs, and scripts/setup.sh, run for real in a fresh copy of the repository, leaves a `bootgen`
that a new shell finds, and ends by saying how to run it."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()


def _section(title: str) -> str:
    return README.split(f"\n## {title}\n", 1)[1].split("\n## ", 1)[0]


def test_the_two_commands_exist_and_ci_runs_the_second():
    block = re.search(r"```sh\n(.*?)```", _section("Two commands"), re.S).group(1)
    commands = [line.split("#")[0].strip() for line in block.splitlines() if line.strip()]
    assert commands == ["sh scripts/setup.sh", "sh scripts/test.sh"]
    for command in commands:
        assert (ROOT / command.split()[1]).is_file()
    ci = (ROOT / ".ci" / "run").read_text()
    assert "sh scripts/test.sh" in ci.splitlines()


def test_readme_never_tells_debian_users_to_pip_install_into_the_system():
    using = _section("Using it")
    commands = re.findall(r"```sh\n(.*?)```", using, re.S)
    assert not any(line.strip().startswith("pip install") for block in commands for line in block.splitlines())
    assert "sh scripts/setup.sh" in commands[0]


def test_setup_ends_by_saying_how_to_run_bootgen():
    lines = [line.strip() for line in (ROOT / "scripts" / "setup.sh").read_text().splitlines()]
    code = [line for line in lines if line and not line.startswith("#")]
    assert code[-1] == 'echo "bootgen is installed; run it as: $RUN"'


def _fresh_copy(target: Path) -> None:
    """The repository's tracked files as they are in the working tree (no .venv, no build)."""
    listed = subprocess.run(["git", "-C", str(ROOT), "ls-files", "-z"], capture_output=True, check=True,
                            timeout=60).stdout.decode().split("\0")
    for name in filter(None, listed):
        source = ROOT / name
        if source.is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)


DEBIAN_PYTHON = Path("/usr/bin/python3")


def _externally_managed(python: Path) -> bool:
    check = "import os, sys, sysconfig; sys.exit(not os.path.exists(os.path.join(sysconfig.get_path('stdlib'), " \
            "'EXTERNALLY-MANAGED')))"
    return python.exists() and subprocess.run([str(python), "-c", check], timeout=60).returncode == 0


@pytest.mark.skipif(not (shutil.which("git") and _externally_managed(DEBIAN_PYTHON)),
                    reason="needs git and Debian's own (externally managed) /usr/bin/python3")
def test_setup_for_real_in_a_fresh_copy(tmp_path):
    """As on a fresh Debian 12: `python3` is Debian's, which refuses system-wide pip installs, so
    setup must install into the copy's .venv/ (from PyPI, as scripts/test.sh does). bootgen is
    linked into a bin directory of the test's own instead of /usr/local/bin. Nothing is installed
    into any interpreter outside the copy: that is checked before setup runs."""
    repo, bin_dir = tmp_path / "repo", tmp_path / "bin"
    _fresh_copy(repo)
    debian = tmp_path / "debian-python"  # first on PATH: `python3` is Debian's, whatever else is installed
    debian.mkdir()
    (debian / "python3").symlink_to(DEBIAN_PYTHON)
    path = f"{debian}:{bin_dir}:{os.environ['PATH']}"
    # HOME too: setup makes the example's secrets file under it, which must not touch this machine's user.
    env = {**os.environ, "PATH": path, "BOOTGEN_BIN_DIR": str(bin_dir), "HOME": str(tmp_path)}
    for name in ("PYTHONPATH", "BOOTGEN_SECRETS", "XDG_CONFIG_HOME"):
        env.pop(name, None)
    assert _externally_managed(debian / "python3")
    done = subprocess.run(["sh", "scripts/setup.sh"], cwd=repo, env=env, capture_output=True, text=True,
                          timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    last = done.stdout.strip().splitlines()[-1]
    assert last == f"bootgen is installed; run it as: bootgen   ({bin_dir}/bootgen -> {repo}/.venv/bin/bootgen)"
    assert (repo / "build").is_symlink()  # setup built the example
    # A new shell, as the user's next command: `bootgen` is found, and the README's next steps work.
    site = tmp_path / "mysite"
    after = subprocess.run(["sh", "-euc", f"bootgen --version && bootgen init {site} && cd {site} && bootgen check"],
                           cwd=tmp_path, env={**env, "HOME": str(tmp_path)}, capture_output=True, text=True,
                           timeout=120)
    assert after.returncode == 0, after.stdout + after.stderr
    assert after.stdout.startswith("bootgen, version ") and "ok: 1 nodes, 3 profiles" in after.stdout
