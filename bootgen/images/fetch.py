"""Resumable, retried HTTP downloads into the cache.

A download goes to `<dest>.part` and is renamed into place only when complete,
so the cache never holds a truncated file under its final name. A retry after a
dropped connection continues with an HTTP Range request; a server that ignores
Range (answers 200) makes us start over. Connection errors and 5xx are retried
with exponential backoff; 404 and other 4xx fail at once.
"""
from __future__ import annotations

import os
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, ContextManager

from .digests import Digests, StreamHasher, feed_file

# Network reads: urllib3 waits for a whole chunk, so a small one loses little on a cut.
NET_CHUNK = 64 * 1024


class FetchError(Exception):
    """A download failed; str() is the reason shown after the URL."""


@dataclass(frozen=True)
class FetchPolicy:
    """Retry and timeout bounds; tests shrink the backoff."""

    attempts: int = 5
    backoff: float = 1.0  # seconds before the 2nd attempt, doubled after each failure
    connect_timeout: float = 10.0
    read_timeout: float = 60.0


@dataclass
class _Download:
    """One download across attempts: the .part file and a hasher that has seen its bytes."""

    part: Path
    hasher: StreamHasher = field(default_factory=lambda: StreamHasher(sha512=True))


class _Transient(Exception):
    """A failure worth retrying (connection trouble, 5xx)."""


# Progress hook: called with (url, total_or_None) and returns a context manager
# whose value is a callable advanced with each chunk's length.
ProgressFactory = Callable[[str, "int | None"], ContextManager[Callable[[int], None]]]


def _no_progress(url: str, total: int | None) -> ContextManager[Callable[[int], None]]:
    return nullcontext(lambda n: None)


class Fetcher:
    """Downloads URLs into files, computing sha256 and sha512 as bytes arrive."""

    def __init__(self, policy: FetchPolicy = FetchPolicy(), progress: ProgressFactory = _no_progress):
        import urllib3  # here, not at the top: a build that fetches nothing never pays for it

        self.policy = policy
        self.progress = progress
        self._errors = urllib3.exceptions.HTTPError
        timeout = urllib3.Timeout(connect=policy.connect_timeout, read=policy.read_timeout)
        # retries=False: we retry ourselves so a retry can resume with Range.
        self._http = urllib3.PoolManager(timeout=timeout, retries=False)

    def fetch(self, url: str, dest: Path) -> Digests:
        """Download `url` to `dest`; return its digests. Raises FetchError."""
        dest.parent.mkdir(parents=True, exist_ok=True)
        part = dest.with_name(dest.name + ".part")
        state = _Download(part)
        last = "no attempt made"
        for attempt in range(self.policy.attempts):
            if attempt:
                time.sleep(self.policy.backoff * 2 ** (attempt - 1))
            try:
                self._attempt(url, state)
            except _Transient as exc:
                last = str(exc)
                continue
            os.replace(part, dest)
            return state.hasher.result()
        raise FetchError(f"gave up after {self.policy.attempts} attempts: {last}")

    def _attempt(self, url: str, state: "_Download") -> None:
        offset = state.part.stat().st_size if state.part.exists() else 0
        headers = {"Range": f"bytes={offset}-"} if offset else {}
        try:
            # enforce_content_length: a cut connection must raise, not look like a short file
            # (urllib3 2 does this by default, 1.26 only when asked).
            response = self._http.request("GET", url, headers=headers, preload_content=False, redirect=True,
                                          enforce_content_length=True)
        except self._errors as exc:
            raise _Transient(f"connection failed: {_short(exc)}") from None
        try:
            self._receive(url, response, state, offset)
        finally:
            response.release_conn()

    def _receive(self, url: str, response, state: "_Download", offset: int) -> None:
        status, part = response.status, state.part
        if status == 416 and offset:
            if response.headers.get("Content-Range") == f"bytes */{offset}":
                state.hasher = _hasher_for(part, offset, state.hasher)  # the .part was complete already
                return
            part.unlink()  # our partial file is not a prefix the server knows; start over
            raise _Transient("server rejected the resume range (HTTP 416)")
        if status >= 500:
            raise _Transient(f"HTTP {status} {response.reason or ''}".rstrip())
        if status >= 400:
            raise FetchError(f"HTTP {status} {response.reason or ''}".rstrip())
        if offset and not _resumes_at(response, offset):
            offset = 0  # the server ignored Range and sent the whole file
        hasher = state.hasher = _hasher_for(part, offset, state.hasher)
        total = _total_size(response, offset)
        mode = "ab" if offset else "wb"
        with open(part, mode) as out, self.progress(url, total) as advance:
            if offset:
                advance(offset)
            try:
                for chunk in response.stream(NET_CHUNK):
                    out.write(chunk)
                    hasher.update(chunk)
                    advance(len(chunk))
            except self._errors as exc:
                raise _Transient(f"connection lost after {hasher.count} bytes: {_short(exc)}") from None


def _resumes_at(response, offset: int) -> bool:
    """True when the server answered 206 with the range we asked for."""
    if response.status != 206:
        return False
    content_range = response.headers.get("Content-Range", "")
    return content_range.startswith(f"bytes {offset}-")


def _hasher_for(part: Path, offset: int, hasher: StreamHasher) -> StreamHasher:
    """A hasher that has seen exactly the first `offset` bytes of the part file.

    Within one run the previous attempt's hasher already has them; a .part left
    by an earlier run is read once to catch up.
    """
    if offset == 0:
        return StreamHasher(sha512=True)
    if hasher.count == offset:
        return hasher
    fresh = StreamHasher(sha512=True)
    feed_file(part, fresh)
    return fresh


def _total_size(response, offset: int) -> int | None:
    length = response.headers.get("Content-Length")
    return offset + int(length) if length and length.isdigit() else None


def _short(exc: Exception) -> str:
    """urllib3 nests the useful reason; keep the message to one line."""
    reason = getattr(exc, "reason", None) or exc
    return str(reason).splitlines()[0] if str(reason) else type(exc).__name__
