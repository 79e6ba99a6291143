"""SHA-512 crypt (`$6$`) password hashes for Ignition's password_hash, in pure Python.

Python's `crypt` module is deprecated and gone in 3.13, and passlib is not
maintained, so this implements the published SHA-crypt algorithm (Ulrich
Drepper, "Unix crypt using SHA-256 and SHA-512") directly. Tests compare it
with the system's crypt(3) and the specification's test vectors.
"""
from __future__ import annotations

import hashlib
import re
import secrets

_ALPHABET = "./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
DEFAULT_ROUNDS = 5000  # the value crypt(3) assumes when the hash does not say rounds=
_SALT_LENGTH = 16


def hash_password(password: str, *, salt: str | None = None, rounds: int = DEFAULT_ROUNDS) -> str:
    """Return a `$6$` SHA-512 crypt hash of password (a random 16-character salt unless given)."""
    if salt is None:
        salt = "".join(secrets.choice(_ALPHABET) for _ in range(_SALT_LENGTH))
    _check_salt(salt)
    if not 1000 <= rounds <= 999_999_999:
        raise ValueError("rounds must be between 1000 and 999999999")
    digest = _sha512_crypt(password.encode("utf-8"), salt.encode("ascii"), rounds)
    prefix = "$6$" if rounds == DEFAULT_ROUNDS else f"$6$rounds={rounds}$"
    return f"{prefix}{salt}${digest}"


def _check_salt(salt: str) -> None:
    if not 1 <= len(salt) <= _SALT_LENGTH or any(ch not in _ALPHABET for ch in salt):
        raise ValueError(f"salt must be 1 to {_SALT_LENGTH} characters from [./0-9A-Za-z]")


def _repeat_to(block: bytes, length: int) -> bytes:
    """`block` repeated and cut to `length` bytes (the algorithm's P and S sequences)."""
    return (block * (length // len(block) + 1))[:length]


def _sha512_crypt(password: bytes, salt: bytes, rounds: int) -> str:
    alternate = hashlib.sha512(password + salt + password).digest()
    first = hashlib.sha512(password + salt + _repeat_to(alternate, len(password)))
    length = len(password)
    while length:  # one step per bit of the password length, lowest bit first
        first.update(alternate if length & 1 else password)
        length >>= 1
    current = first.digest()
    p_seq = _repeat_to(hashlib.sha512(password * len(password)).digest(), len(password))
    s_seq = _repeat_to(hashlib.sha512(salt * (16 + current[0])).digest(), len(salt))
    for i in range(rounds):
        step = hashlib.sha512(p_seq if i & 1 else current)
        if i % 3:
            step.update(s_seq)
        if i % 7:
            step.update(p_seq)
        step.update(current if i & 1 else p_seq)
        current = step.digest()
    return _encode(current)


def _encode(digest: bytes) -> str:
    """crypt's own base64: bytes taken in a fixed permutation, least significant 6 bits first."""
    out = []
    for i in range(21):
        a = (i * 22) % 63
        out.append(_b64_24bit(digest[a], digest[(a + 21) % 63], digest[(a + 42) % 63], 4))
    out.append(_b64_24bit(0, 0, digest[63], 2))
    return "".join(out)


def _b64_24bit(high: int, mid: int, low: int, count: int) -> str:
    word = (high << 16) | (mid << 8) | low
    chars = []
    for _ in range(count):
        chars.append(_ALPHABET[word & 0x3F])
        word >>= 6
    return "".join(chars)


# --- checking a hash someone wrote ---------------------------------------------------

_B64 = "[./0-9A-Za-z]"
_SHA_CRYPT = {"5": ("SHA-256", 43), "6": ("SHA-512", 86)}
_SHA_CRYPT_SHAPE = re.compile(rf"\$([56])\$(?:rounds=([0-9]+)\$)?({_B64}{{0,16}})\$({_B64}*)")
_YESCRYPT_SHAPE = re.compile(rf"\$y\${_B64}+\${_B64}+\${_B64}{{43}}")  # $y$<params>$<salt>$<hash>
_BCRYPT_SHAPE = re.compile(rf"\$2[aby]\$(0[4-9]|[12][0-9]|3[01])\${_B64}{{53}}")
LOCKED = ("!", "*", "!*")  # an account without a usable password


def crypt_hash_problem(value, *, name: str = "it", bcrypt: bool = False) -> str | None:
    """Why `value` is not a complete crypt(3) hash of a strong scheme, or None if it is one
    (or a lock marker: !, *).

    SHA-512 (`$6$`) and SHA-256 (`$5$`) need a salt of 1 to 16 characters and a hash of
    86 or 43 characters, rounds= (if given) from 1000 to 999999999; yescrypt (`$y$`) its
    parameters, salt and a 43-character hash; bcrypt (`$2b$`, only where `bcrypt` is
    allowed) a cost and 53 characters. A leading `!` (a locked account) is allowed.
    `name` is what the message calls the value; the message never repeats the value,
    which may be a password."""
    if value in LOCKED:
        return None
    if not isinstance(value, str):
        return f"{name} is not a crypt hash (it looks like a plaintext password)"
    hashed = value[1:] if value.startswith("!") else value
    if hashed.startswith(("$5$", "$6$")):
        scheme, length = _SHA_CRYPT[hashed[1]]
        match = _SHA_CRYPT_SHAPE.fullmatch(hashed)
        if not match or not match.group(3) or len(match.group(4)) != length:
            return (f"{name} is not a complete {scheme} crypt hash "
                    f"(${hashed[1]}$, a salt, $ and {length} characters)")
        if match.group(2) is not None and not 1000 <= int(match.group(2)) <= 999_999_999:
            return f"the rounds= of {name} is outside 1000 to 999999999"
        return None
    if hashed.startswith("$y$"):
        if _YESCRYPT_SHAPE.fullmatch(hashed):
            return None
        return f"{name} is not a complete yescrypt hash ($y$, parameters, $, a salt, $ and 43 characters)"
    if hashed.startswith(("$2a$", "$2b$", "$2y$")) and bcrypt:
        if _BCRYPT_SHAPE.fullmatch(hashed):
            return None
        return f"{name} is not a complete bcrypt hash ($2b$, a two-digit cost, $ and 53 characters)"
    if hashed.startswith("$1$"):
        return "MD5-crypt ($1$) password hashes are too weak"
    if re.fullmatch(r"[./0-9A-Za-z]{13}", hashed):
        return "DES-crypt password hashes are too weak"
    if hashed.startswith("$"):
        schemes = "$6$, $5$, $y$ or $2b$" if bcrypt else "$6$, $5$ or $y$"
        return f"{name} is not a crypt hash of a scheme bootgen accepts ({schemes})"
    return f"{name} is not a crypt hash (it looks like a plaintext password)"
