"""No silent waits: `check` reads no image and makes no connection; a download says each retry as
it happens, one line per retry, starting at the first failure. Servers are on 127.0.0.1 only."""
from __future__ import annotations

import hashlib
import os
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from click.testing import CliRunner

from bootgen.cli import main

WAIT = 60
KERNEL = b"kernel bytes " * 1000


def _mirror_site(root: Path, base: str, sha256: str) -> None:
    """A scaffolded site whose Flatcar image set is mirrored from `base`, pinned by sha256."""
    assert CliRunner().invoke(main, ["init", str(root)], env={"HOME": str(root)}).exit_code == 0
    site = root / "site" / "site.yaml"
    text = site.read_text()
    start = text.index("  flatcar-stable:\n")
    end = text.index("  # Fedora CoreOS")
    site.write_text(text[:start] + f"""  flatcar-stable:
    mirror: true
    kernel: {{url: "{base}/vmlinuz", unsigned: true, sha256: "{sha256}"}}
    initrds:
      - {{url: "{base}/initrd", unsigned: true, sha256: "{sha256}"}}
""" + text[end:])


class _Counting:
    """A listening socket on loopback that counts the connections made to it."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.accepted = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            self.accepted += 1
            conn.close()

    def close(self) -> None:
        self.stop.set()
        self.thread.join(timeout=WAIT)
        self.sock.close()


def test_check_reads_no_image_and_connects_nowhere(tmp_path, monkeypatch):
    listener = _Counting()
    try:
        _mirror_site(tmp_path, f"http://127.0.0.1:{listener.port}", "a" * 64)
        monkeypatch.chdir(tmp_path)
        started = time.monotonic()
        result = CliRunner().invoke(main, ["check"])
        elapsed = time.monotonic() - started
    finally:
        listener.close()
    assert result.exit_code == 0, result.output
    assert listener.accepted == 0
    assert elapsed < 5, elapsed
    assert not (tmp_path / ".bootgen" / "cache" / "downloads").exists()


def test_check_on_an_unreachable_port_is_fast(tmp_path, monkeypatch):
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
    _mirror_site(tmp_path, f"http://127.0.0.1:{port}", "a" * 64)  # nothing listens there any more
    monkeypatch.chdir(tmp_path)
    started = time.monotonic()
    result = CliRunner().invoke(main, ["check", "--format", "json"])
    assert result.exit_code == 0, result.output
    assert time.monotonic() - started < 5


class _Flaky(BaseHTTPRequestHandler):
    failures_left = 0  # answers 503 while above zero, then serves KERNEL
    pause = 0.0  # seconds to wait halfway through the body

    def do_GET(self) -> None:
        if type(self).failures_left > 0:
            type(self).failures_left -= 1
            self.send_response(503)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(KERNEL)))
        self.end_headers()
        half = len(KERNEL) // 2
        self.wfile.write(KERNEL[:half])
        self.wfile.flush()
        time.sleep(type(self).pause)
        self.wfile.write(KERNEL[half:])

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def flaky():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Flaky)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join(timeout=WAIT)


def _build_with_stderr_times(root: Path) -> tuple[int, list[tuple[float, str]]]:
    """Run `bootgen build` (stderr not a terminal); each stderr line with when it arrived."""
    started = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-m", "bootgen", "build"], cwd=root, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    lines: list[tuple[float, str]] = []
    reader = threading.Thread(target=lambda: lines.extend((time.monotonic() - started, line.rstrip())
                                                          for line in proc.stderr), daemon=True)
    reader.start()
    try:
        code = proc.wait(timeout=WAIT)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=WAIT)
        reader.join(timeout=WAIT)
    return code, lines


def test_each_retry_is_one_line_as_it_happens(tmp_path, flaky):
    _Flaky.failures_left = 2
    _mirror_site(tmp_path, f"http://127.0.0.1:{flaky.server_port}", hashlib.sha256(KERNEL).hexdigest())
    code, lines = _build_with_stderr_times(tmp_path)
    assert code == 0, lines
    retries = [(at, line) for at, line in lines if "failed" in line]
    url = f"http://127.0.0.1:{flaky.server_port}/vmlinuz"
    assert [line for _, line in retries] == [
        f"{url}: attempt 1 of 5 failed (HTTP 503 Service Unavailable); retrying in 1 s",
        f"{url}: attempt 2 of 5 failed (HTTP 503 Service Unavailable); retrying in 2 s",
    ]
    assert retries[0][0] < retries[1][0] - 0.9  # said before the wait, not all at the end
    assert (tmp_path / "build").is_symlink()


def test_an_unreachable_url_speaks_at_once(tmp_path):
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
    _mirror_site(tmp_path, f"http://127.0.0.1:{port}", "a" * 64)
    code, lines = _build_with_stderr_times(tmp_path)
    assert code == 1
    attempts = [(at, line) for at, line in lines if line.startswith(f"http://127.0.0.1:{port}/vmlinuz: attempt ")]
    assert len(attempts) == 5 and attempts[-1][1].endswith("giving up")
    assert attempts[0][0] < 5, attempts  # not 15 s of backoff in silence first
    assert "Connection refused" in attempts[0][1]


def test_on_a_terminal_a_download_shows_its_progress_and_retries(tmp_path, flaky):
    import pty
    import select

    _Flaky.failures_left, _Flaky.pause = 1, 1.0
    try:
        _mirror_site(tmp_path, f"http://127.0.0.1:{flaky.server_port}", hashlib.sha256(KERNEL).hexdigest())
        controller, terminal = pty.openpty()
        env = {**os.environ, "TERM": "xterm", "COLUMNS": "120"}
        proc = subprocess.Popen([sys.executable, "-m", "bootgen", "build"], cwd=tmp_path, stdin=terminal,
                                stdout=terminal, stderr=terminal, env=env)
        os.close(terminal)
        seen = b""
        deadline = time.monotonic() + WAIT
        while time.monotonic() < deadline:
            ready, _, _ = select.select([controller], [], [], 0.2)
            if ready:
                try:
                    chunk = os.read(controller, 65536)
                except OSError:  # the terminal closed with the process
                    break
                if not chunk:
                    break
                seen += chunk
            elif proc.poll() is not None:
                break
        os.close(controller)
        assert proc.wait(timeout=WAIT) == 0, seen.decode(errors="replace")
    finally:
        _Flaky.failures_left, _Flaky.pause = 0, 0.0
    text = seen.decode(errors="replace")
    assert "attempt 1 of 5 failed (HTTP 503 Service Unavailable); retrying in 1 s" in text
    assert "vmlinuz" in text.split("retrying in 1 s", 1)[1]  # then the bar, named after the file
    assert "\x1b[" in text and "━" in text  # drawn as a rich progress bar on the terminal
