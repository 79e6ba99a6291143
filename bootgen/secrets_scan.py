"""Secrets in values that bootgen serves: refused where they are written.

Every file bootgen writes is served, over TFTP and plain HTTP, to anything on
the boot network that asks. The named key fields have their own checks
(`ssh_authorized_keys`, Butane's `password_hash`, `cloud_init.password_hash`);
this module scans everything else a site, profile, node or Butane file says:

- private key material in any string (a `storage.files` inline content, a
  systemd unit, cloud-init `user_data`, `vars`, ...), wherever it is nested;
- in cloud-init data (`cloud_init`), passwords that are not crypt hashes:
  `password`, `passwd` and `hashed_passwd` must be complete hashes ($6$, $5$,
  $y$), `plain_text_passwd` is always refused, and `chpasswd` entries must be
  `user:<hash>` or `user:RANDOM`.

A problem points at the value's file:line:col and field path and never shows
the value (a key is described, e.g. "<OpenSSH private key, 411 characters, not
shown>"; a password is not repeated at all).
"""
from __future__ import annotations

from typing import Any, Iterator

from .errors import Problem
from .passwords import crypt_hash_problem
from .secrets import SecretStr
from .source import SourceDoc, format_path
from .sshkeys import contains_private_key, describe_secret

Finding = tuple[tuple, str, str]  # (field path, message, hint)

KEY_HINT = ("remove it, and treat the key as leaked (it is in your repository's history); "
            "let machines make their own keys, or fetch them from a secret store at boot")
HASH_HINT = "put a crypt hash here: `bootgen hash-password` makes one"

# Fields whose own checks already refuse a private key or a plaintext password, with their
# own words: scanning them again would report one mistake twice.
_CHECKED_ELSEWHERE = frozenset({"ssh_authorized_keys", "password_hash"})
# Site fields that are not served as written and have their own checks (OpenPGP keys, images).
_SITE_UNSERVED = frozenset({"keys", "images"})

_HASHED_KEYS = frozenset({"password", "passwd", "hashed_passwd"})
_PLAINTEXT_KEYS = frozenset({"plain_text_passwd"})
_RANDOM = frozenset({"R", "RANDOM"})


def doc_problems(doc: SourceDoc, kind: str = "") -> list[Problem]:
    """Problems for the secrets in a loaded site, profile, node or Butane document."""
    data = doc.data
    if not isinstance(data, dict):
        return []
    skip = _SITE_UNSERVED if kind == "site" else frozenset()
    problems = []
    for path, message, hint in scan({k: v for k, v in data.items() if k not in skip}):
        problems.append(Problem(doc.locate(path), message, format_path(path), hint))
    return problems


def scan(value: Any, path: tuple = (), *, cloud_init: bool = False) -> Iterator[Finding]:
    """Findings in `value` (at `path`), depth first in document order. Inside a mapping
    key `cloud_init`, or when `cloud_init` is set, the cloud-init password rules apply."""
    if isinstance(value, str):
        if contains_private_key(value) and not isinstance(value, SecretStr):  # a reference keeps it out of Git
            yield (path, f"a private key would be served here: {describe_secret(value)}", KEY_HINT)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from scan(item, path + (index,), cloud_init=cloud_init)
    elif isinstance(value, dict):
        for key, item in value.items():
            child = path + (key,)
            if key in _CHECKED_ELSEWHERE:
                continue
            inside = cloud_init or key == "cloud_init"
            if cloud_init:
                yield from _cloud_init_field(key, item, child)
            yield from scan(item, child, cloud_init=inside)


def _cloud_init_field(key: str, value: Any, path: tuple) -> Iterator[Finding]:
    """The password rules for one key of cloud-init data (user-data, autoinstall)."""
    if key in _PLAINTEXT_KEYS and value is not None:
        yield (path, f"{key} would put a plaintext password in the served user-data",
               "use hashed_passwd with a crypt hash from `bootgen hash-password`")
    elif key in _HASHED_KEYS and value is not None and not isinstance(value, (dict, list)):
        problem = crypt_hash_problem(value, name=f"'{key}'")
        if problem:
            yield (path, problem, HASH_HINT + " (user-data is served to anyone on the boot network)")
    elif key == "chpasswd" and isinstance(value, dict):
        yield from _chpasswd_list(value.get("list"), path + ("list",))


def _chpasswd_list(entries: Any, path: tuple) -> Iterator[Finding]:
    """cloud-init's chpasswd `list`: "user:password" lines (one string) or entries."""
    if isinstance(entries, str):
        lines = [(path, line) for line in entries.splitlines()]
    elif isinstance(entries, list):
        lines = [(path + (index,), entry) for index, entry in enumerate(entries) if isinstance(entry, str)]
    else:
        return
    for where, line in lines:
        user, sep, password = line.strip().partition(":")
        if not sep or password in _RANDOM:
            continue
        problem = crypt_hash_problem(password, name=f"the chpasswd password of {_user(user)}")
        if problem:
            yield (where, problem, "write user:<crypt hash> (`bootgen hash-password` makes one) or user:RANDOM")


def _user(name: str) -> str:
    name = name.strip()
    return repr(name) if len(name) <= 32 and name.isprintable() else "a user"
