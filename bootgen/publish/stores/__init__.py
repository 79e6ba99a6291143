"""Publish targets: each module here implements `bootgen.publish.protocol.Store` for one kind of destination.

A destination with a URL scheme (`s3://bucket/prefix`) goes to the module its
scheme names in SCHEMES; any other destination is a docroot path. A module
provides `open_store(destination, *, endpoint_url, jobs, tree)`, a context
manager yielding its Store and turning its library's failures into
PublishErrors. Modules are imported only when used (boto3 is slow to import).
"""
from __future__ import annotations

import importlib
import re
from contextlib import AbstractContextManager

from bootgen.errors import Location, Problem, PublishError

SCHEMES = {"s3": "bootgen.publish.stores.s3"}
DOCROOT = "bootgen.publish.stores.docroot"
_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*):")  # a URL, not a path


def is_url(destination: str) -> bool:
    return _SCHEME.match(destination) is not None


def store_module(destination: str):
    """The module that publishes to `destination`; an unknown scheme (or a typo such as s3:/b) is refused."""
    match = _SCHEME.match(destination)
    if match is None:
        return importlib.import_module(DOCROOT)
    scheme = match.group(1).lower()
    if scheme not in SCHEMES or not destination[match.end():].startswith("//"):
        known = ", ".join(f"{s}://" for s in SCHEMES)
        raise PublishError(Problem(Location(destination), "unsupported destination scheme",
                                   hint=f"use {known}... or a directory path"))
    return importlib.import_module(SCHEMES[scheme])


def open_store(destination: str, **options) -> AbstractContextManager:
    return store_module(destination).open_store(destination, **options)
