"""JSON Schema validation of site, profile and node files, with located problems.

The schemas live in `bootgen/schemas/` so editors can use them too. Errors are
turned into `Problem`s that point at the offending key or value with a message a
person can act on ("unknown field 'hostnme'; did you mean 'hostname'?") rather
than the raw jsonschema text.
"""
from __future__ import annotations

import difflib
import ipaddress
import json
import re
from functools import lru_cache
from importlib import resources
from typing import Iterator
from urllib.parse import urlsplit

import jsonschema
from jsonschema.exceptions import ValidationError
from referencing import Registry, Resource

from .errors import Problem
from .naming import is_dns_label, normalize_mac
from .source import SourceDoc, format_path

SCHEMA_NAMES = ("site", "profile", "node")

_FORMAT_MESSAGES = {
    "mac": "{!r} is not a MAC address (write aa:bb:cc:dd:ee:ff, AA-BB-CC-DD-EE-FF or aabb.ccdd.eeff)",
    "ipv4": "{!r} is not an IPv4 address",
    "ipv4-interface": "{!r} is not an IPv4 address in CIDR form such as 10.0.0.70/24",
    "ipv4-network": "{!r} is not an IPv4 network such as 10.0.0.0/24",
    "dns-label": "{!r} is not a valid host name (one DNS label: a-z, 0-9 and '-', at most 63 characters)",
    "http-url": "{!r} is not an http:// or https:// URL",
    "url": "{!r} is not a URL (http, https or file)",
}

# Characters a URL written into boot configs, dnsmasq.conf and scripts must not have:
# whitespace and control characters end a line or a word there, the others are
# quoting, comment or field syntax in one of them (and none belongs in a URL unencoded).
_URL_UNSAFE = re.compile(r"[\s\x00-\x1f\x7f-\x9f\u2028\u2029\"'`\\<>{}|^#,]")
_URL_UNSAFE_MESSAGE = ("{!r} has a character that cannot be written into the generated files "
                       "(whitespace, a control character, a quote, or one of \\<>{}|^#,`); percent-encode it")
# base_url also starts shell command lines and systemd units (installer mirrors, Tinkerbell
# actions): only characters that are plain words everywhere.
_BASE_URL_SAFE = re.compile(r"[A-Za-z0-9._~:/%@+=\[\]-]*")  # fullmatch: `$` matches before a final newline
_BASE_URL_MESSAGE = ("{!r} has a character the boot server's base URL may not have: use letters, digits "
                     "and -._~:/%@+=[] only (percent-encode anything else)")


def _checker() -> jsonschema.FormatChecker:
    checker = jsonschema.FormatChecker(formats=())
    checker.checks("mac")(lambda v: not isinstance(v, str) or normalize_mac(v) is not None)
    checker.checks("ipv4", raises=ValueError)(lambda v: not isinstance(v, str) or _parse(ipaddress.IPv4Address, v))
    checker.checks("ipv4-interface", raises=ValueError)(lambda v: not isinstance(v, str) or _cidr(v))
    checker.checks("ipv4-network", raises=ValueError)(lambda v: not isinstance(v, str) or _parse(ipaddress.IPv4Network, v))
    checker.checks("dns-label")(lambda v: not isinstance(v, str) or is_dns_label(v))
    checker.checks("http-url")(lambda v: not isinstance(v, str) or (_url(v, ("http", "https"))
                                                                     and bool(_BASE_URL_SAFE.fullmatch(v))))
    checker.checks("url")(lambda v: not isinstance(v, str) or _url(v, ("http", "https", "file")))
    return checker


def _parse(kind, value: str) -> bool:
    kind(value)
    return True


def _cidr(value: str) -> bool:
    if "/" not in value:
        raise ValueError("no prefix length")
    ipaddress.IPv4Interface(value)
    if host_address_problem(value):
        raise ValueError("not a host address")
    return True


def host_address_problem(value: str) -> tuple[str, str] | None:
    """(message, hint) when an interface address in CIDR form cannot be a machine's own
    address: its subnet's network or broadcast address (except in /31 and /32, which have
    neither, RFC 3021), or an unspecified, loopback, multicast or reserved address."""
    interface = ipaddress.IPv4Interface(value)
    ip, network = interface.ip, interface.network
    special = ("the unspecified" if ip.is_unspecified else "a loopback" if ip.is_loopback
               else "a multicast" if ip.is_multicast else "a reserved" if ip.is_reserved else None)
    if special:
        return (f"{value!r} is {special} address, not one a machine can be given",
                "give the machine's own address on its network, such as 10.0.0.70/24")
    if network.prefixlen <= 30 and ip in (network.network_address, network.broadcast_address):
        role = "network" if ip == network.network_address else "broadcast"
        return (f"{value!r} is the {role} address of {network}, not a host address",
                f"a machine on {network} has an address from {network.network_address + 1} "
                f"to {network.broadcast_address - 1}")
    return None


def _url(value: str, schemes: tuple[str, ...]) -> bool:
    if _URL_UNSAFE.search(value):
        return False
    parts = urlsplit(value)
    return parts.scheme in schemes and (bool(parts.netloc) or parts.scheme == "file")


@lru_cache(maxsize=None)
def python_pattern(pattern: str) -> re.Pattern:
    """A JSON Schema (ECMA-262) `pattern` as a Python regex with the same meaning.

    In ECMA-262 `$` matches only at the very end; in Python it also matches before a
    final newline, so `^[a-z]+$` would accept "eth0\n" and a value meant for one line
    of a generated file could end another. Every `$` outside a character class
    becomes `\\Z`."""
    out, in_class, i = [], False, 0
    while i < len(pattern):
        char = pattern[i]
        if char == "\\":
            out.append(pattern[i:i + 2])
            i += 2
            continue
        if in_class:
            in_class = char != "]"
        elif char == "[":
            in_class = True
            if pattern[i + 1:i + 2] == "]":  # `[]...]`: a leading ] is literal in Python (ECMA has no such class)
                out.append("[]")
                i += 2
                continue
        elif char == "$":
            char = "\\Z"
        out.append(char)
        i += 1
    return re.compile("".join(out))


def _pattern_keyword(validator, pattern, instance, schema):
    if validator.is_type(instance, "string") and not python_pattern(pattern).search(instance):
        yield ValidationError(f"{instance!r} does not match {pattern!r}")


_Validator = jsonschema.validators.extend(jsonschema.Draft202012Validator, {"pattern": _pattern_keyword})


@lru_cache(maxsize=None)
def _validators() -> dict[str, jsonschema.Draft202012Validator]:
    schemas = {name: _load_schema(name) for name in SCHEMA_NAMES + ("common",)}
    registry = Registry().with_resources(
        (schema["$id"], Resource.from_contents(schema)) for schema in schemas.values())
    checker = _checker()
    return {name: _Validator(schemas[name], registry=registry, format_checker=checker)
            for name in SCHEMA_NAMES}


def _load_schema(name: str) -> dict:
    text = resources.files("bootgen").joinpath("schemas", f"{name}.schema.json").read_text(encoding="utf-8")
    return json.loads(text)


def validate_doc(doc: SourceDoc, kind: str) -> list[Problem]:
    """Validate one loaded document against the schema for `kind`."""
    if not isinstance(doc.data, dict):
        return [Problem(doc.locate(()), f"a {kind} file must be a mapping of fields, not {_type_name(doc.data)}")]
    problems: list[Problem] = []
    for error in _validators()[kind].iter_errors(doc.data):
        problems.extend(_to_problems(error, doc))
    from .secrets_scan import doc_problems  # private keys and plaintext passwords in what is served

    problems.extend(doc_problems(doc, kind))
    return problems


def _to_problems(error: ValidationError, doc: SourceDoc) -> Iterator[Problem]:
    path = tuple(error.absolute_path)
    handler = _HANDLERS.get(error.validator, _default)
    yield from handler(error, doc, path)


def _additional(error: ValidationError, doc: SourceDoc, path: tuple) -> Iterator[Problem]:
    known = sorted(error.schema.get("properties", {}))
    for key in sorted(set(error.instance) - set(known)):
        close = difflib.get_close_matches(key, known, n=1)
        hint = f"did you mean '{close[0]}'?" if close else f"known fields: {', '.join(known)}"
        yield Problem(doc.locate(path + (key,), key=True), f"unknown field '{key}'", format_path(path + (key,)), hint)


def _required(error: ValidationError, doc: SourceDoc, path: tuple) -> Iterator[Problem]:
    missing = [name for name in error.validator_value if name not in error.instance]
    for name in missing:
        yield Problem(doc.locate(path), f"missing required field '{name}'", format_path(path))


def _format(error: ValidationError, doc: SourceDoc, path: tuple) -> Iterator[Problem]:
    if error.validator_value == "ipv4-interface" and isinstance(error.instance, str):
        problem = _host_problem(error.instance)
        if problem:
            yield Problem(doc.locate(path), problem[0], format_path(path), problem[1])
            return
    template = _FORMAT_MESSAGES.get(error.validator_value, "{!r} is not a valid " + str(error.validator_value))
    if error.validator_value in ("http-url", "url") and isinstance(error.instance, str) \
            and _URL_UNSAFE.search(error.instance):
        template = _URL_UNSAFE_MESSAGE
    if error.validator_value == "http-url" and isinstance(error.instance, str) \
            and _url(error.instance, ("http", "https")) and not _BASE_URL_SAFE.fullmatch(error.instance):
        template = _BASE_URL_MESSAGE
    yield Problem(doc.locate(path), template.replace("{!r}", repr(error.instance)), format_path(path))


def _host_problem(value: str) -> tuple[str, str] | None:
    try:
        return host_address_problem(value) if "/" in value else None
    except ValueError:
        return None


def _pattern(error: ValidationError, doc: SourceDoc, path: tuple) -> Iterator[Problem]:
    """A pattern's own message (`x-message` next to it in the schema), else jsonschema's."""
    template = error.schema.get("x-message") if isinstance(error.schema, dict) else None
    if not template:
        yield from _default(error, doc, path)
        return
    yield Problem(doc.locate(path), template.replace("{!r}", repr(error.instance)), format_path(path))


def _enum(error: ValidationError, doc: SourceDoc, path: tuple) -> Iterator[Problem]:
    choices = [str(c) for c in error.validator_value]
    close = difflib.get_close_matches(str(error.instance), choices, n=1)
    hint = f"did you mean '{close[0]}'?" if close else ""
    yield Problem(doc.locate(path), f"{error.instance!r} is not one of: {', '.join(choices)}", format_path(path), hint)


def _type(error: ValidationError, doc: SourceDoc, path: tuple) -> Iterator[Problem]:
    wanted = error.validator_value if isinstance(error.validator_value, list) else [error.validator_value]
    names = " or ".join(_SCHEMA_TYPES.get(t, t) for t in wanted)
    yield Problem(doc.locate(path), f"expected {names}, got {_type_name(error.instance)}", format_path(path))


def _one_of(error: ValidationError, doc: SourceDoc, path: tuple) -> Iterator[Problem]:
    options = [sorted(s.get("required", [])) for s in error.validator_value]
    if all(len(o) == 1 for o in options):
        names = " or ".join(f"'{o[0]}'" for o in options)
        yield Problem(doc.locate(path), f"give exactly one of {names}", format_path(path))
        return
    best = jsonschema.exceptions.best_match(error.context) if error.context else None
    yield from (_to_problems(best, doc) if best else _default(error, doc, path))


def _default(error: ValidationError, doc: SourceDoc, path: tuple) -> Iterator[Problem]:
    yield Problem(doc.locate(path), error.message, format_path(path))


def _type_name(value) -> str:
    names = {dict: "a mapping", list: "a list", str: "a string", bool: "a boolean", int: "an integer",
             float: "a number", type(None): "nothing (null)"}
    return names.get(type(value), type(value).__name__)


_SCHEMA_TYPES = {"object": "a mapping", "array": "a list", "string": "a string", "integer": "an integer",
                 "number": "a number", "boolean": "true or false", "null": "nothing"}

_HANDLERS = {
    "additionalProperties": _additional,
    "required": _required,
    "format": _format,
    "pattern": _pattern,
    "enum": _enum,
    "type": _type,
    "oneOf": _one_of,
    "anyOf": _pattern,  # an anyOf carries its own message (`x-message`)
}


def base_url_problem(value: str) -> str | None:
    """Why `value` cannot be a base_url (as site.yaml's is checked), or None."""
    if _checker().conforms(value, "http-url"):
        return None
    return (_URL_UNSAFE_MESSAGE if _URL_UNSAFE.search(value) else _FORMAT_MESSAGES["http-url"]).format(value)
