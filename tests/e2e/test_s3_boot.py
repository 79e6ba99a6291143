"""Boot real firmware from an S3 bucket that `bootgen publish` filled (path 7: served from S3).

SeaweedFS serves S3 on the host's loopback with anonymous read, as a public
bucket would. The site's base_url is the bucket's plain-HTTP URL as the guest
sees it (QEMU user-mode networking maps the guest's 10.0.2.2 to the host's
loopback). `bootgen publish s3://...` uploads the built tree; a SeaBIOS VM,
whose NIC ROM is iPXE, is handed the bucket's boot.ipxe by QEMU's DHCP and
must fetch the per-MAC script, the kernel, the initrd and the config from the
bucket alone: no TFTP root, no nginx.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

import checks
import rig
import sites
from sites import NodeSpec, SiteSpec

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "publish"))
import publish_servers  # noqa: E402

VM_TIMEOUT = 170  # seconds; a TCG boot through iPXE over HTTP takes about 50
SERVER_START_TIMEOUT = 60
BUCKET = "netboot"
PREFIX = "site-e2e"
NODE = NodeSpec("s3-bios", "52:54:00:e2:07:01")


@dataclass(frozen=True)
class Published:
    """A tree published to the bucket, the live server and what the VM printed."""

    tree: sites.Tree
    endpoint: str
    result: rig.BootResult
    pcap: Path

    def key(self, path: str) -> str:
        """The object key of a tree path."""
        return f"{PREFIX}/{path}"

    def url_path(self, path: str) -> str:
        """The HTTP request path of a tree path on the S3 server (path-style addressing)."""
        return f"/{BUCKET}/{PREFIX}/{path}"

    def node_script(self, node: NodeSpec) -> str:
        return f"ipxe/{node.mac.replace(':', '-')}.ipxe"

    def images(self) -> list[str]:
        """The images the node's iPXE script names (kernel first, then initrds), as tree paths."""
        script = (self.tree.root / self.node_script(NODE)).read_text()
        base = self.tree.site.base_url
        lines = [line.split() for line in script.splitlines() if line.startswith(("kernel ", "initrd "))]
        urls = [words[1] if words[0] == "kernel" else words[-1] for words in lines]
        assert urls and all(url.startswith(base) for url in urls), script
        return [url[len(base):] for url in urls]


class _NoCaBundle:
    """boto3 must not use the machine's AWS_CA_BUNDLE for a plain-HTTP endpoint."""

    def __enter__(self):
        self.saved = os.environ.pop("AWS_CA_BUNDLE", None)
        return self

    def __exit__(self, *exc):
        if self.saved is not None:
            os.environ["AWS_CA_BUNDLE"] = self.saved


def _publish_env() -> dict[str, str]:
    """The publisher's credentials, and nothing from the machine's AWS setup."""
    dropped = ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_CA_BUNDLE", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3")
    env = {k: v for k, v in os.environ.items() if k not in dropped}
    env.update(AWS_ACCESS_KEY_ID=publish_servers.ACCESS_KEY, AWS_SECRET_ACCESS_KEY=publish_servers.SECRET_KEY,
               AWS_DEFAULT_REGION="us-east-1", AWS_CONFIG_FILE=os.devnull, AWS_SHARED_CREDENTIALS_FILE=os.devnull)
    return env


def _publish(tree: sites.Tree, endpoint: str) -> None:
    cmd = [sys.executable, "-m", "bootgen", "publish", f"s3://{BUCKET}/{PREFIX}", "--endpoint-url", endpoint,
           "--tree", str(tree.root)]
    # From the site's directory: publish checks the tree is the last build of ./site and ./nodes.
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=_publish_env(),
                          cwd=tree.root.parent)
    assert done.returncode == 0, f"bootgen publish failed ({done.returncode}):\n{done.stdout}\n{done.stderr}"


def http_requests_from_pcap(pcap: Path, port: int) -> list[str]:
    """Paths of the HTTP GET/HEAD requests the guest sent to `port`, from QEMU's filter-dump pcap."""
    data = pcap.read_bytes() if pcap.exists() else b""
    paths, offset = [], 24  # pcap global header
    while offset + 16 <= len(data):
        length = int.from_bytes(data[offset + 8:offset + 12], "little")
        frame = data[offset + 16:offset + 16 + length]
        offset += 16 + length
        if len(frame) < 54 or frame[12:14] != b"\x08\x00" or frame[23] != 6:  # IPv4, TCP
            continue
        tcp = 14 + (frame[14] & 0x0F) * 4
        if int.from_bytes(frame[tcp + 2:tcp + 4], "big") != port:
            continue
        body = frame[tcp + (frame[tcp + 12] >> 4) * 4:]
        match = re.match(rb"(?:GET|HEAD) (\S+) HTTP/1\.[01]\r\n", body)
        if match:
            paths.append(match.group(1).decode(errors="replace"))
    return paths


@pytest.fixture(scope="module")
def published(tmp_path_factory, payload):
    """Build a site whose base_url is the bucket, publish it to SeaweedFS and boot one SeaBIOS VM from it.

    The server stays up for the tests, which read the bucket back.
    """
    workdir = tmp_path_factory.mktemp("s3-boot")
    server = publish_servers.start_seaweedfs(workdir / "seaweed", timeout=SERVER_START_TIMEOUT)
    try:
        port = int(server.endpoint.rsplit(":", 1)[1])
        with _NoCaBundle():
            publish_servers.s3_client(server.endpoint).create_bucket(Bucket=BUCKET)
        base_url = f"http://10.0.2.2:{port}/{BUCKET}/{PREFIX}/"
        source = workdir / "site-src"
        source.mkdir()
        tree = sites.build(source, SiteSpec(base_url, "10.0.2.2", "http"), (NODE,), payload.kernel, payload.initrd)
        _publish(tree, server.endpoint)
        # An empty TFTP root: whatever the VM boots came from the bucket.
        empty = workdir / "no-tftp"
        empty.mkdir()
        lan = rig.UserLan.create(empty, f"{base_url}boot.ipxe", workdir, payload.kernel, private=False)
        try:
            result = rig.boot(rig.Machine(NODE.name, NODE.mac, "bios"), lan, workdir, VM_TIMEOUT)
        finally:
            lan.close()
        yield Published(tree, server.endpoint, result, workdir / f"{NODE.name}.pcap")
    finally:
        server.stop()


def test_ipxe_boots_from_the_bucket(published):
    """The kernel ran with the node's command line and fetched the manifest's config from the bucket."""
    checks.assert_booted(published.tree, NODE.name, published.result)


def test_everything_the_vm_fetched_came_from_the_bucket(published):
    """The VM asked the S3 server for boot.ipxe, its own script, the kernel, the initrd and the config."""
    port = int(published.endpoint.rsplit(":", 1)[1])
    requested = http_requests_from_pcap(published.pcap, port)
    config = published.tree.config_entry(NODE.name)["path"]
    wanted = ["boot.ipxe", published.node_script(NODE), *published.images(), config]
    missing = [path for path in wanted if published.url_path(path) not in requested]
    assert not missing, f"the VM never asked the bucket for {missing}; it asked for {requested}"


def test_the_bucket_holds_the_published_objects(published):
    """boot.ipxe, the node's script, kernel, initrd and config are objects with the tree's bytes."""
    config = published.tree.config_entry(NODE.name)["path"]
    paths = ["boot.ipxe", published.node_script(NODE), *published.images(), config]
    sizes = {f["path"]: f["size"] for f in published.tree.manifest["files"]}
    with _NoCaBundle():
        client = publish_servers.s3_client(published.endpoint)
        for path in paths:
            head = client.head_object(Bucket=BUCKET, Key=published.key(path))
            assert head["ContentLength"] == sizes[path] == (published.tree.root / path).stat().st_size, path
    # Anonymous read, as the firmware does it: no credentials.
    status, _headers, body = publish_servers.http_get(f"{published.endpoint}{published.url_path('boot.ipxe')}")
    assert (status, body) == (200, (published.tree.root / "boot.ipxe").read_bytes())
