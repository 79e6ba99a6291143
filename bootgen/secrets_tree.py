"""Which files of a built tree carry secrets, and how they are kept from strangers.

The build records them in `.bootgen/private/<build id>/secret-paths.json`
beside the tree's full listing (bootgen.write.write_listing); `publish` and
`audit` read them from there.
"""
from __future__ import annotations

import json
from pathlib import Path

from .plan import FENCE, SECRET_PATHS, private_dir

SERVER_GROUP = "www-data"  # Debian's nginx workers: may read secret-bearing files, others may not


def secret_paths(tree: Path) -> list[str]:
    """The secret-bearing files of a tree bootgen built (the fence file among them); [] if none."""
    try:
        return json.loads((private_dir(tree) / SECRET_PATHS).read_bytes())
    except (OSError, ValueError):
        return []


def restrict(tree: Path, paths) -> None:
    """Make secret-bearing files unreadable to others (mode 0640, group www-data when it exists).

    dnsmasq serves the tree over TFTP to whoever names a file and cannot fence by
    address; but it reads files as its own unprivileged user, and as root it serves only
    world-readable ones, so such files are refused over TFTP while nginx, whose workers
    are in the group, still serves them to their node."""
    import grp
    import os

    try:
        gid = grp.getgrnam(SERVER_GROUP).gr_gid
    except KeyError:
        gid = -1
    for path in paths:
        target = tree / path
        if gid != -1:
            try:
                os.chown(target, -1, gid, follow_symlinks=False)
            except PermissionError:
                pass  # not ours to give away: nginx must then run with the builder's group
        os.chmod(target, 0o640)


def fenced_prefixes(tree: Path) -> dict[str, list[str]]:
    """nginx fence rules of a tree: location (`= /path` or `^~ /dir/`) -> allowed addresses."""
    try:
        text = (tree / FENCE).read_text()
    except OSError:
        return {}
    rules: dict[str, list[str]] = {}
    current = None
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("location "):
            current = line[len("location "):].rstrip(" {")
            rules[current] = []
        elif line.startswith("allow ") and current is not None:
            rules[current].append(line[len("allow "):].rstrip(";"))
    return rules


def protection_line(out: Path) -> str | None:
    """One line for the build's output when the tree has secret-bearing files."""
    paths = [p for p in secret_paths(out) if p != FENCE]
    if not paths:
        return None
    rules = fenced_prefixes(out)
    open_to_none = sum(1 for allowed in rules.values() if not allowed) - 1  # the fence file's own rule
    note = f"; {open_to_none} location(s) have no known address and are refused to everyone" if open_to_none else ""
    return (f"{len(paths)} files carry secrets: left out of the public index (manifest.json, index/), "
            f"under keyed-hash paths, served by nginx only to their node's addresses "
            f"(server/nginx-secrets.conf){note}; publish to S3 needs --allow-secrets")


def publish_notice(tree: Path, destination: str, allow_secrets: bool) -> str | None:
    """What a publish to S3 did with secret-bearing files, and the bucket policy they need."""
    paths = [p for p in secret_paths(tree) if p != FENCE]
    if not paths or not destination.startswith("s3://"):
        return None
    if not allow_secrets:
        return (f"{len(paths)} files that carry secrets were not uploaded (a bucket serves them to anyone): "
                f"their nodes cannot fetch their configs from {destination}. Serve them with the fenced "
                f"nginx config, or pass --allow-secrets and set the bucket policy it prints.")
    return ("uploaded files that carry secrets. The bucket policy must deny anonymous reads of the private "
            "prefix and of each node's secret-bearing files except from that node's addresses:\n"
            + json.dumps(bucket_policy(tree, destination), indent=2))


def bucket_policy(tree: Path, destination: str) -> dict:
    """An S3 bucket policy (Deny statements) for the secret-bearing files of `tree` at `destination`."""
    bucket, _, prefix = destination.removeprefix("s3://").partition("/")
    base = f"arn:aws:s3:::{bucket}/{prefix.strip('/') + '/' if prefix.strip('/') else ''}"
    statements = [{"Sid": "BootgenPrivatePrefix", "Effect": "Deny", "Principal": "*", "Action": "s3:GetObject",
                   "Resource": base + ".bootgen/*"}]
    for index, (location, allowed) in enumerate(sorted(fenced_prefixes(tree).items())):
        kind, _, path = location.partition(" ")
        path = path.strip('"').lstrip("/")
        if path == FENCE:
            continue
        statement = {"Sid": f"BootgenSecrets{index}", "Effect": "Deny", "Principal": "*", "Action": "s3:GetObject",
                     "Resource": base + path + ("*" if kind == "^~" else "")}
        if allowed:
            statement["Condition"] = {"NotIpAddress": {"aws:SourceIp": [f"{a}/32" for a in allowed]}}
        statements.append(statement)
    return {"Version": "2012-10-17", "Statement": statements}
