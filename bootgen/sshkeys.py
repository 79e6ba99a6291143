"""Recognise SSH public keys, refuse the private key pasted by mistake, and keep secrets out of messages.

Seed 003 shows the mistake this guards against: an OpenSSH *private* key in
`authorized-keys`. A config carrying one would publish the secret to every
machine that can reach the boot server. A problem that refuses such a value
must not print it either: `redact` turns any value into a short description
that is safe to show (a private key becomes "<OpenSSH private key, 411
characters, not shown>").
"""
from __future__ import annotations

import re

_PUBLIC = re.compile(r"^(ssh-(rsa|dss|ed25519)|ecdsa-sha2-nistp(256|384|521)|sk-(ssh-ed25519|ecdsa-sha2-nistp256)@openssh\.com)"
                     r" [A-Za-z0-9+/]+={0,3}( .*)?$")

# "-----BEGIN OPENSSH PRIVATE KEY-----", "-----BEGIN RSA PRIVATE KEY-----", "BEGIN PGP PRIVATE KEY BLOCK", ...
_PEM_PRIVATE = re.compile(r"-----BEGIN ([A-Z0-9 ]*?)PRIVATE KEY")
# The last one is base64 of "openssh-key-v1", how an OpenSSH private key's body starts (pasted without its header).
_SECRET_MARKERS = ("PRIVATE KEY", "PuTTY-User-Key-File", "Private-Lines:", "BEGIN PGP PRIVATE", "b3BlbnNzaC1rZXktdjE")
_LONG_BLOB = re.compile(r"[A-Za-z0-9+/=_-]{200,}")  # a long base64 run without spaces: key material of some kind


def key_problem(text: str) -> tuple[str, str] | None:
    """(message, hint) when `text` is not an SSH public key, else None.

    Neither ever quotes `text`."""
    stripped = text.strip()
    if looks_private(stripped):
        return ("this is a PRIVATE key; it must never leave your machine",
                "use the public half instead: `ssh-keygen -y -f <private key file>` prints it")
    if "\n" in stripped or not _PUBLIC.match(stripped):
        return ("not an SSH public key (expected 'ssh-ed25519 AAAA... comment' or similar)",
                "paste the one line from your .pub file")
    return None


def looks_private(text: str) -> bool:
    """Whether `text` holds private key material (PEM/OpenSSH, PuTTY or OpenPGP secret keys)."""
    return any(marker in text for marker in _SECRET_MARKERS)


# Key material itself, not just the words: an armor header followed by base64 (after any
# Proc-Type:/Version: header lines), an OpenSSH key body, a PuTTY key's private lines, or
# the base64 DER openings of RSA (PKCS#1 and #8), EC and Ed25519 private keys pasted bare.
# A script that merely mentions "BEGIN OPENSSH PRIVATE KEY" is not refused.
_KEY_MATERIAL = re.compile(
    r"-----BEGIN (?:[A-Z0-9]+ )*(?:PRIVATE|SECRET) KEY(?: BLOCK)?-----\s*(?:[A-Za-z-]+:[^\n]*\n\s*)*[A-Za-z0-9+/=]{16}"
    r"|b3BlbnNzaC1rZXktdjE[A-Za-z0-9+/=]{16}"
    r"|PuTTY-User-Key-File-\d+:.*?Private-Lines:\s*\d+\s+[A-Za-z0-9+/=]{16}"
    r"|\bMII[A-Za-z0-9+/]{1,3}(?:IBAAK|IBADAN)[A-Za-z0-9+/]{16}"
    r"|\b(?:MHcCAQEE|MC4CAQAwBQYDK2Vw)[A-Za-z0-9+/]{16}",
    re.S)
_MATERIAL_HINTS = ("KEY", "b3BlbnNzaC1rZXktdjE", "PuTTY", "MII", "MHcCAQEE", "MC4CAQAw")


def contains_private_key(text: str) -> bool:
    """Whether `text` (a whole file's contents, say) holds private key material."""
    return any(hint in text for hint in _MATERIAL_HINTS) and _KEY_MATERIAL.search(text) is not None


def describe_secret(text: str) -> str:
    """A short description of a secret value, e.g. "<OpenSSH private key, 411 characters, not shown>"."""
    match = _PEM_PRIVATE.search(text)
    if "PuTTY-User-Key-File" in text or "Private-Lines:" in text:
        kind = "PuTTY private key"
    elif "BEGIN PGP PRIVATE" in text:
        kind = "OpenPGP private key"
    elif match or "b3BlbnNzaC1rZXktdjE" in text:
        label = match.group(1).strip() if match else "OPENSSH"
        kind = f"{'OpenSSH' if label == 'OPENSSH' else label or 'PEM'} private key"
    else:
        kind = "key material"
    return f"<{kind}, {len(text)} characters, not shown>"


def redact(value: object, limit: int = 60) -> str:
    """`value` quoted for a message: secrets described, not shown; long or multi-line text shortened.

    The result is always one line of at most about `limit` characters."""
    text = str(value)
    if looks_private(text) or _LONG_BLOB.search(text):
        return describe_secret(text)
    shown = repr(text)  # quotes it and escapes newlines and control characters
    if len(shown) > limit:
        shown = shown[: max(limit - 4, 8)] + "...'"
    return shown


_QUOTED = re.compile(r"'(?:[^'\\]|\\.)*'" + r'|"(?:[^"\\]|\\.)*"')


def redact_secrets(message: str) -> str:
    """`message` with every quoted value holding key material replaced by its description
    (and, if the key is not quoted, everything from its first line on)."""
    def replace(match: re.Match) -> str:
        text = match.group(0)
        return describe_secret(text) if looks_private(text) or contains_private_key(text) else text

    redacted = _QUOTED.sub(replace, message)
    if looks_private(redacted) or contains_private_key(redacted):
        starts = [redacted.find(marker) for marker in _SECRET_MARKERS if marker in redacted]
        cut = min(starts) if starts else 0
        redacted = redacted[:cut] + "<private key material, not shown>"
    return redacted


# `password: hunter2`, `"passwd": x`, `plain_text_passwd: 'x'` in a YAML (or flow) line: the value,
# up to the end of the line, a `,` or `}` of a flow mapping, or a comment.
_PASSWORD_VALUE = re.compile(
    r"""(\b(?:password|passwd|hashed_passwd|plain_text_passwd|password_hash|root_password)["']?\s*:[ \t]+)"""
    r"""(?![|>][-+0-9]*\s*(?:#.*)?$)(?!\{\s*(?:secret|env|command)\s*:)("[^"]*"|'[^']*'|[^,}\]#\s][^,}\]#]*?)(?=\s*(?:[,}\]]|\s#|$))""")
# A chpasswd list entry written `- user:password` (no space after the colon: a plain string).
_USER_PASSWORD = re.compile(r"""(["']?[A-Za-z0-9._-]+:)(?=[^\s/])([^\s"',\]}]+)""")
NOT_SHOWN = "<not shown>"


def redact_line(line: str, limit: int = 120, *, column: int = 0) -> str:
    """A source line safe to echo under a problem: private key material is replaced by its
    description, and the value of a password field by <not shown>. With the problem's
    1-based `column`, a `user:password` entry starting there (cloud-init chpasswd) is
    hidden too. Crypt hashes are no secret, but are hidden alike: a line is not parsed."""
    line = _PASSWORD_VALUE.sub(lambda m: m.group(1) + NOT_SHOWN, line)
    if column > 0:
        entry = _USER_PASSWORD.match(line, column - 1)
        if entry:
            line = line[:entry.start(2)] + NOT_SHOWN + line[entry.end(2):]
    if not looks_private(line):
        return line
    match = re.search(r"-----BEGIN|PuTTY-User-Key-File|Private-Lines:|b3BlbnNzaC1rZXktdjE|PRIVATE KEY", line)
    start = match.start() if match else 0
    return line[:start][:limit] + describe_secret(line[start:])
