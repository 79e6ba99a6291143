"""A stranger on the boot network reads no secret value.

The example site is built as it is (its Ubuntu node at 192.168.1.4); the
nginx crawl runs in a network namespace the test makes, where both the node's
address and a stranger's are on the loopback interface, so the client can
speak from either (nothing leaves the namespace). A crawler starts from every fixed-name entry point and every
public index of the tree, follows every URL it finds, and looks for the
secret value in every encoding bootgen writes; it runs against the generated
nginx config on real nginx, and against SeaweedFS after `publish`.
"""
from __future__ import annotations

import http.client
import json
import re
from pathlib import Path

import pytest
from publish_servers import free_port, s3_client, start_nginx

from bootgen.build import build
from bootgen.publish import publish
from bootgen.secrets import encodings
from bootgen.secrets_tree import bucket_policy, publish_notice, secret_paths

NOCLOUD = ("user-data", "meta-data", "vendor-data", "network-config")
NODE = "192.168.1.4"  # the example's Ubuntu node
STRANGER = "192.168.1.9"
MAC = "00:0c:29:4f:62:c7"
FIXED = ["", "manifest.json", "SHA256SUMS", "boot.ipxe", "ipxe/default.ipxe", "pxelinux.cfg/default",
         "grub/grub.cfg", "grub/grub.cfg-default", "server/nginx.conf", "server/dnsmasq.conf",
         "server/nginx-secrets.conf", "configs/", "configs/ubuntu-4f62c7/", "cloud-configs/"]


def _per_machine_names(mac: str, address: str) -> list[str]:
    """The names firmware asks for by MAC and address: anyone who knows them can ask too."""
    dashed, hexip = mac.replace(":", "-"), "".join(f"{int(p):02X}" for p in address.split("."))
    return [f"pxelinux.cfg/01-{dashed}", f"pxelinux.cfg/{hexip}", f"grub/grub.cfg-01-{dashed}",
            f"grub/grub.cfg-{hexip}", f"ipxe/{dashed}.ipxe", f"cloud-configs/{mac}.yml",
            f"pixiecore/v1/boot/{mac}"]


@pytest.fixture
def fenced_site(example, tmp_path, example_secrets):
    """The example, served from this test's nginx port; built."""
    port = free_port()
    site = Path("site/site.yaml")
    text = site.read_text().replace("http://10.0.0.5:8080/", f"http://127.0.0.1:{port}/")
    text = text.replace("root: /srv/bootgen/current", f"root: {tmp_path / 'build'}")
    site.write_text(text.replace("http_port: 8080", f"http_port: {port}"))
    build(example, fetch=False)
    return port, tmp_path / "build"


def _secret_forms(example_secrets) -> list[bytes]:
    import yaml

    values = yaml.safe_load(example_secrets.read_text())["secrets"].values()
    return [form for value in values for form in encodings(value)]


class Crawler:
    """Follows every URL under `base` it finds, from the seeds, reading with `fetch(path)`."""

    def __init__(self, base: str, fetch):
        self.base, self.fetch = base, fetch
        self.pages: dict[str, tuple[int, bytes]] = {}

    def run(self, seeds, limit: int = 2000) -> dict[str, tuple[int, bytes]]:
        queue = list(seeds)
        while queue and len(self.pages) < limit:
            path = queue.pop()
            if path in self.pages:
                continue
            status, body = self.fetch(path)
            self.pages[path] = (status, body)
            if status == 200:
                queue += self.links(path, body)
        return self.pages

    def links(self, path: str, body: bytes) -> list[str]:
        text = body.decode("utf-8", "replace")
        found = re.findall(re.escape(self.base) + r"""([^\s"'<>;\\]*)""", text)
        if path == "SHA256SUMS" or path.endswith(".sha256"):
            found += [line[66:] for line in text.splitlines()]
        if path == "manifest.json":  # the index's root names its pages
            found += [f"index/{page['id']}.page.json" for page in json.loads(body)["pages"]]
        elif path.endswith(".page.json"):  # a page names shards
            found += [f"index/{shard['id']}{suffix}" for shard in json.loads(body)["shards"]
                      for suffix in (".json", ".sha256")]
        elif path.startswith("index/") and path.endswith(".json"):
            found += [entry["path"] for entry in json.loads(body)["files"]]
        found += re.findall(r'href="([^"?]+)"', text)  # a directory listing, were one served
        found += [link + name for link in found if link.endswith("/") for name in NOCLOUD]  # as cloud-init asks
        return [link for link in found if not link.startswith(("/", "..", "http"))]


def _nginx_get(port: int, source: str):
    def fetch(path: str) -> tuple[int, bytes]:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10, source_address=(source, 0))
        try:
            connection.request("GET", "/" + path)
            response = connection.getresponse()
            return response.status, response.read()
        finally:
            connection.close()
    return fetch


def _leaks(pages, forms) -> list[str]:
    return [path for path, (_, body) in pages.items() if any(form in body for form in forms)]


def in_netns(function, *args):
    """Run `function(*args)` in a forked child inside a new network namespace whose loopback
    interface also holds NODE and STRANGER; its result (or exception) comes back."""
    import ctypes
    import multiprocessing
    import subprocess

    def child(conn):
        try:
            if ctypes.CDLL(None, use_errno=True).unshare(0x40000000) != 0:  # CLONE_NEWNET
                raise OSError(ctypes.get_errno(), "unshare(CLONE_NEWNET)")
            subprocess.run(["ip", "link", "set", "lo", "up"], check=True, timeout=10)
            for address in (NODE, STRANGER):
                subprocess.run(["ip", "addr", "add", f"{address}/32", "dev", "lo"], check=True, timeout=10)
            conn.send(("ok", function(*args)))
        except BaseException as exc:  # noqa: BLE001 - carried back to the test
            conn.send(("error", exc))

    parent, child_end = multiprocessing.get_context("fork").Pipe()
    process = multiprocessing.get_context("fork").Process(target=child, args=(child_end,))
    process.start()
    try:
        if not parent.poll(120):
            raise TimeoutError("the namespace test did not finish in 120 s")
        kind, value = parent.recv()
    finally:
        process.join(10)
        if process.is_alive():
            process.kill()
    if kind == "error":
        raise value
    return value


def _crawl(server_block: str, port: int, workdir: Path, seeds: list[str]) -> tuple[dict, dict]:
    """What a stranger and the node each find crawling nginx serving `server_block`."""
    server = start_nginx(workdir, server_block, port)
    try:
        base = f"http://127.0.0.1:{port}/"
        return (Crawler(base, _nginx_get(port, STRANGER)).run(seeds),
                Crawler(base, _nginx_get(port, NODE)).run(seeds))
    finally:
        server.stop()


def _crawl_nginx(tree: Path, port: int, workdir: Path, seeds: list[str]) -> tuple[dict, dict]:
    return _crawl(f"include {tree}/server/nginx.conf;", port, workdir, seeds)


def test_a_stranger_crawling_nginx_finds_no_secret_and_the_node_gets_its_config(fenced_site, tmp_path,
                                                                              example_secrets):
    port, tree = fenced_site
    forms = _secret_forms(example_secrets)
    private = [p for p in secret_paths(tree) if p != "server/nginx-secrets.conf"]
    assert private and all(p.startswith("configs/") and "ubuntu" not in p for p in private)
    seeds = FIXED + _per_machine_names(MAC, NODE)
    stranger, node = in_netns(_crawl_nginx, tree, port, tmp_path / "nginx", seeds)
    assert _leaks(stranger, forms) == []
    reached = [p for p in private if p in stranger]
    assert reached, "the crawl follows the public boot config to the private directory"
    assert all(stranger[p][0] == 403 for p in reached)
    assert stranger["server/nginx-secrets.conf"][0] == 403
    assert stranger["manifest.json"][0] == 200 and not any(p.encode() in stranger["manifest.json"][1] for p in private)

    user_data = next(p for p in private if p.endswith("/user-data"))
    assert node[user_data][0] == 200
    assert any(form in node[user_data][1] for form in forms)


def test_a_stranger_crawling_the_bucket_finds_no_secret(fenced_site, seaweed, bucket, example_secrets):
    port, tree = fenced_site
    destination = f"s3://{bucket}/site"
    publish(tree, destination, endpoint_url=seaweed.endpoint, progress=False)
    forms = _secret_forms(example_secrets)

    def fetch(path: str) -> tuple[int, bytes]:
        connection = http.client.HTTPConnection("127.0.0.1", int(seaweed.endpoint.rsplit(":", 1)[1]), timeout=10)
        try:
            connection.request("GET", f"/{bucket}/site/{path}")
            response = connection.getresponse()
            return response.status, response.read()
        finally:
            connection.close()

    pages = Crawler(f"http://127.0.0.1:{port}/", fetch).run(FIXED + _per_machine_names(MAC, NODE))
    assert pages["manifest.json"][0] == 200
    assert _leaks(pages, forms) == []
    private = [p for p in secret_paths(tree) if p != "server/nginx-secrets.conf"]
    assert all(pages.get(p, (404,))[0] != 200 for p in private)
    notice = publish_notice(tree, destination, allow_secrets=False)
    assert notice and "were not uploaded" in notice


def test_allow_secrets_uploads_them_and_keeps_the_full_manifest_under_the_private_prefix(
        fenced_site, seaweed, bucket):
    _, tree = fenced_site
    destination = f"s3://{bucket}/site"
    report = publish(tree, destination, endpoint_url=seaweed.endpoint, progress=False, allow_secrets=True)
    client = s3_client(seaweed.endpoint)
    private = [p for p in secret_paths(tree) if p != "server/nginx-secrets.conf"]
    for path in private:
        assert client.get_object(Bucket=bucket, Key=f"site/{path}")["Body"].read() == (tree / path).read_bytes()
    public = client.get_object(Bucket=bucket, Key="site/manifest.json")["Body"].read()
    assert public == (tree / "manifest.json").read_bytes()
    archived = json.loads(client.get_object(Bucket=bucket, Key=f"site/.bootgen/manifests/{report.build_id}.json")
                          ["Body"].read())
    keys = {o["Key"] for o in client.list_objects_v2(Bucket=bucket, Prefix="site/")["Contents"]}
    def index_file(name: str) -> bytes:  # the full index: public files, and under .bootgen/ those naming secrets
        return client.get_object(Bucket=bucket, Key=next(
            k for k in (f"site/index/{name}", f"site/.bootgen/index/{name}") if k in keys))["Body"].read()

    shards = b"".join(index_file(f"{s['id']}.json") for page in archived["pages"]
                      for s in json.loads(index_file(f"{page['id']}.page.json"))["shards"])
    assert all(p.encode() in shards for p in private)
    public_shards = b"".join(client.get_object(Bucket=bucket, Key=k)["Body"].read()
                             for k in keys if k.startswith("site/index/"))
    assert public_shards and not any(p.encode() in public_shards for p in private)
    policy = bucket_policy(tree, destination)
    resources = [s["Resource"] for s in policy["Statement"]]
    assert f"arn:aws:s3:::{bucket}/site/.bootgen/*" in resources
    fenced = [s for s in policy["Statement"] if "Condition" in s]
    assert fenced and fenced[0]["Condition"]["NotIpAddress"]["aws:SourceIp"] == [f"{NODE}/32"]
    assert fenced[0]["Resource"] == f"arn:aws:s3:::{bucket}/site/{private[0].rsplit('/', 2)[0]}/*"


def test_audit_of_the_bucket_fails_once_secrets_are_readable_anonymously(fenced_site, seaweed, bucket,
                                                                        example_secrets):
    from click.testing import CliRunner

    from bootgen.cli import main

    _, tree = fenced_site
    destination = f"s3://{bucket}/site"
    audit = ["audit", destination, "--endpoint-url", seaweed.endpoint, "--secrets", str(example_secrets)]
    publish(tree, destination, endpoint_url=seaweed.endpoint, progress=False)
    clean = CliRunner().invoke(main, audit)
    assert clean.exit_code == 0 and "no secrets found" in clean.output, clean.output
    publish(tree, destination, endpoint_url=seaweed.endpoint, progress=False, allow_secrets=True)
    exposed = CliRunner().invoke(main, audit)
    assert exposed.exit_code == 1, exposed.output
    line = next(line for line in exposed.output.splitlines() if line.endswith("/user-data: a password hash, "
                "the value of secret ubuntu_password_hash (not in any public index)"))
    assert line.startswith("configs/")


def _crawl_docroot(docroot: Path, port: int, workdir: Path, seeds: list[str]) -> tuple[dict, dict]:
    from bootgen.publish import render_nginx_server

    return _crawl(render_nginx_server(docroot, listen=port), port, workdir, seeds)


def test_a_docroot_publish_is_fenced_by_its_server_block_too(fenced_site, tmp_path, example_secrets):
    port, tree = fenced_site
    docroot = tmp_path / "srv"
    publish(tree, str(docroot), progress=False)
    assert list((docroot / "private").glob("*.json"))  # the full manifest, beside the served releases
    forms = _secret_forms(example_secrets)
    stranger, node = in_netns(_crawl_docroot, docroot, port, tmp_path / "nginx", FIXED + _per_machine_names(MAC, NODE))
    assert _leaks(stranger, forms) == []
    user_data = next(p for p in secret_paths(tree) if p.endswith("/user-data"))
    assert stranger[user_data][0] == 403 and node[user_data][0] == 200


def _tftp_get(address: str, name: str, timeout: float = 5) -> tuple[str, bytes]:
    """A TFTP read request (RFC 1350, octet mode) from STRANGER's address: ("ok", bytes) or ("error", message)."""
    import socket
    import struct

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((STRANGER, 0))
        sock.settimeout(timeout)
        sock.sendto(b"\0\1" + name.encode() + b"\0octet\0", (address, 69))
        data, expected = b"", 1
        while True:
            packet, peer = sock.recvfrom(4 + 512)
            opcode, block = struct.unpack("!HH", packet[:4])
            if opcode == 5:
                return "error", packet[4:].rstrip(b"\0")
            if opcode == 3 and block == expected:
                data += packet[4:]
                sock.sendto(struct.pack("!HH", 4, block), peer)
                expected += 1
                if len(packet) < 4 + 512:
                    return "ok", data


def _tftp_as_stranger(tree: Path, workdir: Path, names: list[str]) -> dict[str, tuple[str, bytes]]:
    import subprocess

    workdir.mkdir(parents=True, exist_ok=True)
    # As root, dnsmasq serves only world-readable files over TFTP (as another user, only what
    # that user may read): secret-bearing files are neither.
    dnsmasq = subprocess.Popen(["dnsmasq", "--keep-in-foreground", "--conf-file=/dev/null", "--port=0",
                                "--enable-tftp", f"--tftp-root={tree.resolve()}", "--user=root",
                                "--listen-address=127.0.0.1", "--bind-interfaces",
                                f"--pid-file={workdir / 'dnsmasq.pid'}", "--log-facility=-"],
                               stdout=subprocess.DEVNULL, stderr=open(workdir / "dnsmasq.log", "wb"))
    try:
        import time

        deadline = time.monotonic() + 10
        while True:
            try:
                return {name: _tftp_get("127.0.0.1", name) for name in names}
            except OSError:
                if time.monotonic() > deadline or dnsmasq.poll() is not None:
                    raise
                time.sleep(0.2)
    finally:
        dnsmasq.terminate()
        dnsmasq.wait(10)


def test_tftp_refuses_secret_bearing_files_to_anyone(fenced_site, tmp_path, example_secrets):
    _, tree = fenced_site
    user_data = next(p for p in secret_paths(tree) if p.endswith("/user-data"))
    public = f"pxelinux.cfg/01-{MAC.replace(':', '-')}"
    got = in_netns(_tftp_as_stranger, tree, tmp_path / "tftp", [public, user_data, "server/nginx-secrets.conf"])
    assert got[public] == ("ok", (tree / public).read_bytes())
    assert got[user_data][0] == "error" and got["server/nginx-secrets.conf"][0] == "error"


def test_secrets_are_sent_when_the_bucket_serves_the_same_public_root_without_them(fenced_site, seaweed, bucket,
                                                                                   monkeypatch):
    """The served root and the history's last build are this tree's, but the bucket lacks the files with
    secrets (published before without --allow-secrets): not up to date until the full root is archived.
    Then a publish with nothing to do reads three objects and makes no boto3 client."""
    from bootgen.publish.stores import s3 as s3_store

    _, tree = fenced_site
    destination = f"s3://{bucket}/site"
    publish(tree, destination, endpoint_url=seaweed.endpoint, progress=False)
    private = [p for p in secret_paths(tree) if p != "server/nginx-secrets.conf"]
    report = publish(tree, destination, endpoint_url=seaweed.endpoint, progress=False, allow_secrets=True)
    assert set(private) <= {a.path for a in report.actions}
    client = s3_client(seaweed.endpoint)
    assert client.get_object(Bucket=bucket, Key=f"site/{private[0]}")["Body"].read() == (tree / private[0]).read_bytes()
    made = []
    monkeypatch.setattr(s3_store, "make_client", lambda *args: made.append(args))
    again = publish(tree, destination, endpoint_url=seaweed.endpoint, progress=False, allow_secrets=True)
    assert (again.actions, again.requests, made) == ((), 3, [])
