"""Fixtures for the images layer: OpenPGP keys made with gpg, a faulty HTTP server on 127.0.0.1, sites."""
from __future__ import annotations

import contextlib
import email.utils
import hashlib
import shutil
import subprocess
import sys
import tempfile
import threading
import time
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
    """Serves `files` on 127.0.0.1 over HTTP/1.1 (kept-alive connections), with Range and
    If-Range, validators (a strong ETag from the content, and Last-Modified), and scripted faults.

    faults[path] is a queue consumed one request at a time:
      "404", "500"       an error with a body, on a connection kept alive
      "cut"              send half the body, then drop the connection
      "norange"          ignore Range (answer 200 with the whole file)
      "ignore-if-range"  honour Range even when If-Range names another file (a broken server)
      "416-complete"     answer 416 as for a Range starting at the end of the file
      "novalidator"      send neither ETag nor Last-Modified
      "trickle"          send the body a few bytes at a time, slowly
      "length:N"         announce Content-Length N whatever the body is (then close)
      "endless"          no Content-Length: send bytes until the client hangs up
    Faults combine with "+" ("novalidator+cut").
    redirects[path] = (status, location) answers every request for `path` with a redirect.
    """

    files: dict[str, bytes] = field(default_factory=dict)
    faults: dict[str, list[str]] = field(default_factory=dict)
    redirects: dict[str, tuple[int, str]] = field(default_factory=dict)
    requests: list[tuple[str, str | None]] = field(default_factory=list)
    headers: list[tuple[str, dict]] = field(default_factory=list)
    connections: set = field(default_factory=set)  # client ports seen, one per TCP connection
    base: str = ""
    trickle_delay: float = 0.05

    def url(self, path: str) -> str:
        return f"{self.base}/{path.lstrip('/')}"

    def requests_for(self, path: str) -> list[str | None]:
        return [rng for p, rng in self.requests if p == "/" + path.lstrip("/")]

    def headers_for(self, path: str) -> list[dict]:
        return [h for p, h in self.headers if p == "/" + path.lstrip("/")]


def etag_of(data: bytes) -> str:
    return '"' + hashlib.sha256(data).hexdigest()[:20] + '"'


def last_modified_of(data: bytes) -> str:
    seconds = 1_600_000_000 + int(hashlib.sha256(data).hexdigest()[:6], 16)
    return email.utils.formatdate(seconds, usegmt=True)


def _handler(state: FileServer):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):  # keep pytest output clean
            pass

        def _plain(self, status: int, body: bytes = b"", headers: dict | None = None) -> None:
            self.send_response(status)
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self):
            state.requests.append((self.path, self.headers.get("Range")))
            state.headers.append((self.path, dict(self.headers)))
            state.connections.add(self.client_address[1])
            if self.path in state.redirects:
                status, location = state.redirects[self.path]
                self._plain(status, b"<html>moved</html>\n", {"Location": location, "Content-Type": "text/html"})
                return
            queue = state.faults.get(self.path) or []
            faults = set(queue.pop(0).split("+")) if queue else set()
            length = next((f.split(":", 1)[1] for f in faults if f.startswith("length:")), None)
            data = state.files.get(self.path)
            if faults & {"404", "500"} or data is None:
                code = int(next(iter(faults & {"404", "500"}), 404))
                self._plain(code, b"<html><body>" + b"error page " * 400 + b"</body></html>\n",
                            {"Content-Type": "text/html"})
                return
            validators = {} if "novalidator" in faults else {"ETag": etag_of(data),
                                                             "Last-Modified": last_modified_of(data)}
            if "416-complete" in faults:  # what servers answer to a Range starting at the end
                self._plain(416, b"", {"Content-Range": f"bytes */{len(data)}", **validators})
                return
            start = 0
            rng, if_range = self.headers.get("Range"), self.headers.get("If-Range")
            same = if_range is None or if_range in validators.values() or "ignore-if-range" in faults
            if rng and "norange" not in faults and same and rng.startswith("bytes=") and rng.endswith("-"):
                start = int(rng[6:-1])
                self.send_response(206)
                self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
            else:
                self.send_response(200)
            for name, value in validators.items():
                self.send_header(name, value)
            body = data[start:]
            if "endless" in faults:
                self.send_header("Connection", "close")
                self.end_headers()
                self.close_connection = True
                try:
                    while True:
                        self.wfile.write(b"\0" * 65536)
                except OSError:
                    return
            if length is not None:
                self.send_header("Content-Length", length)
                self.send_header("Connection", "close")
                self.end_headers()
                self.close_connection = True
                with contextlib.suppress(OSError):
                    self.wfile.write(body)
                return
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if "cut" in faults:
                self.wfile.write(body[: len(body) // 2])
                self.wfile.flush()
                self.close_connection = True
                return
            if "trickle" in faults:
                try:
                    for i in range(0, len(body), 64):
                        self.wfile.write(body[i:i + 64])
                        self.wfile.flush()
                        time.sleep(state.trickle_delay)
                except OSError:
                    self.close_connection = True
                return
            self.wfile.write(body)

    return Handler


class _Server(ThreadingHTTPServer):
    def handle_error(self, request, client_address):
        if not isinstance(sys.exc_info()[1], OSError):  # a client hanging up mid-answer is a test's point
            super().handle_error(request, client_address)


@pytest.fixture
def server():
    state = FileServer()
    httpd = _Server(("127.0.0.1", 0), _handler(state))
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
