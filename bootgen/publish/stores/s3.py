"""A bucket on S3 or an S3-compatible server as a publish `Store` (bootgen.publish.protocol).

Layout under `s3://bucket/prefix/`: the tree's files at their paths (one
namespace shared by every publish: content-addressed objects of older builds
stay until --prune, entry points are overwritten), the root `manifest.json`
and its shards `index/<id>.json` / `.sha256` (content-addressed), and under
`.bootgen/` what the world must not read: `index.json` (completed publishes,
oldest first), `manifests/<build_id>.json` (each published build's full root,
for --prune and comparisons) and `index/` (shards naming secret-bearing files).
Prune assumes the prefix belongs to bootgen.
"""
from __future__ import annotations

import hashlib
import json
import os
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

from bootgen.errors import Location, Problem, PublishError
from bootgen.content import ENTRY_POINT_CACHE, cache_control, content_type
from bootgen.plan import INDEX as SHARDS, shard_name
from bootgen.publish.manifest import MANIFEST, FileEntry
from bootgen.publish.progress import Progress
from bootgen.publish.protocol import Store
from bootgen.publish.report import Action, PublishReport, RequestCounter
from bootgen.publish.stores.s3_reads import SignedReader, Unanswered

META_DIR = ".bootgen"
HISTORY = f"{META_DIR}/index.json"  # completed publishes, oldest first
MULTIPART_THRESHOLD = 16 * 1024 * 1024
LIST_PAGE = 1000  # keys per ListObjectsV2 page
HEAD_LIMIT = 64  # existence checks by HEAD up to this many files, whatever the bucket's size
_CREDENTIAL_CODES = {"InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied",
                     "ExpiredToken", "InvalidToken", "403", "Forbidden"}


@dataclass(frozen=True)
class S3Location:
    """A bucket and a key prefix (without slashes at either end)."""

    bucket: str
    prefix: str

    @classmethod
    def parse(cls, destination: str) -> "S3Location":
        """Split `s3://bucket/prefix`; the prefix may be empty."""
        rest = destination.split("://", 1)[-1]  # the scheme, in any case (S3://bucket too)
        bucket, _, prefix = rest.partition("/")
        if not bucket:
            raise PublishError(Problem(Location(destination), "no bucket name in the destination",
                                       hint="use s3://bucket/prefix"))
        return cls(bucket, prefix.strip("/"))

    def key(self, path: str) -> str:
        return f"{self.prefix}/{path}" if self.prefix else path

    def path(self, key: str) -> str:
        return key[len(self.prefix) + 1:] if self.prefix else key

    def prefix_slash(self) -> str:
        return self.prefix + "/" if self.prefix else ""

    def archive_key(self, build_id: str) -> str:
        return self.key(f"{META_DIR}/manifests/{build_id}.json")


def make_client(endpoint_url: str | None, jobs: int, session=None):
    """An S3 client with retries (AWS_MAX_ATTEMPTS, default 5) and a pool sized for `jobs` workers.

    Credentials, region and profile come from the usual AWS environment and files
    (through `session`, a botocore Session, when one was made already).
    """
    import boto3  # lazy: keeps `bootgen --help` fast
    from botocore.config import Config

    attempts = int(os.environ.get("AWS_MAX_ATTEMPTS") or 5)
    # total_max_attempts counts the first try, as AWS_MAX_ATTEMPTS does (max_attempts would not)
    checksums = {}
    if endpoint_url and not os.environ.get("AWS_REQUEST_CHECKSUM_CALCULATION"):
        # botocore >= 1.36 adds a CRC32 trailer (aws-chunked) to every upload by default,
        # which several S3-compatible servers reject; checksum only where the API requires it.
        checksums = {"request_checksum_calculation": "when_required",
                     "response_checksum_validation": "when_required"}
    config = Config(retries={"mode": "standard", "total_max_attempts": attempts},
                    max_pool_connections=2 * jobs + 4, connect_timeout=5, read_timeout=60,
                    s3={"addressing_style": "path"} if endpoint_url else None, **checksums)
    return boto3.session.Session(botocore_session=session).client("s3", endpoint_url=endpoint_url, config=config)


@contextmanager
def open_store(destination: str, *, endpoint_url: str | None = None, jobs: int = 8, **_options) -> Iterator["S3Store"]:
    """The bucket `destination` names, with S3 failures turned into PublishErrors. The boto3
    client is made on first use: with an endpoint URL, the store's GETs go through a
    SignedReader, so a publish with nothing to write never makes one (see s3_reads)."""
    reader = SignedReader(endpoint_url) if endpoint_url else None
    with translate_errors(destination):
        with S3Store(destination, lambda: make_client(endpoint_url, jobs, reader and reader.session),
                     reader=reader) as store:
            yield store


def publish_s3(tree: Path, destination: str, client, *, multipart_threshold: int = MULTIPART_THRESHOLD,
               allow_secrets: bool = False, **options) -> PublishReport:
    """Publish a tree with an existing client (the protocol's options as keywords)."""
    from bootgen.publish import publish_with_store

    with translate_errors(destination), S3Store(destination, client, multipart_threshold) as store:
        return publish_with_store(store, tree, allow_secrets=allow_secrets, **options)


class S3Store(Store):
    """One bucket prefix; counts its requests (botocore's before-send hook) for the report.

    `client` is a boto3 S3 client, or a function making one when it is first needed.
    With a `reader`, objects are read through it, and through the client only when
    the reader cannot answer (from then on, every read)."""

    fences_secrets = False  # a bucket cannot tell a node from a stranger: secrets need --allow-secrets

    def __init__(self, destination: str, client, multipart_threshold: int = MULTIPART_THRESHOLD, *,
                 reader: SignedReader | None = None):
        self.destination, self.threshold, self.reader = destination, multipart_threshold, reader
        self.reads_directly = reader is not None  # False once the reader could not answer
        self._client, self._make_client = (None, client) if callable(client) else (client, None)
        self._client_lock = threading.Lock()
        self.loc = S3Location.parse(destination)
        self.counter = RequestCounter()
        self.archived: tuple[str, bytes] | None = None  # the archive copy this publish wrote

    @property
    def client(self):
        with self._client_lock:  # uploads run on several threads
            if self._client is None:
                self._client = self._make_client()
                self._client.meta.events.register("before-send.s3", self.counter)
            return self._client

    def __enter__(self) -> "S3Store":
        if self._client is not None:
            self._client.meta.events.register("before-send.s3", self.counter)
        return self

    def __exit__(self, *_exc) -> None:
        if self._client is not None:
            self._client.meta.events.unregister("before-send.s3", self.counter)

    def requests(self) -> int:
        return self.counter.count + (self.reader.count if self.reader else 0)

    # -- reading ----------------------------------------------------------------
    def live_root(self) -> bytes | None:
        return self.get(self.loc.key(MANIFEST))

    def history(self) -> tuple[str, ...]:
        raw = self.get(self.loc.key(HISTORY))
        try:
            builds = json.loads(raw)["builds"] if raw else []
        except (ValueError, KeyError, TypeError):
            return ()
        return tuple(b for b in builds if isinstance(b, str))

    def archived_root(self, build_id: str) -> bytes | None:
        return self.get(self.loc.archive_key(build_id))

    def shard(self, build_id: str | None, shard_id: str) -> bytes | None:
        path = shard_name(shard_id)
        return self.get(self.loc.key(path)) or self.get(self.loc.key(f"{META_DIR}/{path}"))

    def get(self, key: str) -> bytes | None:
        """The object's bytes, or None if it does not exist."""
        from botocore.exceptions import ClientError

        if self.reads_directly:
            try:
                return self.reader.get(self.loc.bucket, key)
            except Unanswered:
                self.reads_directly = False  # the client retries the read and reports what went wrong
        try:
            return self.client.get_object(Bucket=self.loc.bucket, Key=key)["Body"].read()
        except ClientError as exc:
            if _code(exc) in ("NoSuchKey", "404", "NotFound"):
                return None
            raise

    def present(self, entries: list[FileEntry], tree: Path, known: int) -> set[str]:
        """One HEAD per file for a few files, else one listing of the prefix, whichever costs fewer
        requests by the live release's count: a change of a few files costs the same at any size."""
        if len(entries) <= max(HEAD_LIMIT, known // LIST_PAGE + 1):
            from bootgen.publish.protocol import parallel

            found = zip((e.path for e in entries), parallel(self.head, entries, 8))
            tags = {path: tag for path, tag in found if tag is not None}
        else:
            tags = {self.loc.path(o["Key"]): o.get("ETag", "") for o in self.list_keys(self.loc.prefix_slash())}
        return {e.path for e in entries if _already_there(e, tags, tree)}

    def head(self, entry: FileEntry) -> str | None:
        from botocore.exceptions import ClientError

        try:
            return self.client.head_object(Bucket=self.loc.bucket, Key=self.loc.key(entry.path))["ETag"]
        except ClientError as exc:
            if _code(exc) in ("404", "NoSuchKey", "NotFound"):
                return None
            raise

    def list_keys(self, prefix: str) -> Iterator[dict]:
        for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.loc.bucket, Prefix=prefix):
            yield from page.get("Contents", [])

    # -- writing ----------------------------------------------------------------
    def upload(self, entry: FileEntry, source: Path, progress: Progress) -> None:
        if entry.size >= self.threshold:
            self.put_large(entry, source, progress)
        else:
            self.put_file(self.loc.key(entry.path), source, cache_control(entry.immutable), entry.content_type,
                          {"sha256": entry.sha256})
            progress.advance(entry.size)

    def put_index(self, path: str, source: Path, private: bool) -> None:
        key = self.loc.key(f"{META_DIR}/{path}" if private else path)
        self.put_file(key, source, cache_control(path.startswith(f"{SHARDS}/")), content_type(path))

    def archive(self, build_id: str, root: bytes, private: bool) -> None:
        self.put_bytes(self.loc.archive_key(build_id), root, MANIFEST)
        self.archived = (build_id, root)

    def switch(self, build_id: str, root: bytes) -> None:
        """PUT the root; when it is the archive copy just written, copy that inside the bucket
        instead (one request either way, and the root's bytes are sent once)."""
        if self.archived != (build_id, root):
            self.put_bytes(self.loc.key(MANIFEST), root, MANIFEST)
            return
        self.client.copy_object(Bucket=self.loc.bucket, Key=self.loc.key(MANIFEST), MetadataDirective="REPLACE",
                                CopySource={"Bucket": self.loc.bucket, "Key": self.loc.archive_key(build_id)},
                                ContentType=content_type(MANIFEST), CacheControl=ENTRY_POINT_CACHE)

    def delete(self, paths: list[str]) -> None:
        self.delete_keys([self.loc.key(p) for p in paths])

    def record(self, history: tuple[str, ...]) -> None:
        body = json.dumps({"builds": list(history)}, indent=2).encode() + b"\n"
        self.put_bytes(self.loc.key(HISTORY), body, HISTORY)

    def put_file(self, key: str, path: Path, cache: str, mime: str, meta: dict | None = None) -> None:
        with open(path, "rb") as body:
            self.client.put_object(Bucket=self.loc.bucket, Key=key, Body=body, ContentType=mime,
                                   CacheControl=cache, Metadata=meta or {})

    def put_large(self, entry: FileEntry, path: Path, progress: Progress) -> None:
        """Multipart upload through boto3's transfer manager."""
        from boto3.s3.transfer import TransferConfig

        config = TransferConfig(multipart_threshold=self.threshold, multipart_chunksize=self.threshold,
                                max_concurrency=4, use_threads=True)
        extra = {"ContentType": entry.content_type, "CacheControl": cache_control(entry.immutable),
                 "Metadata": {"sha256": entry.sha256}}
        self.client.upload_file(str(path), self.loc.bucket, self.loc.key(entry.path),
                                ExtraArgs=extra, Config=config, Callback=progress.advance)

    def put_bytes(self, key: str, body: bytes, name: str) -> None:
        self.client.put_object(Bucket=self.loc.bucket, Key=key, Body=body,
                               ContentType=content_type(name), CacheControl=ENTRY_POINT_CACHE)

    def delete_keys(self, keys: list[str]) -> None:
        for start in range(0, len(keys), LIST_PAGE):
            batch = [{"Key": k} for k in keys[start:start + LIST_PAGE]]
            result = self.client.delete_objects(Bucket=self.loc.bucket, Delete={"Objects": batch, "Quiet": True})
            if result.get("Errors"):
                err = result["Errors"][0]
                raise PublishError(Problem(Location(f"s3://{self.loc.bucket}/{err.get('Key')}"),
                                           f"delete failed: {err.get('Code')}: {err.get('Message')}"))

    # -- retention ----------------------------------------------------------------
    def retain(self, kept: tuple[str, ...], referenced: Callable[[], set[str]], dry_run: bool) -> list[Action]:
        """--prune: delete every object no kept build's listing names (archive copies of others too)."""
        keep = referenced()
        doomed = [o["Key"] for o in self.list_keys(self.loc.prefix_slash())
                  if _prunable(self.loc.path(o["Key"]), keep, kept)]
        if not dry_run:
            self.delete_keys(doomed)
        return [Action("delete", self.loc.path(k)) for k in doomed]


def _prunable(path: str, referenced: set[str], kept: tuple[str, ...]) -> bool:
    if path in (MANIFEST, HISTORY):
        return False
    if path.startswith(f"{META_DIR}/manifests/"):
        return path.removeprefix(f"{META_DIR}/manifests/").removesuffix(".json") not in kept
    return path.removeprefix(f"{META_DIR}/") not in referenced

def _already_there(entry: FileEntry, present: dict[str, str], tree: Path) -> bool:
    """A content-addressed object that exists is complete; an entry point must match by MD5 ETag."""
    if entry.path not in present:
        return False
    if entry.immutable:
        return True
    return present[entry.path].strip('"') == _md5(tree / entry.path)


def _md5(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _code(exc) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


@contextmanager
def translate_errors(destination: str) -> Iterator[None]:
    """Turn the botocore failures a user can cause into one PublishError each."""
    from botocore.exceptions import (BotoCoreError, ClientError, ConnectionClosedError, ConnectTimeoutError,
                                     EndpointConnectionError, NoCredentialsError, ReadTimeoutError)

    loc = Location(destination)
    try:
        yield
    except NoCredentialsError:
        raise PublishError(Problem(loc, "no AWS credentials found",
                                   hint="set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or AWS_PROFILE")) from None
    except ClientError as exc:
        raise PublishError(_client_problem(loc, exc)) from None
    except (EndpointConnectionError, ConnectionClosedError, ReadTimeoutError, ConnectTimeoutError) as exc:
        raise PublishError(Problem(loc, f"S3 endpoint unreachable after retries: {exc}",
                                   hint="check --endpoint-url and that the server is running")) from None
    except BotoCoreError as exc:  # bad profile, bad endpoint URL, missing region ...
        raise PublishError(Problem(loc, f"S3 client setup failed: {exc}")) from None


def _client_problem(loc: Location, exc) -> Problem:
    code = _code(exc)
    message = exc.response.get("Error", {}).get("Message", "") or str(exc)
    if code == "NoSuchBucket":
        return Problem(loc, "the bucket does not exist", hint="create it first, e.g. `aws s3 mb`")
    if code in _CREDENTIAL_CODES:
        return Problem(loc, f"the server refused the credentials ({code}): {message}",
                       hint="check AWS_PROFILE / AWS_ACCESS_KEY_ID and the bucket policy")
    return Problem(loc, f"S3 error {code}: {message}")
