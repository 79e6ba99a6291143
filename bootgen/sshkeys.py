"""Recognise SSH public keys, and refuse the private key pasted by mistake.

Seed 003 shows the mistake this guards against: an OpenSSH *private* key in
`authorized-keys`. A config carrying one would publish the secret to every
machine that can reach the boot server.
"""
from __future__ import annotations

import re

_PUBLIC = re.compile(r"^(ssh-(rsa|dss|ed25519)|ecdsa-sha2-nistp(256|384|521)|sk-(ssh-ed25519|ecdsa-sha2-nistp256)@openssh\.com)"
                     r" [A-Za-z0-9+/]+={0,3}( .*)?$")


def key_problem(text: str) -> tuple[str, str] | None:
    """(message, hint) when `text` is not an SSH public key, else None."""
    stripped = text.strip()
    if "PRIVATE KEY" in stripped or stripped.startswith("PuTTY-User-Key-File"):
        return ("this is a PRIVATE key; it must never leave your machine",
                "use the public half instead: `ssh-keygen -y -f <private key file>` prints it")
    if "\n" in stripped or not _PUBLIC.match(stripped):
        return ("not an SSH public key (expected 'ssh-ed25519 AAAA... comment' or similar)",
                "paste the one line from your .pub file")
    return None
