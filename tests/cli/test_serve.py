"""`bootgen serve`: a port it cannot use is a user error; its development tree, banner and dnsmasq
one-liner all send machines to the server it runs, and `build/` is left alone."""
from __future__ import annotations

import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

from click.testing import CliRunner

from bootgen.cli import main

ROOT = Path(__file__).resolve().parents[2]
STARTUP_TIMEOUT = 60


def test_a_port_in_use_is_a_user_error(example):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = CliRunner().invoke(main, ["serve", "--offline", "--port", str(port)])
    assert result.exit_code == 1, result.output
    assert f"--port {port}: error: cannot serve on 127.0.0.1:{port}: Address already in use" in result.output
    assert "--port" in result.output and "internal error" not in result.output
    assert not (example.state / "serve").exists()


def test_a_port_out_of_range_is_a_user_error(example):
    result = CliRunner().invoke(main, ["serve", "--offline", "--port", "99999"])
    assert result.exit_code == 1, result.output
    assert "--port 99999: error: not a TCP port" in result.output and "internal error" not in result.output


def test_a_wildcard_bind_needs_the_url_machines_use(example):
    result = CliRunner().invoke(main, ["serve", "--offline", "--bind", "0.0.0.0", "--port", "0"])
    assert result.exit_code == 1 and "--url http://SERVER-IP:" in result.output, result.output
    bad = CliRunner().invoke(main, ["serve", "--offline", "--port", "0", "--url", "http://x/$(reboot)"])
    assert bad.exit_code == 1 and "--url" in bad.output and "internal error" not in bad.output, bad.output


def _serve(cwd: Path) -> tuple[subprocess.Popen, list[str]]:
    """Start `bootgen serve --port 0`; its banner lines once the first build is reported."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    process = subprocess.Popen([sys.executable, "-m", "bootgen", "serve", "--offline", "--port", "0"], cwd=cwd,
                               env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(line.rstrip("\n") for line in process.stdout),
                              daemon=True)
    reader.start()
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while time.monotonic() < deadline and process.poll() is None and not any("files for" in l for l in lines):
        time.sleep(0.05)
    assert any("files for" in line for line in lines), lines
    return process, lines


def _stop(process: subprocess.Popen) -> None:
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=5)


def _get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.read().decode()


def test_serve_builds_a_development_tree_for_its_own_url_and_leaves_build_alone(example, tmp_path):
    assert CliRunner().invoke(main, ["build", "--offline"]).exit_code == 0
    before = os.readlink(example.out)
    built = (example.out / "boot.ipxe").read_text()
    process, lines = _serve(tmp_path)
    try:
        url = re.search(r"at (http://127\.0\.0\.1:\d+/) ", lines[0]).group(1)
        assert f"  iPXE:       chain {url}boot.ipxe" in lines
        served = _get(url + "boot.ipxe")
        chains = re.findall(r"chain --autofree (\S+)", served)
        assert chains and all(c.startswith(url + "ipxe/") for c in chains), served
        node_script = _get(chains[0].replace("${mac:hexhyp}", "00-1e-06-45-0a-01"))
        assert all(u.startswith(url) for u in re.findall(r"https?://\S+", node_script)
                   if "/images/" in u or "/configs/" in u), node_script
        dnsmasq_conf = _get(url + "server/dnsmasq.conf")
        assert f"dhcp-boot=tag:ipxe,{url}boot.ipxe" in dnsmasq_conf
        command = next(line.strip() for line in lines if line.strip().startswith("dnsmasq "))
        args = shlex.split(command)
        assert f"--dhcp-boot=tag:ipxe,{url}boot.ipxe" in args
        for guard in ("--dhcp-userclass=set:ipxe,iPXE", "--dhcp-match=set:ipxe,175"):
            assert guard in args and guard[2:] in dnsmasq_conf  # the generated config's iPXE guard
        assert all("tag:" in a for a in args if a.startswith(("--pxe-service", "--dhcp-boot")))
        # The real dnsmasq accepts the line as printed (with a subnet in place of the placeholder).
        args = [a.replace("<your subnet>", "127.0.0.0") for a in args]
        check = subprocess.run([args[0], "--test", "--conf-file=/dev/null", *args[1:]], capture_output=True,
                               text=True, timeout=30)
        assert check.returncode == 0, check.stderr
    finally:
        _stop(process)
    assert os.readlink(example.out) == before and (example.out / "boot.ipxe").read_text() == built
    assert url not in built
