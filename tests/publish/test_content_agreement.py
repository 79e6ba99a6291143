"""One Content-Type per file: what the manifest says is what nginx and S3 send, for every file of real builds."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from publish_servers import free_port, http_get, s3_client, start_nginx

from bootgen.build import Paths, build
from bootgen.content import BINARY
from bootgen.publish import publish, render_nginx_server
from bootgen.publish.manifest import load_tree
from bootgen.render.fence import FENCE

ROOT = Path(__file__).resolve().parents[2]
SITES = {"example": ROOT, "tftp-local": ROOT / "tests" / "sites" / "tftp-local"}


@pytest.fixture(scope="module", params=sorted(SITES))
def built(request, tmp_path_factory):
    work = tmp_path_factory.mktemp(f"build-{request.param}")
    for part in ("site", "nodes"):
        shutil.copytree(SITES[request.param] / part, work / part)
    result = build(Paths(work / "site", work / "nodes", work / "build"), fetch=False)
    return result.write.tree


def test_every_file_has_a_type_and_kernels_are_binary(built):
    types = {entry.path: entry.content_type for entry in load_tree(built).files}
    assert all(types.values())
    assert types["grub/grub.cfg"] == types["pxelinux.cfg/default"] == "text/plain; charset=utf-8"
    for path, mime in types.items():
        if path.startswith("images/") and path.endswith(("/vmlinuz", "/initrd.img")):
            assert mime == "application/octet-stream", path


def test_nginx_sends_the_manifest_type_of_every_file(built, tmp_path):
    docroot = tmp_path / "www"
    publish(built, str(docroot))
    port = free_port()
    server = start_nginx(tmp_path / "nginx", render_nginx_server(docroot, listen=f"127.0.0.1:{port}"), port)
    try:
        files = [entry for entry in load_tree(built).files if entry.path != FENCE]  # nginx refuses it to all
        answers = {entry.path: http_get(f"{server.endpoint}/{entry.path}") for entry in files}
    finally:
        server.stop()
    assert {path: status for path, (status, _, _) in answers.items() if status != 200} == {}
    assert {path: headers["Content-Type"] for path, (_, headers, _) in answers.items()} == \
        {entry.path: entry.content_type for entry in files}


def test_s3_publish_sends_the_manifest_type_of_every_file(built, seaweed, bucket):
    publish(built, f"s3://{bucket}/site", endpoint_url=seaweed.endpoint, progress=False)
    client = s3_client(seaweed.endpoint)
    files = load_tree(built).files
    stored = {entry.path: client.head_object(Bucket=bucket, Key=f"site/{entry.path}")["ContentType"]
              for entry in files}
    # SeaweedFS stores application/octet-stream as "unknown" and answers its own guess from
    # the extension instead (GRUB's *.mod as audio/x-mod, *.img as a disk image); AWS S3
    # keeps what was sent. Files without an extension (kernels) have nothing to guess from.
    guessed = {path for path, mime in stored.items() if mime != BINARY and manifest_type(files, path) == BINARY}
    assert {p: m for p, m in stored.items() if p not in guessed} == \
        {e.path: e.content_type for e in files if e.path not in guessed}
    assert all("." in path.rsplit("/", 1)[-1] for path in guessed), guessed


def manifest_type(files, path: str) -> str:
    return next(entry.content_type for entry in files if entry.path == path)


def test_bootgen_serve_sends_the_manifest_type_of_every_file(built):
    """`bootgen serve`'s HTTP handler, on the tree it serves."""
    import functools
    import http.server
    import threading

    from bootgen.watch import _QuietHandler

    handler = functools.partial(_QuietHandler, directory=str(built))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        files = load_tree(built).files
        base = f"http://127.0.0.1:{server.server_address[1]}"
        sent = {entry.path: http_get(f"{base}/{entry.path}")[1]["Content-type"] for entry in files}
    finally:
        server.shutdown()
        server.server_close()
    assert sent == {entry.path: entry.content_type for entry in files}
