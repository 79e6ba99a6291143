"""The README's walkthrough, run as written (its four variables pointed at loopback servers):
git init to a tree served by real nginx from the docroot and by SeaweedFS from a bucket. Each
server's boot.ipxe must chain to that server. The boot itself is covered by tests/e2e."""
from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("publish_servers", ROOT / "tests/publish/publish_servers.py")
servers = sys.modules.setdefault("publish_servers", importlib.util.module_from_spec(_spec))
_spec.loader.exec_module(servers)  # registered first: its dataclasses look their module up


def walkthrough_blocks() -> list[str]:
    """The ```sh blocks of the README's Walkthrough section, in order."""
    text = ROOT.joinpath("README.md").read_text()
    section = text.split("\n## Walkthrough\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"^```sh\n(.*?)^```$", section, re.S | re.M)


def test_walkthrough_has_the_steps():
    script = "\n".join(walkthrough_blocks())
    for step in ("git init", "bootgen init .", "bootgen check --env lab", "bootgen build --env lab",
                 "bootgen publish --env lab", "bootgen build --env prod", "bootgen publish --env prod"):
        assert step in script


@pytest.fixture
def seaweed(tmp_path):
    server = servers.start_seaweedfs(tmp_path / "seaweed")
    yield server
    server.stop()


def test_walkthrough_runs_as_written(tmp_path, seaweed):
    port = servers.free_port()
    docroot = tmp_path / "srv"
    values = {"BOOT_SERVER": "127.0.0.1", "HTTP_PORT": str(port), "DOCROOT": str(docroot),
              "BUCKET_URL": seaweed.endpoint}
    script = "\n".join(walkthrough_blocks())
    for name, value in values.items():
        script, count = re.subn(rf"^{name}=\S+", f"{name}={value}", script, flags=re.M)
        assert count == 1, name
    servers.s3_client(seaweed.endpoint).create_bucket(Bucket="boot")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "bootgen").write_text(f'#!/bin/sh\nexec "{sys.executable}" -m bootgen "$@"\n')
    (bin_dir / "bootgen").chmod(0o755)
    env = {**servers.rclone_env(), "PATH": f"{bin_dir}:{os.environ['PATH']}", "PYTHONPATH": str(ROOT),
           "HOME": str(tmp_path), "AWS_ACCESS_KEY_ID": servers.ACCESS_KEY,
           "AWS_SECRET_ACCESS_KEY": servers.SECRET_KEY, "AWS_DEFAULT_REGION": "us-east-1"}
    done = subprocess.run(["sh", "-eu", "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Traceback" not in done.stderr

    site = tmp_path / "boot-site"
    status = subprocess.run(["git", "-C", str(site), "status", "--porcelain"], capture_output=True, text=True,
                            timeout=30).stdout
    assert status == ""  # nothing left to commit: build-lab, build-prod and .bootgen/ are ignored

    served = (docroot / "current" / "server" / "nginx.conf").read_text()
    server_block = served[served.index("server {"):].replace(f"listen {port};", f"listen 127.0.0.1:{port};")
    nginx = servers.start_nginx(tmp_path / "nginx", server_block, port)
    try:
        code, _, body = servers.http_get(f"http://127.0.0.1:{port}/boot.ipxe")
        assert code == 200 and f"http://127.0.0.1:{port}/ipxe/" in body.decode()
        code, _, body = servers.http_get(f"http://127.0.0.1:{port}/ipxe/52-54-00-12-34-56.ipxe")
        assert code == 200 and f"http://127.0.0.1:{port}/configs/node-1/" in body.decode()
    finally:
        nginx.stop()

    code, _, body = servers.http_get(f"{seaweed.endpoint}/boot/fleet/boot.ipxe")  # anonymous, as iPXE asks
    assert code == 200 and f"{seaweed.endpoint}/boot/fleet/ipxe/" in body.decode()
    code, _, body = servers.http_get(f"{seaweed.endpoint}/boot/fleet/ipxe/52-54-00-12-34-56.ipxe")
    assert code == 200 and f"{seaweed.endpoint}/boot/fleet/configs/node-1/" in body.decode()
    assert f"http://127.0.0.1:{port}/" not in body.decode()  # the bucket's tree never names the nginx server
