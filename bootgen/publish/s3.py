"""Publish a tree to an S3 (or S3-compatible) bucket, atomically and incrementally.

Order of writes, so a publish killed at any point leaves a consistent site:

1. content-addressed objects (`immutable: true`) that the bucket lacks;
2. entry points that differ (they may now name the objects from step 1);
3. `.bootgen/manifests/<build_id>.json`, the archive copy used by --prune;
   (after the index shards `index/<id>.json` and `.sha256` it names that the bucket lacks);
4. `manifest.json`, the index's root: the switch to the new build;
5. deletion of entry points the new manifest no longer lists (safe only now:
   before the switch the live manifest still names them);
6. `.bootgen/index.json`, the list of completed publishes, oldest first.

Step 6 marks the publish complete. A rerun after a crash reads the live
manifest and the index (two GETs), finds what is missing and finishes it. A
publish with nothing to do makes exactly those two requests, whatever the size
of the site. A missing or corrupt remote manifest counts as an empty site:
every object is then checked by listing (or HEAD) and only the missing ones
are uploaded.

Content-addressed objects are never deleted by a publish, only by `--prune`,
which keeps every object that one of the last K published manifests (and
always the live one) refers to. Prune assumes the prefix belongs to bootgen.
"""
from __future__ import annotations

import hashlib
import json
import os
from concurrent.futures import ThreadPoolExecutor, wait, FIRST_EXCEPTION
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

from bootgen.errors import Location, Problem, PublishError
from bootgen.content import ENTRY_POINT_CACHE, cache_control, content_type
from bootgen.plan import INDEX, listing_dir
from bootgen.publish.manifest import MANIFEST, SUMS, FileEntry, Manifest, parse_index
from bootgen.publish.progress import NullProgress, Progress
from bootgen.publish.report import Action, PublishReport, RequestCounter

META_DIR = ".bootgen"
INDEX = f"{META_DIR}/index.json"
INDEX_LENGTH = 100  # build ids remembered; prune only ever needs the last K
MULTIPART_THRESHOLD = 16 * 1024 * 1024
LIST_PAGE = 1000  # keys per ListObjectsV2 page
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
        rest = destination.removeprefix("s3://")
        bucket, _, prefix = rest.partition("/")
        if not bucket:
            raise PublishError(Problem(Location(destination), "no bucket name in the destination",
                                       hint="use s3://bucket/prefix"))
        return cls(bucket, prefix.strip("/"))

    def key(self, path: str) -> str:
        return f"{self.prefix}/{path}" if self.prefix else path

    def path(self, key: str) -> str:
        return key[len(self.prefix) + 1:] if self.prefix else key

    def archive_key(self, build_id: str) -> str:
        return self.key(f"{META_DIR}/manifests/{build_id}.json")


@dataclass(frozen=True)
class RemoteState:
    """What the bucket says about itself before we write anything."""

    live: Manifest | None  # the manifest.json being served, None if missing or corrupt
    history: tuple[str, ...]  # build ids of completed publishes, oldest first
    previous: Manifest | None  # manifest of history[-1], the last completed publish


@dataclass(frozen=True)
class Plan:
    """Everything a publish will write or delete, in order."""

    immutable: tuple[FileEntry, ...]
    entry_points: tuple[FileEntry, ...]
    stale: tuple[str, ...]  # entry-point paths to delete after the switch
    skipped: int
    switch: bool  # write the index shards, the archive copy and manifest.json
    record: bool  # append the build id to the index
    known: frozenset[str] = frozenset()  # index files the live root names (in the bucket already)


def make_client(endpoint_url: str | None, jobs: int):
    """An S3 client with retries (AWS_MAX_ATTEMPTS, default 5) and a pool sized for `jobs` workers.

    Credentials, region and profile come from the usual AWS environment and files.
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
    return boto3.session.Session().client("s3", endpoint_url=endpoint_url, config=config)


def publish_s3(tree: Path, manifest: Manifest, destination: str, client, *, dry_run: bool = False,
               prune: bool = False, keep: int = 3, jobs: int = 8, progress: Progress | None = None,
               multipart_threshold: int = MULTIPART_THRESHOLD, public: Manifest | None = None) -> PublishReport:
    """Publish a verified tree to `destination` (s3://bucket/prefix) with `client`.

    `public` is the tree's manifest.json when `manifest` is its full one (secret-bearing
    files included): the full one is kept only as the archive copy under `.bootgen/`."""
    loc = S3Location.parse(destination)
    counter = RequestCounter()
    client.meta.events.register("before-send.s3", counter)
    try:
        with translate_errors(destination):
            run = _Run(tree, manifest, loc, client, jobs, progress or NullProgress(), multipart_threshold)
            run.public = public or manifest
            run.public_raw = run.public.raw
            actions, skipped = run.execute(dry_run, prune, keep)
    finally:
        client.meta.events.unregister("before-send.s3", counter)
    uploads = [a for a in actions if a.verb == "upload"]
    return PublishReport(destination, manifest.build_id, uploaded=len(uploads), skipped=skipped,
                         deleted=sum(a.verb == "delete" for a in actions), requests=counter.count,
                         bytes=sum(a.size for a in uploads), dry_run=dry_run, actions=tuple(actions))


class _Run:
    """One publish: holds the client and the destination so the steps stay small."""

    def __init__(self, tree: Path, manifest: Manifest, loc: S3Location, client, jobs: int,
                 progress: Progress, multipart_threshold: int):
        self.tree, self.manifest, self.loc, self.client = tree, manifest, loc, client
        self.jobs, self.progress, self.threshold = max(1, jobs), progress, multipart_threshold
        self.public = manifest  # the tree's own index (less than `manifest` when secrets are held)
        self.public_raw = manifest.raw  # what manifest.json says

    def execute(self, dry_run: bool, prune: bool, keep: int) -> tuple[list[Action], int]:
        remote = self.read_remote()
        plan = self.plan(remote)
        actions = self.describe(plan)
        if not dry_run:
            self.apply(plan, remote)
        if prune:
            history = self.new_history(remote.history) if plan.record else remote.history
            actions += self.prune(history, keep, dry_run)
        return actions, plan.skipped

    # -- reading --------------------------------------------------------------
    def read_remote(self) -> RemoteState:
        live = self.read_manifest(self.loc.key(MANIFEST))
        history = self.read_index()
        previous = live
        if history and (live is None or live.build_id != history[-1]):
            previous = self.read_manifest(self.loc.archive_key(history[-1]))
        return RemoteState(live, history, previous)

    def read_manifest(self, key: str) -> Manifest | None:
        raw = self.get(key)
        if raw is None:
            return None
        try:
            return self.assemble(raw, f"s3://{self.loc.bucket}/{key}")
        except PublishError:
            return None  # corrupt: treat the site as empty and re-check every object

    def assemble(self, raw: bytes, origin: str) -> Manifest:
        """A published index: a format-1 manifest, or a root and the shards it names."""
        return parse_index(raw, origin, self.fetch)

    def fetch(self, rel: str) -> tuple[bytes, str]:
        """A shard's bytes and its URL (public, else under .bootgen/); a PublishError if missing."""
        for key in (self.loc.key(rel), self.loc.key(f"{META_DIR}/{rel}")):
            body = self.get(key)
            if body is not None:
                return body, f"s3://{self.loc.bucket}/{key}"
        raise PublishError(Problem(Location(f"s3://{self.loc.bucket}/{self.loc.key(rel)}"),
                                   "manifest.json names this shard but it is missing"))

    def read_index(self) -> tuple[str, ...]:
        raw = self.get(self.loc.key(INDEX))
        try:
            builds = json.loads(raw)["builds"] if raw else []
        except (ValueError, KeyError, TypeError):
            return ()
        return tuple(b for b in builds if isinstance(b, str))

    def get(self, key: str) -> bytes | None:
        """The object's bytes, or None if it does not exist."""
        from botocore.exceptions import ClientError

        try:
            return self.client.get_object(Bucket=self.loc.bucket, Key=key)["Body"].read()
        except ClientError as exc:
            if _code(exc) in ("NoSuchKey", "404", "NotFound"):
                return None
            raise

    # -- planning -------------------------------------------------------------
    def plan(self, remote: RemoteState) -> Plan:
        known = remote.live.by_path() if remote.live else {}
        changed = [f for f in self.manifest.files
                   if f.path not in known or known[f.path].sha256 != f.sha256]
        present = self.existing(changed, known)
        todo = [f for f in changed if not _already_there(f, present, self.tree)]
        same_live = remote.live is not None and remote.live.raw == self.public_raw
        done = bool(remote.history) and remote.history[-1] == self.manifest.build_id
        return Plan(immutable=tuple(f for f in todo if f.immutable),
                    entry_points=tuple(f for f in todo if not f.immutable),
                    stale=self.stale_paths(remote),
                    skipped=len(self.manifest.files) - len(todo),
                    switch=not same_live, record=not (same_live and done),
                    known=frozenset(remote.live.index_files() if remote.live and remote.live.root else ()))

    def stale_paths(self, remote: RemoteState) -> tuple[str, ...]:
        """Entry points of the live or last completed build that the new one drops."""
        new = {f.path for f in self.manifest.files}
        old = {f.path for m in (remote.live, remote.previous) if m for f in m.files if not f.immutable}
        return tuple(sorted(old - new))

    def existing(self, candidates: list[FileEntry], known: dict[str, FileEntry]) -> dict[str, str]:
        """ETags of candidate objects already in the bucket (left by a crashed publish).

        Per top-level directory, either one HEAD per candidate or a listing of the
        directory, whichever costs fewer requests by the live manifest's count.
        """
        groups: dict[str, list[FileEntry]] = {}
        for f in candidates:
            groups.setdefault(_top(f.path), []).append(f)
        found: dict[str, str] = {}
        for top, files in sorted(groups.items()):
            pages = sum(_top(p) == top for p in known) // LIST_PAGE + 1
            if len(files) <= pages:
                found.update(self.head_all(files))
            else:
                found.update(self.list_dir(top))
        return found

    def head_all(self, files: list[FileEntry]) -> dict[str, str]:
        results = self.parallel(self.head, files)
        return {f.path: etag for f, etag in zip(files, results) if etag is not None}

    def head(self, entry: FileEntry) -> str | None:
        from botocore.exceptions import ClientError

        try:
            return self.client.head_object(Bucket=self.loc.bucket, Key=self.loc.key(entry.path))["ETag"]
        except ClientError as exc:
            if _code(exc) in ("404", "NoSuchKey", "NotFound"):
                return None
            raise

    def list_dir(self, top: str) -> dict[str, str]:
        """path -> ETag under one top-level directory ('' means files at the root only)."""
        base = self.loc.key(top) + "/" if top else (self.loc.prefix + "/" if self.loc.prefix else "")
        args = {"Bucket": self.loc.bucket, "Prefix": base}
        if not top:
            args["Delimiter"] = "/"
        return {self.loc.path(o["Key"]): o.get("ETag", "") for o in self.list_keys(**args)}

    def list_keys(self, **args) -> Iterator[dict]:
        for page in self.client.get_paginator("list_objects_v2").paginate(**args):
            yield from page.get("Contents", [])

    # -- writing --------------------------------------------------------------
    def describe(self, plan: Plan) -> list[Action]:
        actions = [Action("upload", f.path, f.size) for f in plan.immutable + plan.entry_points]
        if plan.switch:
            actions += [Action("upload", rel, path.stat().st_size) for rel, path in self.index_uploads(plan.known)]
            actions.append(Action("upload", MANIFEST, len(self.public_raw)))
        return actions + [Action("delete", p) for p in plan.stale]

    def index_uploads(self, known: frozenset[str]) -> list[tuple[str, Path]]:
        """(key path, local file) of the index files to upload before the roots, less those the
        live root names: the tree's own, and the shards only the full index kept outside it
        holds, under .bootgen/ (they name secret-bearing files, whose paths are not public)."""
        full = listing_dir(self.tree) if self.manifest is not self.public else self.tree
        public = [rel for rel in self.public.index_files() if rel != MANIFEST]
        uploads = [(rel, self.tree / rel) for rel in public if rel not in known]
        return uploads + [(f"{META_DIR}/{rel}", full / rel) for rel in self.manifest.index_files()
                          if rel != MANIFEST and rel not in public]

    def apply(self, plan: Plan, remote: RemoteState) -> None:
        total = sum(f.size for f in plan.immutable + plan.entry_points)
        self.progress.start(total, f"publishing to s3://{self.loc.bucket}/{self.loc.prefix}")
        try:
            self.parallel(self.upload, list(plan.immutable))
            self.parallel(self.upload, list(plan.entry_points))
        finally:
            self.progress.stop()
        if plan.switch:
            for rel, path in self.index_uploads(plan.known):
                self.put_file(rel, path, ENTRY_POINT_CACHE if rel == SUMS else cache_control(True))
            self.put_bytes(self.loc.archive_key(self.manifest.build_id), self.manifest.raw, MANIFEST)
            self.put_bytes(self.loc.key(MANIFEST), self.public_raw, MANIFEST)
        self.delete_keys([self.loc.key(p) for p in plan.stale])
        if plan.record:
            self.write_index(self.new_history(remote.history))

    def new_history(self, history: tuple[str, ...]) -> tuple[str, ...]:
        """Move this build to the end: republishing an old build makes it the newest."""
        kept = [b for b in history if b != self.manifest.build_id]
        return tuple(kept + [self.manifest.build_id])[-INDEX_LENGTH:]

    def write_index(self, history: tuple[str, ...]) -> None:
        body = json.dumps({"builds": list(history)}, indent=2).encode() + b"\n"
        self.put_bytes(self.loc.key(INDEX), body, INDEX)

    def upload(self, entry: FileEntry) -> None:
        path = self.tree / entry.path
        if entry.size >= self.threshold:
            self.put_large(entry, path)
        else:
            self.put_file(entry.path, path, cache_control(entry.immutable), entry.sha256, entry.content_type)
            self.progress.advance(entry.size)

    def put_file(self, rel: str, path: Path, cache: str, sha256: str | None = None, mime: str | None = None) -> None:
        meta = {"sha256": sha256} if sha256 else {}
        with open(path, "rb") as body:
            self.client.put_object(Bucket=self.loc.bucket, Key=self.loc.key(rel), Body=body,
                                   ContentType=mime or content_type(rel), CacheControl=cache, Metadata=meta)

    def put_large(self, entry: FileEntry, path: Path) -> None:
        """Multipart upload through boto3's transfer manager."""
        from boto3.s3.transfer import TransferConfig

        config = TransferConfig(multipart_threshold=self.threshold, multipart_chunksize=self.threshold,
                                max_concurrency=4, use_threads=True)
        extra = {"ContentType": entry.content_type, "CacheControl": cache_control(entry.immutable),
                 "Metadata": {"sha256": entry.sha256}}
        self.client.upload_file(str(path), self.loc.bucket, self.loc.key(entry.path),
                                ExtraArgs=extra, Config=config, Callback=self.progress.advance)

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

    def parallel(self, fn: Callable[[FileEntry], object], items: list[FileEntry]) -> list:
        """Run fn over items on a thread pool; the first failure cancels what has not started."""
        if not items:
            return []
        pool = ThreadPoolExecutor(max_workers=self.jobs)
        futures = [pool.submit(fn, item) for item in items]
        try:
            wait(futures, return_when=FIRST_EXCEPTION)
            return [f.result() for f in futures]
        finally:
            pool.shutdown(wait=True, cancel_futures=True)

    # -- pruning --------------------------------------------------------------
    def prune(self, history: tuple[str, ...], keep: int, dry_run: bool) -> list[Action]:
        """Delete objects no manifest among the last `keep` publishes refers to."""
        kept = history[-max(1, keep):]
        indexes = [self.manifest, self.public] + [self.kept_manifest(build_id) for build_id in kept]
        referenced = {f.path for manifest in indexes for f in manifest.files}
        referenced |= {name for manifest in indexes for rel in manifest.index_files()
                       for name in (rel, f"{META_DIR}/{rel}")}
        doomed = [o["Key"] for o in self.list_keys(Bucket=self.loc.bucket, Prefix=self.prefix_slash())
                  if self.prunable(self.loc.path(o["Key"]), referenced, kept)]
        if not dry_run:
            self.delete_keys(doomed)
            if tuple(kept) != history:
                self.write_index(tuple(kept))
        return [Action("delete", self.loc.path(k)) for k in doomed]

    def kept_manifest(self, build_id: str) -> Manifest:
        if build_id == self.manifest.build_id:
            return self.manifest
        found = self.read_manifest(self.loc.archive_key(build_id))
        if found is None:
            raise PublishError(Problem(Location(f"s3://{self.loc.bucket}/{self.loc.archive_key(build_id)}"),
                                       "cannot prune: archived manifest of a kept build is missing or corrupt",
                                       hint="nothing was pruned; run without --prune or with a smaller --keep"))
        return found

    def prunable(self, path: str, referenced: set[str], kept: tuple[str, ...]) -> bool:
        if path in (MANIFEST, SUMS, INDEX):
            return False
        if path.startswith(f"{META_DIR}/manifests/"):
            return path.removeprefix(f"{META_DIR}/manifests/").removesuffix(".json") not in kept
        return path not in referenced

    def prefix_slash(self) -> str:
        return self.loc.prefix + "/" if self.loc.prefix else ""


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


def _top(path: str) -> str:
    return path.split("/", 1)[0] if "/" in path else ""


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
