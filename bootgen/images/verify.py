"""OpenPGP signature checks in an isolated keyring holding only the site's keys.

The decision rests on python-gnupg's `valid` flag and the signer's primary
fingerprint (`pubkey_fingerprint`) compared with the pinned one, never on
status text or gpg's exit code: python-gnupg reports a signature by an expired
or revoked key with status 'signature valid' but `valid` False.
"""
from __future__ import annotations

import errno
import hashlib
import io
import os
import shutil
import stat
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from .model import KeySpec

if TYPE_CHECKING:
    import gnupg


@dataclass(frozen=True)
class Verdict:
    """Outcome of one signature check."""

    ok: bool
    reason: str = ""
    bad_data: bool = False  # the signature does not match the bytes (as opposed to a key problem)


class KeyFileError(Exception):
    """A site key file cannot be used; str() is the reason."""


class Keyring:
    """A temporary GNUPGHOME with the site keys whose files match their pins.

    Use as a context manager; the directory is removed on exit. It is made
    on first use only, so a build whose images are all verified already runs
    no gpg at all. Keys whose file does not hold exactly the pinned primary
    key are not imported and are listed in `rejected` with the reason.
    """

    def __init__(self, keys: dict[str, KeySpec]):
        self._keys = keys
        self._home: str | None = None
        self._gpg: gnupg.GPG | None = None
        self._rejected: dict[str, str] = {}

    def __enter__(self) -> "Keyring":
        return self

    @property
    def rejected(self) -> dict[str, str]:
        """Site key name -> why its file was refused."""
        self._ready()
        return self._rejected

    def _ready(self) -> gnupg.GPG:
        if self._gpg is None:
            # Short path: gpg puts sockets in GNUPGHOME and socket paths are limited.
            import gnupg  # only a build that checks a signature needs it (and its imports)

            self._home = tempfile.mkdtemp(prefix="bootgen-gpg-")
            self._gpg = gnupg.GPG(gnupghome=self._home)
            for name, spec in sorted(self._keys.items()):
                try:
                    self._import(spec)
                except KeyFileError as exc:
                    self._rejected[name] = str(exc)
        return self._gpg

    def __exit__(self, *exc_info) -> None:
        if self._home:
            # gpg may have started an agent for this home; stop it with the home.
            try:
                subprocess.run(["gpgconf", "--homedir", self._home, "--kill", "all"], capture_output=True, timeout=10)
            except (OSError, subprocess.TimeoutExpired):
                pass
            shutil.rmtree(self._home, ignore_errors=True)

    def _import(self, spec: KeySpec) -> None:
        """Import one key after checking it holds only the pinned primary key.

        The key's bytes were read once, through the site gate, when site.yaml
        was loaded (KeySpec.data); gpg never opens a path the site named."""
        found = self._gpg.scan_keys_mem(spec.data)
        if any(k.get("type") == "sec" for k in found):
            raise KeyFileError(f"{spec.file} holds a private key; a site key file must hold the public key only")
        fingerprints = sorted({k["fingerprint"].upper() for k in found})
        if not fingerprints:
            raise KeyFileError(f"{spec.file} holds no OpenPGP public key")
        if fingerprints != [spec.fingerprint]:
            raise KeyFileError(f"{spec.file} holds key {', '.join(fingerprints)}, not the pinned {spec.fingerprint}")
        result = self._gpg.import_keys(spec.data)
        if spec.fingerprint not in {f.upper() for f in result.fingerprints}:
            raise KeyFileError(f"gpg could not import {spec.file}")

    def fingerprint(self, name: str) -> str:
        """The pinned fingerprint of site key `name`."""
        return self._keys[name].fingerprint

    def key_digest(self, name: str) -> str:
        """sha256 of site key `name`'s file as read (no gpg needed)."""
        return hashlib.sha256(self._keys[name].data).hexdigest()

    def check(self, data: Path, signature: Path, allowed: tuple[str, ...]) -> Verdict:
        """Verify a detached signature made by one of the `allowed` site keys.

        `allowed` names site keys; only their pinned fingerprints are accepted.
        """
        unusable = [name for name in allowed if name in self.rejected]
        if unusable:
            return Verdict(False, f"key {unusable[0]} unusable: {self.rejected[unusable[0]]}")
        # python-gnupg's verify_file takes the *signature* first and the data's
        # path second; gpg then reads the data itself, so GBs never enter memory.
        try:
            sig_bytes = _read_signature(signature)
        except OSError as exc:
            return Verdict(False, f"cannot read the signature: {exc.strerror}")
        result = self._ready().verify_file(io.BytesIO(sig_bytes), str(data))
        return self._judge(result, allowed)

    def _judge(self, result, allowed: tuple[str, ...]) -> Verdict:
        pins = {self._keys[name].fingerprint: name for name in allowed}
        wanted = ", ".join(f"{name} ({fpr})" for fpr, name in pins.items())
        signer = (result.pubkey_fingerprint or result.fingerprint or result.key_id or "").upper()
        if not result.valid or result.problems:
            why = getattr(result, "key_status", None) or result.status or "no valid signature"
            if result.status == "no public key":
                return Verdict(False, f"bad signature: signed by {signer or 'an unknown key'} "
                                      f"which is not the pinned key {wanted}")
            bad_data = result.status == "signature bad"
            if bad_data:
                why = "the file does not match its signature"
            return Verdict(False, f"bad signature: {why}" + (f" (key {signer})" if signer else ""), bad_data=bad_data)
        if signer not in pins:
            return Verdict(False, f"bad signature: signed by {signer} which is not the pinned key {wanted}")
        return Verdict(True)


MAX_SIGNATURE = 1024 * 1024  # a detached signature is a few hundred bytes


def _read_signature(path: Path) -> bytes:
    """A detached signature's bytes: a regular file only (a FIFO never blocks), and small."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    with open(fd, "rb", buffering=0) as handle:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(errno.EINVAL, "not a regular file", str(path))
        data = handle.read(MAX_SIGNATURE + 1)
    if len(data) > MAX_SIGNATURE:
        raise OSError(errno.EFBIG, "too large for a detached signature", str(path))
    return data
