"""One publish to a destination at a time, and the published tree held in place while it is read.

A second `bootgen publish` to the same docroot or bucket prefix waits for the
first, saying so once, instead of interleaving its writes (two publishes at
once could each switch `current` or upload the index last, and the loser's
index would name objects the winner pruned). The lock of a docroot is a file
in the docroot, so it holds across users; the lock of a bucket is a file in
this user's cache directory, so it holds only between publishes made on this
machine (S3 has no lock; the README says so).
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import sys
from pathlib import Path

from bootgen.errors import Location, Problem, PublishError

LOCK_NAME = ".bootgen-publish.lock"


def lock_path(destination: str, endpoint_url: str | None) -> Path:
    from bootgen.publish.stores import is_url

    if is_url(destination):  # a remote store: no file there to lock
        cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "bootgen" / "publish-locks"
        key = hashlib.sha256(f"{endpoint_url or ''}\n{destination.rstrip('/')}".encode()).hexdigest()[:32]
        return cache / f"{key}.lock"
    return Path(destination) / LOCK_NAME


@contextlib.contextmanager
def destination_lock(destination: str, endpoint_url: str | None = None, waiting=None):
    """Held while publishing to `destination`; `waiting()` is called once if another holds it."""
    path = lock_path(destination, endpoint_url)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(path, "a")
    except OSError as exc:
        raise PublishError(Problem(Location(str(path)), f"cannot take the publish lock: {exc.strerror or exc}",
                                   hint="the destination (or, for a bucket, ~/.cache/bootgen) must be writable")) \
            from None
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            (waiting or _say_waiting)(destination)
            fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def _say_waiting(destination: str) -> None:
    print(f"waiting for another publish to {destination} to finish", file=sys.stderr, flush=True)
