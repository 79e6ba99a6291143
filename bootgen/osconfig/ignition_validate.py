"""Ignition's config validation, run on the Ignition JSON bootgen is about to write.

Ignition (v2.20, specs 3.0.0 to 3.4.0) validates a config before it touches
the disk and refuses the whole config on any error; Butane `--strict` also
refuses its warnings. These are the rules that involve more than one value
(a file under a link the config creates, partitions that collide, a
filesystem label too long for its format, a unit whose contents do not parse,
a kernel argument both wanted and unwanted, ...). Single values are checked
while parsing (butane_checks.py).

`validate` returns findings as (Ignition JSON path, message, hint); `locate`
maps a JSON path back to the Butane tree, so each problem is reported at the
file, line and column of the value that caused it.
"""
from __future__ import annotations

import re
from typing import Any, Iterator

from .butane_schema import TYPES, ignition_key
from .butane_tree import Obj, Origin, Seq
from .ignition_syntax import has_install_section, unit_problem, url_problem

Finding = tuple[tuple, str, str]  # (JSON path, message, hint)

# Filesystem label limits in bytes, as Ignition checks them (mkfs would refuse or cut longer ones).
LABEL_LIMITS = {"ext4": 16, "xfs": 12, "vfat": 11, "swap": 15, "btrfs": 256}
PARTITION_LABEL_MAX = 36  # GPT partition names: 36 UTF-16 code units; Ignition counts bytes
SYSTEMD_DIR = "/etc/systemd/system/"


def validate(config: dict, version: tuple, variant: str = "flatcar") -> list[Finding]:
    findings: list[Finding] = []
    storage = config.get("storage") or {}
    findings += _storage_paths(storage, config.get("systemd") or {})
    findings += _filesystems(storage)
    for i, disk in enumerate(storage.get("disks") or []):
        findings += _partitions(disk, ("storage", "disks", i))
        if variant == "fcos":
            findings += _fcos_reserved_labels(disk, ("storage", "disks", i))
    findings += _resources(storage, version)
    findings += _owners(storage)
    findings += _units(config.get("systemd") or {})
    findings += _kernel_arguments(config.get("kernelArguments") or {})
    findings += _passwd(config.get("passwd") or {})
    return findings


# --- storage -------------------------------------------------------------------

_KINDS = ("files", "directories", "links")


def _entries(storage: dict) -> Iterator[tuple[str, int, dict]]:
    for kind in _KINDS:
        for i, entry in enumerate(storage.get(kind) or []):
            yield kind, i, entry


def _unit_paths(systemd: dict) -> dict[str, str]:
    """Paths Ignition writes for units and drop-ins with contents -> what writes them."""
    paths = {}
    for unit in systemd.get("units") or []:
        name = unit.get("name", "")
        if unit.get("contents"):
            paths[SYSTEMD_DIR + name] = f"unit {name}"
        for dropin in unit.get("dropins") or []:
            if dropin.get("contents"):
                paths[f"{SYSTEMD_DIR}{name}.d/{dropin.get('name', '')}"] = f"drop-in {dropin.get('name', '')} of {name}"
    return paths


def _storage_paths(storage: dict, systemd: dict) -> list[Finding]:
    findings = []
    unit_paths = _unit_paths(systemd)
    links = [(link.get("path", ""), link) for link in storage.get("links") or []]
    directories = {d.get("path") for d in storage.get("directories") or []}
    noun = {"files": "file", "directories": "directory", "links": "link"}
    for kind, i, entry in _entries(storage):
        path = entry.get("path", "")
        if path in unit_paths:
            findings.append(((("storage", kind, i, "path")),
                             f"'{path}' conflicts with systemd {unit_paths[path]}, which Ignition writes there",
                             "set the unit's contents under systemd.units, or drop this " + noun[kind]))
        for link_path, _ in links:
            if path.startswith(link_path + "/"):
                findings.append((("storage", kind, i, "path"),
                                 f"'{path}' is inside '{link_path}', which this config creates as a link",
                                 "Ignition does not write through links it creates; "
                                 "use the path under the link's target instead"))
                break
    for i, (_, link) in enumerate(links):
        if link.get("hard") and link.get("target") in directories:
            findings.append((("storage", "links", i, "target"),
                             f"hard link target '{link.get('target')}' is a directory this config creates",
                             "hard links cannot point at directories; use a symbolic link (hard: false)"))
        if link.get("hard"):
            for owner in ("user", "group"):
                if link.get(owner):
                    findings.append((("storage", "links", i, owner), f"{owner} is ignored for a hard link",
                                     "a hard link shares its target's owner; remove " + owner))
    return findings


def _owners(storage: dict) -> list[Finding]:
    findings = []
    for kind, i, entry in _entries(storage):
        for owner in ("user", "group"):
            value = entry.get(owner) or {}
            if "id" in value and "name" in value:
                findings.append((("storage", kind, i, owner), f"{owner} sets both id and name",
                                 "Ignition takes one of them; keep id or name"))
    return findings


def _filesystems(storage: dict) -> list[Finding]:
    findings = []
    disks = {d.get("device"): d for d in storage.get("disks") or []}
    for i, fs in enumerate(storage.get("filesystems") or []):
        at = ("storage", "filesystems", i)
        fmt = fs.get("format") or ""
        label = fs.get("label") or ""
        others = [name for name in ("path", "label", "uuid") if fs.get(name)]
        others += ["wipe_filesystem"] if fs.get("wipeFilesystem") else []
        others += [name for name, key in (("options", "options"), ("mount_options", "mountOptions")) if fs.get(key)]
        if not fmt and others:
            findings.append((at + ("format",), f"a filesystem with {', '.join(others)} needs a format",
                             "set format: ext4, xfs, btrfs, vfat or swap"))
        limit = LABEL_LIMITS.get(fmt)
        if label and limit is not None and len(label.encode("utf-8")) > limit:
            findings.append((at + ("label",), f"{fmt} labels are at most {limit} bytes; "
                             f"'{label}' has {len(label.encode('utf-8'))}", "shorten the label"))
        disk = disks.get(fs.get("device"))
        if disk is not None:
            if disk.get("partitions"):
                findings.append((at + ("device",), f"this filesystem overwrites {fs.get('device')}, "
                                 "which this config partitions", "put the filesystem on a partition, "
                                 "e.g. /dev/disk/by-partlabel/<label>"))
            elif disk.get("wipeTable") and not fs.get("wipeFilesystem"):
                findings.append((at + ("device",), f"{fs.get('device')} has wipe_table: true, "
                                 "so this filesystem will be wiped anyway", "set wipe_filesystem: true"))
    return findings


def _partitions(disk: dict, at: tuple) -> list[Finding]:
    findings = []
    parts = disk.get("partitions") or []
    numbers: dict[int, int] = {}
    labels: dict[str, int] = {}
    for j, part in enumerate(parts):
        here = at + ("partitions", j)
        number = part.get("number", 0)
        label = part.get("label")
        if label is not None:
            if len(label.encode("utf-8")) > PARTITION_LABEL_MAX:
                findings.append((here + ("label",), f"partition labels are at most {PARTITION_LABEL_MAX} bytes; "
                                 f"'{label}' has {len(label.encode('utf-8'))}", "shorten the label"))
            if ":" in label:
                findings.append((here + ("label",), f"partition label '{label}' contains ':'",
                                 "sgdisk would cut the label at the colon; remove it"))
            if label in labels:
                findings.append((here + ("label",), f"partition label '{label}' is used twice on {disk.get('device')} "
                                 f"(also partition {labels[label] + 1} in the list)",
                                 "give each partition its own label"))
            labels.setdefault(label, j)
        if number != 0:
            if number in numbers:
                findings.append((here + ("number",), f"partition number {number} is used twice on "
                                 f"{disk.get('device')}", "give each partition its own number"))
            numbers.setdefault(number, j)
        elif label is None:
            findings.append((here, "a partition needs a label or a number other than 0",
                             "set number: 1 or more, or a label"))
        if part.get("shouldExist") is False:
            extra = [name for name, key in (("label", "label"), ("start_mib", "startMiB"), ("size_mib", "sizeMiB"))
                     if key in part] + [name for name, key in (("type_guid", "typeGuid"), ("guid", "guid"))
                                        if part.get(key)]
            if extra:
                findings.append((here + ("shouldExist",), "should_exist: false deletes the partition, "
                                 f"so {', '.join(extra)} cannot be set", "remove " + ", ".join(extra)))
    if any(p.get("shouldExist") is False for p in parts) and any(p.get("number", 0) == 0 for p in parts):
        j = next(j for j, p in enumerate(parts) if p.get("shouldExist") is False)
        findings.append((at + ("partitions", j, "shouldExist"), "should_exist: false cannot be used on a disk "
                         "where a partition has number 0", "number every partition of this disk"))
    for j, part in enumerate(parts):
        start, size = part.get("startMiB"), part.get("sizeMiB")
        if not start or not size:
            continue  # a start or size of 0 is placed by sgdisk; Ignition cannot check those
        for k in range(j):
            other = parts[k]
            o_start, o_size = other.get("startMiB"), other.get("sizeMiB")
            if o_start and o_size and start <= o_start + o_size - 1 and o_start <= start + size - 1:
                findings.append((at + ("partitions", j, "startMiB"), f"this partition overlaps partition "
                                 f"{k + 1} in the list ({o_start} to {o_start + o_size - 1} MiB)",
                                 "move it or make one of them smaller"))
                break
    return findings


# Fedora CoreOS's own partitions, by label (Butane's fcos variant checks these).
FCOS_RESERVED_LABELS = {"BIOS-BOOT": 1, "PowerPC-PReP-boot": 1, "EFI-SYSTEM": 2, "boot": 3, "root": 4}


def _fcos_reserved_labels(disk: dict, at: tuple) -> list[Finding]:
    """A reserved label with another number makes a second partition of that name, unless the table is wiped."""
    if disk.get("wipeTable"):
        return []
    findings = []
    for j, part in enumerate(disk.get("partitions") or []):
        label = part.get("label")
        if label in FCOS_RESERVED_LABELS and part.get("number", 0) != FCOS_RESERVED_LABELS[label]:
            findings.append((at + ("partitions", j, "label"), f"on Fedora CoreOS, label '{label}' belongs to "
                             f"partition {FCOS_RESERVED_LABELS[label]}; this would create a second one",
                             f"set number: {FCOS_RESERVED_LABELS[label]} to change the existing partition, "
                             "or choose another label"))
    return findings


def _resources(storage: dict, version: tuple) -> Iterator[Finding]:
    findings = []
    for i, entry in enumerate(storage.get("files") or []):
        at = ("storage", "files", i)
        resources = [(at + ("contents",), entry.get("contents"))]
        resources += [(at + ("append", j), res) for j, res in enumerate(entry.get("append") or [])]
        for where, res in resources:
            if not res:
                continue
            if (res.get("verification") or {}).get("hash") is not None and res.get("source") is None:
                findings.append((where + ("verification", "hash"), "verification needs contents to verify",
                                 "set source, inline or local, or remove verification"))
            source = res.get("source")
            if source and not source.startswith("data:"):  # bootgen's own data: URLs are valid by construction
                problem = url_problem(source, version)
                if problem:
                    findings.append((where + ("source",), f"Ignition cannot use this source: {problem}", ""))
            seen: set[str] = set()
            for j, header in enumerate(res.get("httpHeaders") or []):
                name = header.get("name", "")
                if not name:
                    findings.append((where + ("httpHeaders", j, "name"), "an HTTP header needs a name", ""))
                elif name in seen:
                    findings.append((where + ("httpHeaders", j, "name"), f"HTTP header '{name}' is set twice",
                                     "keep one of them"))
                if header.get("value") == "":
                    findings.append((where + ("httpHeaders", j, "value"), f"HTTP header '{name}' has an empty value",
                                     "Ignition cannot send it; give it a value, or leave value out"))
                seen.add(name)
    return findings


# --- systemd ------------------------------------------------------------------------

def _units(systemd: dict) -> list[Finding]:
    findings = []
    units = systemd.get("units") or []
    by_name = {u.get("name"): u for u in units}
    for i, unit in enumerate(units):
        at = ("systemd", "units", i)
        name = unit.get("name", "")
        contents = unit.get("contents")
        problem = unit_problem(contents) if contents is not None else None
        if problem:
            findings.append((at + ("contents",), f"unit {name}: {problem}", _UNIT_HINT))
        elif unit.get("enabled") and contents and not has_install_section(contents):
            findings.append((at + ("enabled",), "the unit is enabled but has no [Install] section, "
                             "so enabling it does nothing", "add [Install] with WantedBy=multi-user.target"))
        for j, dropin in enumerate(unit.get("dropins") or []):
            text = dropin.get("contents")
            problem = unit_problem(text) if text is not None else None
            if problem:
                findings.append((at + ("dropins", j, "contents"), f"drop-in {dropin.get('name', '')}: {problem}",
                                 _UNIT_HINT))
        template = _template_of(name)
        if template and unit.get("enabled") and template in by_name:
            text = by_name[template].get("contents")
            if text and not unit_problem(text) and not has_install_section(text):
                findings.append((at + ("enabled",), f"enabling {name} does nothing: its template {template} "
                                 "has no [Install] section", "add [Install] with WantedBy=... to " + template))
    return findings


_UNIT_HINT = "systemd unit syntax: [Section] lines and Key=value lines; a long value continues with a trailing \\"


_INSTANCE = re.compile(r"(.+?)@(.+?)\.service", re.S)


def _template_of(name: str) -> str | None:
    """'getty@tty1.service' -> 'getty@.service'; None when name is not an instance of a service."""
    match = _INSTANCE.fullmatch(name)
    return match.group(1) + "@.service" if match else None


# --- kernel arguments and users ----------------------------------------------------

def _kernel_arguments(kargs: dict) -> list[Finding]:
    """Ignition treats both lists as one set: an argument may appear once in either."""
    findings = []
    seen: dict[str, str] = {}
    for key, butane in (("shouldExist", "should_exist"), ("shouldNotExist", "should_not_exist")):
        for j, arg in enumerate(kargs.get(key) or []):
            if arg in seen:
                where = "twice" if seen[arg] == butane else "in both should_exist and should_not_exist"
                findings.append((("kernelArguments", key, j), f"kernel argument '{arg}' is listed {where}",
                                 "keep it in one list, once"))
            seen.setdefault(arg, butane)
    return findings


def _passwd(passwd: dict) -> list[Finding]:
    findings = []
    for i, user in enumerate(passwd.get("users") or []):
        for key, what in (("sshAuthorizedKeys", "SSH key"), ("groups", "group")):
            seen = set()
            for j, value in enumerate(user.get(key) or []):
                if value in seen:
                    shown = value if key == "groups" else value[:40] + ("..." if len(value) > 40 else "")
                    findings.append((("passwd", "users", i, key, j), f"{what} '{shown}' is listed twice",
                                     "keep it once"))
                seen.add(value)
    return findings


# --- locating a JSON path in the Butane tree -----------------------------------------

_ALIASES: dict[tuple[str, str], tuple] = {
    ("resource", "source"): ("source", "inline", "local", ("remote", "url")),
    ("resource", "compression"): ("compression", ("remote", "compression")),
    ("resource", "verification"): ("verification", ("remote", "verification")),
    ("resource", "httpHeaders"): ("http_headers",),
    ("file", "contents"): ("contents",),
    ("file", "append"): ("append",),
    ("user", "sshAuthorizedKeys"): ("ssh_authorized_keys", "ssh_authorized_keys_local"),
    ("unit", "contents"): ("contents", "contents_local"),
    ("dropin", "contents"): ("contents", "contents_local"),
}


def locate(root: Obj, path: tuple) -> Origin:
    """The origin of the Butane value an Ignition JSON path came from (or its nearest ancestor)."""
    node: Any = root
    for part in path:
        child = _child(node, part)
        if child is None:
            break
        node = child
    return node.origin


def _child(node: Any, part: Any) -> Any:
    if isinstance(node, Seq):
        return node.items[part] if isinstance(part, int) and part < len(node.items) else None
    if not isinstance(node, Obj):
        return None
    candidates = _ALIASES.get((node.type, part))
    if candidates is None:
        candidates = tuple(name for name, field in TYPES[node.type].items()
                           if field.out is not None and ignition_key(name, field) == part)
    for candidate in candidates:
        steps = candidate if isinstance(candidate, tuple) else (candidate,)
        current = node
        for step in steps:
            current = current.fields.get(step) if isinstance(current, Obj) else None
        if current is not None:
            return current
    return None
