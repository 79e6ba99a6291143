"""Checks on single Butane values, each returning (message, hint) pairs.

They refuse what would hurt at boot time or leak a secret: private keys where
public keys belong, plaintext or weak password hashes, decimal file modes,
relative Ignition paths. They are pure functions of the value and the target
Ignition version, so the caller decides where the problem is reported.
"""
from __future__ import annotations

import base64
import binascii
import posixpath
import re
import struct
from typing import Callable

from ..passwords import crypt_hash_problem
from ..sshkeys import describe_secret, looks_private, redact
from .butane_schema import VARIANTS
from .ignition_syntax import SCHEMES_SINCE, url_problem

Finding = tuple[str, str]  # (message, hint)
Check = Callable[[object, tuple], list[Finding]]

HASH_HINT = "run `bootgen hash-password` and put its output in password_hash"


def check_variant(value: str, version: tuple) -> list[Finding]:
    if value in VARIANTS:
        return []
    return [(f"unknown variant '{value}'", "bootgen translates the flatcar and fcos variants of Butane")]


def check_butane_version(value: str, version: tuple) -> list[Finding]:
    if re.fullmatch(r"1\.\d+\.\d+(-experimental)?", value):
        return []
    return [(f"'{value}' is not a Butane config version", "write it like 1.0.0, or leave version out")]


def check_legacy_filesystem(value: object, version: tuple) -> list[Finding]:
    """Container Linux Configs named the filesystem; `root` is the only one that maps to Ignition 3."""
    if value == "root":
        return []
    return [(f"filesystem '{value}' cannot be translated: Ignition 3 has no named filesystems",
             "remove `filesystem` and write the path as it appears in the booted system")]


def check_path(value: str, version: tuple) -> list[Finding]:
    """Ignition writes to absolute paths; `..` would escape the intended directory."""
    if not value.startswith("/"):
        return [(f"path '{value}' is not absolute", "Ignition paths start with /, e.g. /etc/hostname")]
    if ".." in value.split("/"):
        return [(f"path '{value}' contains a '..' segment", "write the path without '..'")]
    clean = "/" + posixpath.normpath(value).lstrip("/")  # normpath keeps a leading //, Go's path.Clean does not
    if value != clean:  # Ignition rejects paths that are not in their simplest form
        return [(f"path '{value}' is not in its simplest form", f"write it as {clean}")]
    return []


def check_link_target(value: str, version: tuple) -> list[Finding]:
    # Relative targets (even ../x) are normal for symlinks and resolved by the kernel, not by Ignition.
    if value:
        return []
    return [("link target is empty", "set target to the path the link points to")]


def check_local_path(value: str, version: tuple) -> list[Finding]:
    """Local files must stay inside the files directory."""
    if not value:
        return [("local file name is empty", "name a file relative to the files directory")]
    if value.startswith("/"):
        return [(f"local file {redact(value, 80)} is an absolute path",
                 "local files are named relative to the files directory")]
    if ".." in value.split("/"):
        return [(f"local file {redact(value, 80)} contains a '..' segment",
                 "local files must stay inside the files directory")]
    return []


def check_source_url(value: str, version: tuple) -> list[Finding]:
    """Ignition's URL rules (Go's URL parser, the schemes of the spec version, data: URL syntax)."""
    problem = url_problem(value, version)
    if problem is None:
        return []
    scheme = value.split(":", 1)[0].lower() if ":" in value else ""
    if problem == "invalid url scheme" and scheme in SCHEMES_SINCE:
        need = ".".join(map(str, SCHEMES_SINCE[scheme]))
        return [(f"{scheme}: URLs need Ignition {need} or newer",
                 "raise the Ignition version or host the file over http")]
    if problem == "invalid url scheme":
        return [(f"{redact(value, 60)} is not a URL Ignition can fetch",
                 "use an http://, https://, tftp://, s3:// or data: URL")]
    return [(f"{redact(value, 60)} is not a URL Ignition can read: {problem}",
             "check the URL's syntax; escape spaces and other special characters as %XX")]


def check_compression(value: str, version: tuple) -> list[Finding]:
    if value in ("", "gzip"):
        return []
    return [(f"unknown compression '{value}'", "Ignition understands only gzip (or no compression)")]


def check_hash(value: str, version: tuple) -> list[Finding]:
    """Ignition checks the function and the length; the digits must be hex or no file ever matches."""
    if re.fullmatch(r"sha512-[0-9a-fA-F]{128}", value):
        return []
    if re.fullmatch(r"sha256-[0-9a-fA-F]{64}", value):
        return [] if version >= (3, 1, 0) else [("sha256 hashes need Ignition 3.1.0 or newer", "use a sha512- hash")]
    return [(f"'{value}' is not a hash Ignition can verify", "write sha512-<128 lowercase hex digits> (sha512sum prints them)")]


def check_device(value: str, version: tuple) -> list[Finding]:
    """Ignition's rule: an absolute path in its simplest form."""
    if not value:
        return [("device is empty", "name the device like /dev/sda or /dev/disk/by-id/...")]
    if not value.startswith("/"):
        return [(f"device '{value}' is not an absolute path", "name the device like /dev/sda or /dev/disk/by-id/...")]
    clean = _go_clean(value)
    if value != clean:
        return [(f"device '{value}' is not in its simplest form", f"write it as {clean}")]
    return []


def check_fs_path(value: str, version: tuple) -> list[Finding]:
    """A filesystem's mount path; empty means not mounted by Ignition."""
    return check_path(value, version) if value else []


def _go_clean(value: str) -> str:
    return "/" + posixpath.normpath(value).lstrip("/")  # normpath keeps a leading //, Go's path.Clean does not


def check_guid(value: str, version: tuple) -> list[Finding]:
    if value == "" or re.fullmatch(r"[0-9A-Fa-f]{8}(-[0-9A-Fa-f]{4}){3}-[0-9A-Fa-f]{12}", value):
        return []
    return [(f"'{value}' is not a GUID", "write it like 0FC63DAF-8483-4772-8E79-3D69D8477DE4")]


def check_fs_format(value: str, version: tuple) -> list[Finding]:
    formats = ["ext4", "btrfs", "xfs", "vfat", "swap"] + (["none"] if version >= (3, 3, 0) else [])
    if value in formats or value == "":
        return []
    return [(f"unknown filesystem format '{value}'", "Ignition {} formats: {}".format(
        ".".join(map(str, version)), ", ".join(formats)))]


_UNIT_TYPES = ("service", "socket", "device", "mount", "automount", "swap", "target", "path", "timer", "slice", "scope")


def check_unit_name(value: str, version: tuple) -> list[Finding]:
    if re.fullmatch(r"[A-Za-z0-9:_.\\@-]+\.(%s)" % "|".join(_UNIT_TYPES), value):
        return []
    return [(f"'{value}' is not a systemd unit name", "unit names end in a type, e.g. installer.service")]


def check_dropin_name(value: str, version: tuple) -> list[Finding]:
    if value.endswith(".conf") and "/" not in value:
        return []
    return [(f"drop-in name '{value}' must end in .conf", "name it like 10-override.conf")]


def check_file_mode(value: int, version: tuple) -> list[Finding]:
    return _check_mode(value, directory=False) or _check_special_bits(value, version)


def check_dir_mode(value: int, version: tuple) -> list[Finding]:
    return _check_mode(value, directory=True) or _check_special_bits(value, version)


def _check_special_bits(mode: int, version: tuple) -> list[Finding]:
    """Ignition before spec 3.4.0 ignores setuid, setgid and sticky bits (and warns)."""
    if mode & 0o7000 and version < (3, 4, 0):
        return [(f"mode {oct(mode)[2:].zfill(4)} has setuid/setgid/sticky bits, which Ignition "
                 f"{'.'.join(map(str, version))} ignores", "raise the profile's ignition_version to 3.4.0, "
                 f"or drop the special bits: 0{oct(mode & 0o777)[2:]}")]
    return []


LEADING_ZERO_HINT = "YAML reads {0} as a decimal number; remember the leading zero: 0{0}"


def _check_mode(mode: int, *, directory: bool) -> list[Finding]:
    """Refuse a mode that only makes sense if its digits were meant as octal (Butane's rule)."""
    octal = _decimal_digits_as_octal(mode)
    if octal is not None and not is_typical_mode(mode, directory) and is_typical_mode(octal, directory):
        return [(f"mode {mode} is decimal (octal {oct(mode)[2:]}), which is not a sensible permission",
                 LEADING_ZERO_HINT.format(mode))]
    if not 0 <= mode <= 0o7777:
        return [(f"mode {mode} is out of range", "modes are octal numbers from 0 to 07777, e.g. 0644")]
    return []


def _decimal_digits_as_octal(mode: int) -> int | None:
    """644 -> 0o644; None when the decimal digits are not all octal digits."""
    text = str(mode)
    if mode < 0 or len(text) > 4 or any(ch in "89" for ch in text):
        return None
    return int(text, 8)


def is_typical_mode(mode: int, directory: bool) -> bool:
    """Whether a permission is unsurprising: owner >= group >= other, readable, sane special bits."""
    if mode == 0:
        return True  # root ignores mode bits; "no access" is a deliberate choice
    classes = [(mode >> shift) & 7 for shift in (0, 3, 6)]  # other, group, owner
    seen = 0
    for perm in classes:
        if seen & ~perm:  # a less specific class has a bit this one lacks (r--rw----)
            return False
        if perm & 1 and seen & 4 and not seen & 1:  # rwxr----- : read without execute below an executable owner
            return False
        if perm & 3 and not perm & 4:  # -w- and --x without read
            return False
        seen |= perm
    if not seen & 4:
        return False
    return _typical_special_bits(mode, seen, directory)


def _typical_special_bits(mode: int, seen: int, directory: bool) -> bool:
    if directory:
        if not seen & 1 or mode & 0o4000:
            return False
        return not (mode & 0o3000 and not seen & 2)
    if mode & 0o6000 and (not seen & 1 or mode & 0o002):
        return False
    return not mode & 0o1000


# --- SSH keys -------------------------------------------------------------

_KEY_TYPES = ("ssh-rsa", "ssh-ed25519", "ssh-dss", "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384", "ecdsa-sha2-nistp521",
              "sk-ssh-ed25519@openssh.com", "sk-ecdsa-sha2-nistp256@openssh.com")
PRIVATE_KEY_HINT = ("put the public key here (the .pub file, or `ssh-keygen -y -f KEYFILE`); "
                    "this private key is now in your config history: treat it as leaked and make a new one")


def check_ssh_key(value: str, version: tuple) -> list[Finding]:
    """Accept one OpenSSH public key line; refuse private keys loudly."""
    if looks_private(value):
        return [("this is a private key, not a public key", PRIVATE_KEY_HINT)]
    fields = value.split()
    for i, word in enumerate(fields):
        if word in _KEY_TYPES:
            return _check_key_blob(word, fields[i + 1] if i + 1 < len(fields) else "")
    return [(f"'{_shorten(value)}' does not look like an OpenSSH public key",
             "paste one line of a .pub file, starting with ssh-ed25519, ssh-rsa, ecdsa-sha2-... or sk-...")]


def _check_key_blob(key_type: str, blob: str) -> list[Finding]:
    """The base64 part encodes the key type again; a truncated or pasted-over key fails here."""
    hint = "copy the whole line of the .pub file; the key may be truncated"
    try:
        raw = base64.b64decode(blob, validate=True)
        (length,) = struct.unpack(">I", raw[:4])
        embedded = raw[4:4 + length].decode("ascii")
    except (binascii.Error, struct.error, UnicodeDecodeError, ValueError):
        return [(f"the {key_type} key data is not valid base64", hint)]
    if embedded != key_type:
        return [(f"the key data is for '{_shorten(embedded)}', not {key_type}", hint)]
    return []


def _shorten(text: str, limit: int = 40) -> str:
    """At most `limit` characters of a value, on one line; key material is described, never shown."""
    if looks_private(text) or len(text) > 200 and " " not in text.strip():
        return describe_secret(text)
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit] + "..."


# --- password hashes -------------------------------------------------------

def check_password_hash(value: str, version: tuple) -> list[Finding]:
    """Accept complete crypt(3) hashes of strong schemes ($6$, $5$, $y$, bcrypt); a locked
    marker (!, *) is fine too. `$6$` alone, an empty salt or a cut hash is refused."""
    problem = crypt_hash_problem(value, name="password_hash", bcrypt=True)
    return [(problem, HASH_HINT)] if problem else []


CHECKS: dict[str, Check] = {
    "variant": check_variant,
    "butane_version": check_butane_version,
    "legacy_filesystem": check_legacy_filesystem,
    "path": check_path,
    "fs_path": check_fs_path,
    "link_target": check_link_target,
    "local_path": check_local_path,
    "source_url": check_source_url,
    "compression": check_compression,
    "hash": check_hash,
    "device": check_device,
    "guid": check_guid,
    "fs_format": check_fs_format,
    "unit_name": check_unit_name,
    "dropin_name": check_dropin_name,
    "file_mode": check_file_mode,
    "dir_mode": check_dir_mode,
    "ssh_key": check_ssh_key,
    "password_hash": check_password_hash,
}

