"""Bounded, resumable HTTP downloads into a partial file.

`Fetcher.download(url, part)` leaves the complete body at `part`; the caller
verifies that file's bytes and publishes it (see resolve.py). The caller holds
the cache entry's lock, so no other process writes `part` meanwhile.

- Redirects (301, 302, 303, 307, 308) are followed up to `max_redirects` hops,
  each hop under the same rules: http or https only, never from https down
  to http. A redirect's body is never saved.
- A retry after a dropped connection continues with `Range` and `If-Range`
  carrying the validator (a strong ETag, else Last-Modified) of the response
  that started the partial file, kept beside it in `<part>.json`. Only a 206
  for exactly that range, with the same validator and total size, is
  appended; anything else (a 200, no validator, another total) proves
  nothing, and the download starts again from zero. A partial file without
  a validator is never resumed.
- Connection errors and 5xx are retried with exponential backoff; 4xx fail
  at once.
- Every file has an overall deadline (all attempts and backoff included) and
  a size ceiling (a declared size, else the site-wide limit); a server that
  announces more, or sends more, is cut off with a clear error.
- Every response body is either read to its end or its connection is closed,
  so the next request on a kept-alive connection never reads a stale body.
"""
from __future__ import annotations

import json
import os
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, ContextManager
from urllib.parse import urljoin, urlsplit

# Network reads: read1 returns what has arrived, up to this much, so the deadline is checked often.
NET_CHUNK = 64 * 1024
DRAIN_LIMIT = 64 * 1024  # an error or redirect body longer than this closes its connection instead
REDIRECTS = (301, 302, 303, 307, 308)
GIB = 1 << 30


class FetchError(Exception):
    """A download failed; str() is the reason shown after the URL.

    `keep` says the partial file may be continued by a later run (the
    deadline passed, or the server kept failing); otherwise it is removed."""

    def __init__(self, reason: str, *, keep: bool = False):
        super().__init__(reason)
        self.keep = keep


def _env_number(name: str, default: float, parse=float) -> float:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = parse(raw.strip())
    except ValueError:
        raise FetchError(f"{name}={raw!r} is not a number") from None
    if value <= 0:
        raise FetchError(f"{name}={raw!r} must be more than 0")
    return value


def _parse_size(text: str) -> int:
    """Bytes, with an optional K/M/G/T suffix (powers of 1024): 8G, 512M, 1073741824."""
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
    text = text.upper().removesuffix("IB").removesuffix("B")
    if text and text[-1] in units:
        return int(float(text[:-1]) * units[text[-1]])
    return int(text)


@dataclass(frozen=True)
class FetchPolicy:
    """Retry, time and size bounds; tests shrink them."""

    attempts: int = 5
    backoff: float = 1.0  # seconds before the 2nd attempt, doubled after each failure
    connect_timeout: float = 10.0
    read_timeout: float = 60.0  # silence on the connection this long is a failed attempt
    deadline: float = 4 * 3600.0  # seconds for one file, all attempts included
    max_size: int = 8 * GIB  # ceiling for a file that declares no `size:`
    max_redirects: int = 5
    stall_after: float = 10.0  # seconds without a byte before progress shows the transfer as stalled

    @classmethod
    def from_env(cls, **overrides) -> "FetchPolicy":
        """The default policy with BOOTGEN_FETCH_DEADLINE (seconds) and BOOTGEN_MAX_IMAGE_SIZE
        (bytes, or 8G, 512M ...) applied. Raises FetchError for a value that is not a number."""
        values = {"deadline": _env_number("BOOTGEN_FETCH_DEADLINE", cls.deadline),
                  "max_size": int(_env_number("BOOTGEN_MAX_IMAGE_SIZE", cls.max_size, _parse_size))}
        return cls(**{**values, **overrides})


@dataclass
class _Download:
    """One download across attempts: the partial file and what proves it can be continued."""

    url: str
    part: Path
    limit: int  # most bytes accepted
    size: int | None  # exact size declared, if any
    deadline: float  # time.monotonic() value
    meta_path: Path = field(init=False)
    meta: dict | None = None  # {"url", "etag", "last_modified", "total"} of the response that started `part`

    def __post_init__(self) -> None:
        self.meta_path = self.part.with_name(self.part.name + ".json")


class _Transient(Exception):
    """A failure worth retrying (connection trouble, 5xx, a resume the server could not prove)."""


# Progress hook: called with (url, total_or_None) and returns a context manager
# whose value is a callable advanced with each chunk's length.
ProgressFactory = Callable[[str, "int | None"], ContextManager[Callable[[int], None]]]


def _no_progress(url: str, total: int | None) -> ContextManager[Callable[[int], None]]:
    return nullcontext(lambda n: None)


def _to_stderr(line: str) -> None:
    """Retries are said as they happen, one line each, terminal or not: a wait is never silent."""
    import sys

    print(line, file=sys.stderr, flush=True)


class Fetcher:
    """Downloads URLs into partial files within the policy's bounds."""

    def __init__(self, policy: FetchPolicy = FetchPolicy(), progress: ProgressFactory = _no_progress,
                 notice: Callable[[str], None] = _to_stderr):
        import urllib3  # here, not at the top: a build that fetches nothing never pays for it

        self.policy = policy
        self.progress = progress
        self.notice = notice
        self._urllib3 = urllib3
        self._errors = (urllib3.exceptions.HTTPError, OSError)
        # retries=False, redirect=False: we retry (to resume with Range) and follow redirects ourselves.
        self._http = urllib3.PoolManager(retries=False)

    def download(self, url: str, part: Path, *, limit: int | None = None, size: int | None = None) -> int:
        """Download `url` into `part`; return its size. Raises FetchError.

        `size`, when declared, is the exact size the file must have; `limit`
        (default: the policy's max_size) is the most accepted otherwise."""
        part.parent.mkdir(parents=True, exist_ok=True)
        limit = size if size is not None else (limit if limit is not None else self.policy.max_size)
        state = _Download(url, part, limit, size, time.monotonic() + self.policy.deadline)
        state.meta = _load_meta(state)
        last = "no attempt made"
        try:
            for attempt in range(self.policy.attempts):
                if attempt:
                    pause = self.policy.backoff * 2 ** (attempt - 1)
                    if time.monotonic() + pause >= state.deadline:
                        raise FetchError(self._late(state, last), keep=True)
                    time.sleep(pause)
                try:
                    return self._attempt(state)
                except _Transient as exc:
                    last = str(exc)
                    self._say_retry(url, attempt + 1, last)
            raise FetchError(f"gave up after {self.policy.attempts} attempts: {last}", keep=True)
        except FetchError as exc:
            if not (exc.keep and _resumable(state)):
                _drop(state)  # nothing a later run could continue: leave no partial file behind
            raise

    def _say_retry(self, url: str, failed: int, reason: str) -> None:
        if failed < self.policy.attempts:
            pause = self.policy.backoff * 2 ** (failed - 1)
            self.notice(f"{url}: attempt {failed} of {self.policy.attempts} failed ({reason}); "
                        f"retrying in {pause:g} s")
        else:
            self.notice(f"{url}: attempt {failed} of {self.policy.attempts} failed ({reason}); giving up")

    def _late(self, state: _Download, last: str, got: int | None = None) -> str:
        if got is None:
            got = state.part.stat().st_size if state.part.exists() else 0
        return (f"not complete within the {self.policy.deadline:g} s deadline ({got} bytes received"
                + (f"; last error: {last}" if last != "no attempt made" else "") + ")")

    def _remaining(self, state: _Download) -> float:
        left = state.deadline - time.monotonic()
        if left <= 0:
            raise FetchError(self._late(state, "no attempt made"), keep=True)
        return left

    def _attempt(self, state: _Download) -> int:
        offset = state.part.stat().st_size if state.part.exists() else 0
        validator = _stored_validator(state.meta)
        if offset and not validator:
            _drop(state)  # nothing proves the server still has the file these bytes came from
            offset = 0
        headers = {"Accept-Encoding": "identity"}
        if offset:
            headers.update({"Range": f"bytes={offset}-", "If-Range": validator})
        response, where = self._open(state, headers)
        complete = False
        try:
            size = self._receive(state, response, where, offset)
            complete = True
            return size
        finally:
            # An error answer's short body is read so the connection can serve the next request;
            # a body abandoned part-way (deadline, ceiling, a resume refused) closes it.
            self._done(response, complete or response.status >= 300)

    def _open(self, state: _Download, headers: dict):
        """GET the URL, following redirects; (response, final URL)."""
        current = state.url
        for _hop in range(self.policy.max_redirects + 1):
            left = self._remaining(state)
            timeout = self._urllib3.Timeout(connect=min(self.policy.connect_timeout, left),
                                            read=min(self.policy.read_timeout, left))
            try:
                response = self._http.request("GET", current, headers=headers, preload_content=False,
                                              redirect=False, retries=False, timeout=timeout,
                                              enforce_content_length=True, decode_content=False)
            except self._errors as exc:
                raise _Transient(f"connection failed{_via(state.url, current)}: {_short(exc)}") from None
            if response.status not in REDIRECTS:
                return response, current
            location = response.headers.get("Location")
            self._done(response, True)
            if not location:
                raise FetchError(f"HTTP {response.status} redirect without a Location{_via(state.url, current)}")
            target = urljoin(current, location)
            scheme = urlsplit(target).scheme.lower()
            if scheme not in ("http", "https"):
                raise FetchError(f"redirected to {target}, which is not http or https")
            if urlsplit(current).scheme.lower() == "https" and scheme == "http":
                raise FetchError(f"redirected from https to http ({target}); refused")
            current = target
        raise FetchError(f"more than {self.policy.max_redirects} redirects (last to {current})")

    def _receive(self, state: _Download, response, where: str, offset: int) -> int:
        status, via = response.status, _via(state.url, where)
        if status == 416 and offset:
            if response.headers.get("Content-Range") == f"bytes */{offset}" and \
                    _same_file(state.meta, response) and state.meta.get("total") == offset:
                return offset  # the partial file was complete already (a run died before publishing it)
            _drop(state)
            raise _Transient(f"server rejected the resume range (HTTP 416){via}")
        if status >= 500:
            raise _Transient(f"HTTP {status} {response.reason or ''}".rstrip() + via)
        if status >= 400:
            raise FetchError(f"HTTP {status} {response.reason or ''}".rstrip() + via)
        if status not in (200, 206) or (status == 206 and not offset):
            raise FetchError(f"unexpected HTTP {status} {response.reason or ''}".rstrip() + via)
        if offset and status == 200:
            _drop(state)  # the whole (possibly new) file: take it from the start
            offset = 0
        elif offset and not self._continues(state, response, offset):
            _drop(state)  # not proven to be the same file: start over, never splice
            raise _Transient(f"the server did not prove the file unchanged since the partial download{via}")
        total = _total_size(response, offset)
        self._check_total(state, total, via)
        if not offset:
            _save_meta(state, {"url": state.url, "total": total, **_validators(response)})
        return self._stream(state, response, offset, total, via)

    def _continues(self, state: _Download, response, offset: int) -> bool:
        """A 206 for exactly our range, of a file with the same validator and total size."""
        if response.status != 206:
            return False
        total = state.meta.get("total")
        expected = f"bytes {offset}-" if total is None else f"bytes {offset}-{total - 1}/{total}"
        return response.headers.get("Content-Range", "").startswith(expected) and _same_file(state.meta, response)

    def _check_total(self, state: _Download, total: int | None, via: str) -> None:
        if total is None:
            return
        if state.size is not None and total != state.size:
            raise FetchError(f"the server announces {total} bytes but `size:` declares {state.size}{via}")
        if total > state.limit:
            raise FetchError(f"the server announces {total} bytes, more than the limit of {state.limit} bytes{via}"
                             " (declare the image's `size:` or raise BOOTGEN_MAX_IMAGE_SIZE)")

    def _stream(self, state: _Download, response, offset: int, total: int | None, via: str) -> int:
        count = offset
        read1 = getattr(response, "read1", None)  # urllib3 2: what has arrived, without waiting for more
        chunks = iter(lambda: read1(NET_CHUNK, decode_content=False), b"") if read1 is not None else \
            response.stream(NET_CHUNK, decode_content=False)
        with open(state.part, "ab" if offset else "wb") as out, self.progress(state.url, total) as advance:
            if offset:
                advance(offset)
            while True:
                try:
                    chunk = next(chunks, b"")
                except self._errors as exc:  # network trouble only: a full disk is not worth a retry
                    raise _Transient(f"connection lost after {count} bytes{via}: {_short(exc)}") from None
                if not chunk:
                    break
                count += len(chunk)
                if count > state.limit:
                    _drop(state)
                    raise FetchError(f"the server sent more than the limit of {state.limit} bytes{via}")
                out.write(chunk)
                advance(len(chunk))
                if time.monotonic() > state.deadline:
                    raise FetchError(self._late(state, "no attempt made", count), keep=True)
            out.flush()
            os.fsync(out.fileno())
        if total is not None and count != total:
            raise _Transient(f"connection closed after {count} of {total} bytes{via}")
        if state.size is not None and count != state.size:
            _drop(state)
            raise FetchError(f"got {count} bytes but `size:` declares {state.size}{via}")
        return count

    def _done(self, response, reusable: bool) -> None:
        """Give the connection back only with its response read to the end: a short body
        (an error page, a redirect's) is read first; anything else closes the connection,
        so the next request on it never reads a stale body."""
        if reusable:
            reusable = self._drain(response)
        if not reusable:
            response.close()
        response.release_conn()

    def _drain(self, response) -> bool:
        """Read what is left of a short body, briefly; True if it was all read."""
        left = response.length_remaining if hasattr(response, "length_remaining") else None
        if left is not None and left > DRAIN_LIMIT:
            return False
        until = time.monotonic() + min(2.0, self.policy.read_timeout)
        read = getattr(response, "read1", None) or response.read
        try:
            received = 0
            while time.monotonic() < until and received <= DRAIN_LIMIT:
                data = read(16384, decode_content=False)
                if not data:
                    return True
                received += len(data)
        except Exception:  # noqa: BLE001 (a broken body: the connection is closed instead)
            pass
        return False


def _via(url: str, where: str) -> str:
    return "" if where == url else f" (redirected to {where})"


def _validators(response) -> dict:
    """What If-Range may carry: a strong ETag and Last-Modified (a weak ETag proves nothing)."""
    etag = response.headers.get("ETag") or None
    return {"etag": etag if etag and not etag.startswith("W/") else None,
            "last_modified": response.headers.get("Last-Modified") or None}


def _stored_validator(meta: dict | None) -> str | None:
    """The validator to send in If-Range: the strong ETag, else Last-Modified."""
    meta = meta or {}
    return meta.get("etag") or meta.get("last_modified")


def _same_file(meta: dict | None, response) -> bool:
    """Whether `response` carries the very validator the partial file was started with."""
    meta = meta or {}
    if meta.get("etag"):
        return response.headers.get("ETag") == meta["etag"]
    return bool(meta.get("last_modified")) and response.headers.get("Last-Modified") == meta["last_modified"]


def _load_meta(state: _Download) -> dict | None:
    try:
        meta = json.loads(state.meta_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(meta, dict) or meta.get("url") != state.url:
        return None
    return meta


def _save_meta(state: _Download, meta: dict) -> None:
    state.meta = meta
    tmp = state.meta_path.with_name(state.meta_path.name + ".tmp")
    tmp.write_text(json.dumps(meta, sort_keys=True), encoding="utf-8")
    os.replace(tmp, state.meta_path)


def _resumable(state: _Download) -> bool:
    return bool(_stored_validator(state.meta)) and state.part.exists()


def _drop(state: _Download) -> None:
    """Forget the partial file and what described it."""
    state.part.unlink(missing_ok=True)
    state.meta_path.unlink(missing_ok=True)
    state.meta = None


def discard_partial(part: Path) -> None:
    """Remove a partial file and its resume record (after it failed verification)."""
    part.unlink(missing_ok=True)
    part.with_name(part.name + ".json").unlink(missing_ok=True)


def _total_size(response, offset: int) -> int | None:
    if response.status == 206:
        total = response.headers.get("Content-Range", "").rpartition("/")[2]
        if total.isdigit():
            return int(total)
    length = response.headers.get("Content-Length")
    return offset + int(length) if length and length.isdigit() else None


def _short(exc: Exception) -> str:
    """urllib3 nests the useful reason; keep the message to one line."""
    reason = getattr(exc, "reason", None) or exc
    return str(reason).splitlines()[0] if str(reason) else type(exc).__name__
