"""What bootgen accepts in a Butane-shaped config, as one table per object type.

Every key a user may write is listed here, so an unknown key is always an
error with a "did you mean" hint rather than something silently dropped. Each
entry says how the value is checked, which Ignition key it becomes, since
which Ignition spec version it exists, and how entries merge across layers.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass

# Ignition spec versions bootgen can write (all checked by Ignition v2.20's validation).
SUPPORTED_VERSIONS = ("3.0.0", "3.1.0", "3.2.0", "3.3.0", "3.4.0")
VARIANTS = ("flatcar", "fcos")

# Butane's config versions and the Ignition spec version each one writes (Butane v0.23.0).
BUTANE_VERSIONS = {
    "fcos": {"1.0.0": "3.0.0", "1.1.0": "3.1.0", "1.2.0": "3.2.0", "1.3.0": "3.2.0", "1.4.0": "3.3.0",
             "1.5.0": "3.4.0", "1.6.0": "3.5.0"},
    "flatcar": {"1.0.0": "3.3.0", "1.1.0": "3.4.0"},
}


def butane_versions_for(variant: str, ignition_version: str) -> list[str]:
    """The Butane versions of a variant that write the given Ignition version."""
    return [b for b, i in BUTANE_VERSIONS.get(variant, {}).items() if i == ignition_version]


@dataclass(frozen=True)
class Field:
    """How one Butane key is read, checked, merged and written to Ignition."""

    kind: str  # str | int | bool | mode | obj | list | drop | unsupported | forbidden
    obj: str = ""  # object type, for kind obj and for lists of objects
    item: str = ""  # list item kind: "str" or "obj"
    out: str | None = ""  # Ignition key; "" means camelCase of the Butane key; None means translated by hand
    since: str = "3.0.0"  # first Ignition spec version that has the field
    required: bool = False
    check: str = ""  # name of a value check in butane_checks.CHECKS
    key: str = ""  # lists of objects: the field that identifies an entry across layers
    merge: str = "append"  # lists of objects: replace | deep | unit (see butane.py docstring)
    variants: tuple = VARIANTS
    note: str = ""  # hint for unsupported and forbidden keys
    unique: bool = False  # lists of strings: Ignition refuses a value listed twice
    butane: bool = False  # a Butane-only key: `since` is the Ignition version of the Butane release that added it


def _s(**kw) -> Field:
    return Field("str", **kw)


def _i(**kw) -> Field:
    return Field("int", **kw)


def _b(**kw) -> Field:
    return Field("bool", **kw)


def _o(obj: str, **kw) -> Field:
    return Field("obj", obj=obj, **kw)


def _lo(obj: str, **kw) -> Field:
    return Field("list", obj=obj, item="obj", **kw)


def _ls(**kw) -> Field:
    return Field("list", item="str", **kw)


def _unsupported(note: str) -> Field:
    return Field("unsupported", note=note)


_LEGACY_FILESYSTEM = Field("drop", check="legacy_filesystem")

TYPES: dict[str, dict[str, Field]] = {
    "root": {
        "variant": _s(out=None, check="variant"),
        "version": _s(out=None, check="butane_version"),
        "storage": _o("storage"),
        "systemd": _o("systemd"),
        "passwd": _o("passwd"),
        "kernel_arguments": _o("kernel_arguments", since="3.3.0"),
        "ignition": _unsupported("config merge/replace, timeouts, proxy and TLS settings are not translated yet; "
                                 "serve the extra config as a file or ask for this feature"),
        "boot_device": _unsupported("boot device mirroring/LUKS is not translated yet"),
        "grub": _unsupported("GRUB users are not translated yet"),
    },
    "storage": {
        "files": _lo("file", key="path", merge="replace"),
        "directories": _lo("directory", key="path", merge="replace"),
        "links": _lo("link", key="path", merge="replace"),
        "disks": _lo("disk", key="device", merge="replace"),
        "filesystems": _lo("filesystem", key="device", merge="replace"),
        "raid": _unsupported("software RAID is not translated yet; configure it in the installer instead"),
        "luks": _unsupported("LUKS volumes are not translated yet"),
        "trees": _unsupported("list the files one by one under storage.files with contents.local"),
    },
    "file": {
        "path": _s(required=True, check="path"),
        "overwrite": _b(),
        "mode": Field("mode", check="file_mode"),
        "user": _o("owner"),
        "group": _o("owner"),
        "contents": _o("resource", out=None),
        "append": _lo("resource", out=None),
        "filesystem": _LEGACY_FILESYSTEM,
    },
    "directory": {
        "path": _s(required=True, check="path"),
        "overwrite": _b(),
        "mode": Field("mode", check="dir_mode"),
        "user": _o("owner"),
        "group": _o("owner"),
        "filesystem": _LEGACY_FILESYSTEM,
    },
    "link": {
        "path": _s(required=True, check="path"),
        "overwrite": _b(),
        "user": _o("owner"),
        "group": _o("owner"),
        "target": _s(required=True, check="link_target"),
        "hard": _b(),
        "filesystem": _LEGACY_FILESYSTEM,
    },
    "owner": {"id": _i(), "name": _s()},
    "resource": {
        "inline": _s(out=None),
        "local": _s(out=None, check="local_path", since="3.1.0", butane=True),
        "source": _s(out=None, check="source_url"),
        "remote": _o("remote", out=None),  # Container Linux Config (ct) spelling of `source`
        "compression": _s(out=None, check="compression"),
        "verification": _o("verification", out=None),
        "http_headers": _lo("http_header", out=None, since="3.1.0"),
    },
    "remote": {
        "url": _s(required=True, check="source_url"),
        "compression": _s(check="compression"),
        "verification": _o("verification"),
    },
    "verification": {"hash": _s(check="hash")},
    "http_header": {"name": _s(required=True), "value": _s()},
    "disk": {
        "device": _s(required=True, check="device"),
        "wipe_table": _b(),
        "partitions": _lo("partition"),
    },
    "partition": {
        "label": _s(),
        "number": _i(),
        "size_mib": _i(out="sizeMiB"),
        "start_mib": _i(out="startMiB"),
        "type_guid": _s(check="guid"),
        "guid": _s(check="guid"),
        "wipe_partition_entry": _b(),
        "should_exist": _b(),
        "resize": _b(since="3.2.0"),
    },
    "filesystem": {
        "device": _s(required=True, check="device"),
        "format": _s(check="fs_format"),
        "path": _s(check="fs_path"),
        "wipe_filesystem": _b(),
        "label": _s(),
        "uuid": _s(),  # vfat uses short ids like 1234-ABCD, so no GUID check
        "options": _ls(),
        "mount_options": _ls(since="3.1.0"),
        "with_mount_unit": _unsupported("write the .mount unit under systemd.units yourself"),
    },
    "systemd": {"units": _lo("unit", key="name", merge="unit")},
    "unit": {
        "name": _s(required=True, check="unit_name"),
        "enabled": _b(),
        "mask": _b(),
        "contents": _s(),
        "contents_local": _s(out=None, check="local_path", since="3.4.0", butane=True),
        "dropins": _lo("dropin", key="name", merge="replace"),
    },
    "dropin": {
        "name": _s(required=True, check="dropin_name"),
        "contents": _s(),
        "contents_local": _s(out=None, check="local_path", since="3.4.0", butane=True),
    },
    "passwd": {
        "users": _lo("user", key="name", merge="deep"),
        "groups": _lo("group", key="name", merge="deep"),
    },
    "user": {
        "name": _s(required=True),
        "password": Field("forbidden", note="run `bootgen hash-password` and put the result in password_hash"),
        "password_hash": _s(check="password_hash"),
        "ssh_authorized_keys": _ls(check="ssh_key", unique=True),
        "ssh_authorized_keys_local": _ls(out=None, check="local_path", since="3.4.0", butane=True),
        "uid": _i(),
        "gecos": _s(),
        "home_dir": _s(check="path"),
        "no_create_home": _b(),
        "primary_group": _s(),
        "groups": _ls(unique=True),
        "no_user_group": _b(),
        "no_log_init": _b(),
        "shell": _s(),
        "system": _b(),
        "should_exist": _b(since="3.2.0"),
    },
    "group": {
        "name": _s(required=True),
        "gid": _i(),
        "password_hash": _s(check="password_hash"),
        "system": _b(),
        "should_exist": _b(since="3.2.0"),
    },
    "kernel_arguments": {"should_exist": _ls(unique=True), "should_not_exist": _ls(unique=True)},
}

# Ignition keys that camelCase does not spell right.
_OUT_NAMES = {"size_mib": "sizeMiB", "start_mib": "startMiB"}


def ignition_key(butane_key: str, field: Field) -> str:
    """The Ignition JSON key for a Butane key (`home_dir` -> `homeDir`)."""
    if field.out:
        return field.out
    if butane_key in _OUT_NAMES:
        return _OUT_NAMES[butane_key]
    head, *rest = butane_key.split("_")
    return head + "".join(part.capitalize() for part in rest)


@functools.lru_cache(maxsize=64)  # a few versions, compared for every field of every config
def version_tuple(version: str) -> tuple[int, ...]:
    """'3.3.0' -> (3, 3, 0), for comparing spec versions."""
    return tuple(int(part) for part in version.split("."))
