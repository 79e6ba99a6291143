"""Fixtures for the images layer: OpenPGP keys made with gpg, a faulty HTTP server on 127.0.0.1, sites."""
from __future__ import annotations

import shutil
import subprocess
import tempfile
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from bootgen.images import parse_image_config
from bootgen.source import load_yaml_text

GPG_TIMEOUT = 30


class Signer:
    """A throwaway GNUPGHOME with named keys; signs with the gpg command line."""

    def __init__(self, home: str):
        self.home = home
        self.fingerprints: dict[str, str] = {}

    def gpg(self, *args: str, stdin: bytes | None = None) -> bytes:
        cmd = ["gpg", "--homedir", self.home, "--batch", "--yes", "--passphrase", "", *args]
        done = subprocess.run(cmd, input=stdin, capture_output=True, timeout=GPG_TIMEOUT, check=True)
        return done.stdout

    def make_key(self, name: str, *, expire: str = "never", faked_time: str | None = None) -> str:
        extra = ["--faked-system-time", faked_time] if faked_time else []
        self.gpg(*extra, "--quick-gen-key", f"{name} <{name}@bootgen.test>", "future-default", "default", expire)
        listing = self.gpg("--with-colons", "--list-keys", f"<{name}@bootgen.test>").decode()
        fpr = next(line.split(":")[9] for line in listing.splitlines() if line.startswith("fpr:"))
        self.fingerprints[name] = fpr
        return fpr

    def add_signing_subkey(self, name: str) -> None:
        """Real distributions sign with a subkey; pins name the primary key."""
        self.gpg("--quick-add-key", self.fingerprints[name], "ed25519", "sign")

    def revoke(self, name: str) -> None:
        cert = Path(self.home, "openpgp-revocs.d", self.fingerprints[name] + ".rev").read_text()
        self.gpg("--import", stdin=cert.replace(":-----BEGIN", "-----BEGIN").encode())

    def export(self, name: str, path: Path) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(self.gpg("--armor", "--export", self.fingerprints[name]))
        return path

    def sign(self, name: str, data: bytes, *, faked_time: str | None = None) -> bytes:
        with tempfile.TemporaryDirectory() as tmp:
            src = Path(tmp, "data")
            src.write_bytes(data)
            extra = ["--faked-system-time", faked_time] if faked_time else []
            self.gpg(*extra, "--local-user", self.fingerprints[name], "--detach-sign", "-o", f"{src}.sig", str(src))
            return Path(f"{src}.sig").read_bytes()


@pytest.fixture(scope="session")
def signer():
    """Keys: good (signs with a subkey), other, expired (made in 2020, 1 day), revoked."""
    home = tempfile.mkdtemp(prefix="bgk-")  # short: gpg-agent's socket path is length-limited
    s = Signer(home)
    s.make_key("good")
    s.add_signing_subkey("good")
    s.make_key("other")
    s.make_key("expired", expire="1d", faked_time="20200101T000000")
    s.make_key("revoked")
    yield s
    subprocess.run(["gpgconf", "--homedir", home, "--kill", "all"], capture_output=True, timeout=GPG_TIMEOUT)
    shutil.rmtree(home, ignore_errors=True)


@dataclass
class FileServer:
    """Serves `files` on 127.0.0.1 with Range support and scripted faults.

    faults[path] is a queue consumed one request at a time: "404", "500",
    "cut" (send half the body, then drop the connection), "norange" (ignore Range),
    "416-complete" (answer 416 as for a Range starting at the end of the file).
    """

    files: dict[str, bytes] = field(default_factory=dict)
    faults: dict[str, list[str]] = field(default_factory=dict)
    requests: list[tuple[str, str | None]] = field(default_factory=list)
    base: str = ""

    def url(self, path: str) -> str:
        return f"{self.base}/{path.lstrip('/')}"

    def requests_for(self, path: str) -> list[str | None]:
        return [rng for p, rng in self.requests if p == "/" + path.lstrip("/")]


def _handler(state: FileServer):
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):  # keep pytest output clean
            pass

        def do_GET(self):
            state.requests.append((self.path, self.headers.get("Range")))
            queue = state.faults.get(self.path) or []
            fault = queue.pop(0) if queue else None
            data = state.files.get(self.path)
            if fault in ("404", "500") or data is None:
                self.send_error(int(fault or 404))
                return
            if fault == "416-complete":  # what servers answer to a Range starting at the end
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            start = 0
            rng = self.headers.get("Range")
            if rng and fault != "norange" and rng.startswith("bytes=") and rng.endswith("-"):
                start = int(rng[6:-1])
                self.send_response(206)
                self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
            else:
                self.send_response(200)
            body = data[start:]
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if fault == "cut":
                self.wfile.write(body[: len(body) // 2])
                self.wfile.flush()
                self.close_connection = True
                return
            self.wfile.write(body)

    return Handler


@pytest.fixture
def server():
    state = FileServer()
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    httpd.daemon_threads = True
    state.base = f"http://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield state
    httpd.shutdown()
    httpd.server_close()
    thread.join(timeout=5)


@dataclass
class Site:
    """A site directory with a site.yaml built from text, plus a cache dir."""

    dir: Path
    cache: Path

    def config(self, yaml_text: str):
        (self.dir / "site.yaml").write_text(yaml_text)
        doc = load_yaml_text(yaml_text, "site/site.yaml")
        return parse_image_config(doc.data, doc, self.dir)


@pytest.fixture
def site(tmp_path) -> Site:
    (tmp_path / "site").mkdir()
    return Site(tmp_path / "site", tmp_path / "cache")
