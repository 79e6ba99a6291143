"""`bootgen audit`: what a stranger on the boot network can read, and which of it is secret.

A source is a built tree (or a docroot, whose `current` is one) or an S3
bucket. Every file is scanned for private keys, password hashes, tokens of
well-known formats and every secret value the inputs referenced (in each
encoding bootgen writes, and inside Ignition's data URLs, gzipped or not).
Each hit says how a stranger reaches the file:

- `listed`: named in the public index (manifest.json and its shards in index/);
- `unlisted`: not in any public index (a stranger needs its path, which for a
  secret-bearing file holds a keyed hash);
- `fenced`: nginx serves it only to its node's addresses and it is not
  world-readable, so dnsmasq's TFTP refuses it (a tree), or an anonymous GET
  is refused (a bucket).

A hit that is not fenced is a failure: exit 1.
"""
from __future__ import annotations

import base64
import gzip
import json
import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote_to_bytes

MAX_SCANNED = 16 * 1024 * 1024  # larger files are OS images fetched from upstream, not rendered

_CRYPT = re.compile(rb"\$(?:1|5|6|2[aby]|y|gy|7)\$[./A-Za-z0-9$=,]{8,}")
_TOKENS = {
    "AWS access key id": re.compile(rb"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b"),
    "GitHub token": re.compile(rb"\b(?:gh[pousr]_[A-Za-z0-9]{36,}|github_pat_[A-Za-z0-9_]{40,})"),
    "GitLab token": re.compile(rb"\bglpat-[A-Za-z0-9_-]{20,}"),
    "Slack token": re.compile(rb"\bxox[abposr]-[A-Za-z0-9-]{10,}"),
    "Google API key": re.compile(rb"\bAIza[0-9A-Za-z_-]{35}"),
    "JSON Web Token": re.compile(rb"\beyJ[A-Za-z0-9_-]{10,}\.eyJ[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{10,}"),
    "Kubernetes/k3s join token": re.compile(rb"\bK10[0-9a-f]{40,}::[A-Za-z0-9.:_-]{8,}"),
}
_DATA_URL = re.compile(rb"data:([^,\"\s]*),([^\"\s]*)")


@dataclass(frozen=True)
class Hit:
    path: str
    what: str
    reach: str  # how a stranger gets at it, in words
    fenced: bool  # no stranger can read it (over HTTP, TFTP or from the bucket)

    def line(self) -> str:
        return f"{self.path}: {self.what} ({self.reach})"


def findings(data: bytes, values: dict[str, str]) -> list[str]:
    """What in `data` a stranger must not read (descriptions, never the value)."""
    from .secrets import encodings
    from .sshkeys import contains_private_key

    found = []
    texts = [data] + _decoded_data_urls(data)
    for name, value in values.items():
        if any(form in text for form in encodings(value) for text in texts):
            found.append(f"the value of {name}")
    for text in texts:
        if b"\0" in text[:8192]:
            continue  # binary: boot loaders
        decoded = text.decode("utf-8", "replace")
        if contains_private_key(decoded):
            found.append("a private key")
        if _CRYPT.search(text):
            found.append("a password hash")
        found += [kind for kind, pattern in _TOKENS.items() if pattern.search(text)]
    return sorted(set(found))


def _decoded_data_urls(data: bytes) -> list[bytes]:
    """The contents of Ignition's data URLs (percent- or base64-encoded, maybe gzipped)."""
    out = []
    for match in _DATA_URL.finditer(data) if b"data:" in data else ():
        meta, payload = match.groups()
        try:
            raw = base64.b64decode(payload) if meta.endswith(b";base64") else unquote_to_bytes(payload)
            out.append(gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw)
        except (ValueError, OSError, EOFError):
            continue
    return out


# --- a tree or docroot -----------------------------------------------------------------------

def audit_tree(tree: Path, values: dict[str, str]) -> list[Hit]:
    """Hits in every file of a built tree (or a docroot's current release)."""
    from .secrets_tree import fenced_prefixes

    tree = tree / "current" if (tree / "current" / "manifest.json").is_file() else tree
    listed = _public_paths(tree)
    rules = fenced_prefixes(tree)
    hits = []
    for path in sorted(p for p in tree.rglob("*") if p.is_file()):
        rel = path.relative_to(tree).as_posix()
        if path.stat().st_size > MAX_SCANNED:
            continue
        what = findings(path.read_bytes(), values)
        if what:
            reach, fenced = _reach(rel, listed, rules)
            if path.stat().st_mode & 0o004:  # dnsmasq's TFTP serves it to whoever names it
                reach, fenced = reach + "; readable over TFTP by anyone who names it", False
            hits.append(Hit(rel, ", ".join(what), reach, fenced))
    return hits


def _public_paths(tree: Path) -> set[str]:
    """The files the tree's public index names, and the index's own files."""
    from bootgen.errors import PublishError
    from bootgen.publish.manifest import load_tree

    try:
        manifest = load_tree(tree)
    except PublishError:
        return set()  # no readable index: nothing is listed
    return {entry.path for entry in manifest.files} | set(manifest.index_files())


def _reach(rel: str, listed: set[str], rules: dict[str, list[str]]) -> tuple[str, bool]:
    reach = "listed in manifest.json" if rel in listed else "not in any public index"
    for location, allowed in rules.items():
        kind, _, where = location.partition(" ")
        where = where.strip('"')
        if (kind == "=" and where == "/" + rel) or (kind == "^~" and ("/" + rel).startswith(where)):
            return f"{reach}; fenced: nginx serves it only to {', '.join(allowed) or 'nobody'}", True
    return reach, False


# --- a bucket ---------------------------------------------------------------------------------

def audit_bucket(destination: str, values: dict[str, str], endpoint_url: str | None = None) -> list[Hit]:
    """Hits in every object under s3://bucket/prefix; an object an anonymous GET cannot read is fenced."""
    from bootgen.publish.stores.s3 import S3Location, make_client

    loc = S3Location.parse(destination)
    client = make_client(endpoint_url, 4)
    anonymous = _anonymous_client(endpoint_url)
    listed = _bucket_public_paths(client, loc)
    hits = []
    for key in _keys(client, loc):
        body = client.get_object(Bucket=loc.bucket, Key=key)["Body"].read()
        what = findings(body, values)
        if not what:
            continue
        rel = loc.path(key)
        reach = "listed in manifest.json" if rel in listed else "not in any public index"
        fenced = not _anonymously_readable(anonymous, loc.bucket, key)
        if fenced:
            reach += "; fenced: an anonymous GET is refused"
        hits.append(Hit(rel, ", ".join(what), reach, fenced))
    return hits


def _keys(client, loc) -> list[str]:
    keys, token = [], None
    while True:
        args = {"Bucket": loc.bucket, "Prefix": f"{loc.prefix}/" if loc.prefix else ""}
        if token:
            args["ContinuationToken"] = token
        page = client.list_objects_v2(**args)
        keys += [item["Key"] for item in page.get("Contents", [])]
        token = page.get("NextContinuationToken")
        if not token:
            return keys


def _bucket_public_paths(client, loc) -> set[str]:
    from bootgen.publish.manifest import parse_index

    def fetch(rel: str) -> tuple[bytes, str]:
        return client.get_object(Bucket=loc.bucket, Key=loc.key(rel))["Body"].read(), rel

    try:
        raw = client.get_object(Bucket=loc.bucket, Key=loc.key("manifest.json"))["Body"].read()
        manifest = parse_index(raw, "manifest.json", fetch)
        return {entry.path for entry in manifest.files} | set(manifest.index_files())
    except Exception:  # noqa: BLE001 - no readable index: nothing is listed
        return set()


def _anonymous_client(endpoint_url: str | None):
    import boto3
    from botocore import UNSIGNED
    from botocore.config import Config

    return boto3.session.Session().client("s3", endpoint_url=endpoint_url, config=Config(
        signature_version=UNSIGNED, s3={"addressing_style": "path"} if endpoint_url else None,
        retries={"max_attempts": 2}, connect_timeout=5, read_timeout=30))


def _anonymously_readable(client, bucket: str, key: str) -> bool:
    from botocore.exceptions import ClientError

    try:
        client.head_object(Bucket=bucket, Key=key)
        return True
    except ClientError:
        return False


# --- the secret values to look for -----------------------------------------------------------

def referenced_values(state_dir: Path, site_dir: Path) -> dict[str, str]:
    """Label -> value of every entry of the secrets file and every reference the last build
    resolved (so a value pasted in clear somewhere is found too)."""
    from .incremental import saved_secret_refs
    from .secrets import current_values

    values = current_values(site_dir, saved_secret_refs(state_dir)[0])
    return {label: value for label, value in values.items() if len(value) >= 4}


def report(hits: list[Hit]) -> str:
    unfenced = [hit for hit in hits if not hit.fenced]
    lines = [hit.line() for hit in hits]
    count = f"{len(hits)} hit{'s' if len(hits) != 1 else ''}"
    lines.append(f"{count}, {len(unfenced)} readable by anyone who can reach the server" if hits else "no secrets found")
    return "\n".join(lines)


__all__ = ["Hit", "audit_tree", "audit_bucket", "referenced_values", "report", "findings"]
