"""bootgen.passwords: SHA-512 crypt, checked against the specification and the system's crypt(3)."""
from __future__ import annotations

import re
import warnings

import pytest

from bootgen.osconfig.butane_checks import check_password_hash
from bootgen.passwords import hash_password

# Test vectors from Ulrich Drepper's "Unix crypt using SHA-256 and SHA-512".
SPEC_VECTORS = [
    ("Hello world!", "saltstring", 5000,
     "$6$saltstring$svn8UoSVapNtMuq1ukKS4tPQd8iKwSMHWjl/O817G3uBnIFNjnQJuesI68u4OTLiBFdcbYEdFCoEOfaS35inz1"),
    ("Hello world!", "saltstringsaltst", 10000,
     "$6$rounds=10000$saltstringsaltst$OW1/O6BYHV6BcXZu8QVeXbDWra3Oeqh0sbHbbMCVNSnCM/UrjmM0Dp8vOuZeHBy/YTBmSK6H9qs/y3RnOaw5v."),
]


@pytest.mark.parametrize("password,salt,rounds,expected", SPEC_VECTORS)
def test_specification_vectors(password, salt, rounds, expected):
    assert hash_password(password, salt=salt, rounds=rounds) == expected


def test_matches_system_crypt():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        crypt = pytest.importorskip("crypt")  # gone in Python 3.13; the spec vectors still run
    for password, salt in [("", "a"), ("x" * 200, "abcdefghijklmnop"), ("pässwörd", "ab/.")]:
        assert hash_password(password, salt=salt) == crypt.crypt(password, f"$6${salt}")


def test_random_salt_and_format():
    first, second = hash_password("secret"), hash_password("secret")
    assert first != second
    assert re.fullmatch(r"\$6\$[./0-9A-Za-z]{16}\$[./0-9A-Za-z]{86}", first)
    assert check_password_hash(first, (3, 3, 0)) == []


@pytest.mark.parametrize("salt", ["", "has$dollar", "x" * 17])
def test_bad_salt(salt):
    with pytest.raises(ValueError):
        hash_password("pw", salt=salt)
