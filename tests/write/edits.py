"""Edits of every input kind, clean builds to compare with, and a `bootgen watch` driver.

Used by test_differential.py. An edit is a small value (`Edit`) applied by
`apply_edit` to a work directory holding `site/` and `nodes/`; applying the
same edit to two directories with the same inputs gives the same inputs
again, so one sequence can drive a chain of fresh `bootgen build` processes
in one directory and one long-running `bootgen watch` in another.

Every write sets a strictly increasing mtime (ns), so (size, mtime_ns, inode)
changes even when an edit writes the bytes a file already had.
"""
from __future__ import annotations

import base64
import difflib
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import NamedTuple
from bootgen.plan import is_index_path

REPO = Path(__file__).resolve().parents[2]
BUILTIN_TEMPLATES = REPO / "bootgen" / "templates"
PASSWORD_HASH = ("$6$r5BaaYkys3XBVgNs$Il5bJI//lEMZmj6zNvVY2l1ZKOcmOGuF5XvjX9QoCKlyJZS8v/YWNwf."
                 "C9kVvfqbAeqYguXWn1SablhvwT9NI/")
BUILD_TIMEOUT = 120  # seconds for one `bootgen build` process
GPG_TIMEOUT = 60


# --- writing files the way editors do, with mtimes that always move ---------------------------------------

class _Clock:
    """Strictly increasing nanosecond timestamps (the kernel's file times are coarser than writes)."""

    def __init__(self) -> None:
        self._last = 0
        self._lock = threading.Lock()

    def next(self) -> int:
        with self._lock:
            self._last = max(time.time_ns(), self._last + 1_000_000)
            return self._last


CLOCK = _Clock()


def write(path: Path, data: str | bytes, *, rename_save: bool = False) -> None:
    """Write in place (same inode), or as editors that save by rename do (a new inode)."""
    data = data.encode() if isinstance(data, str) else data
    path.parent.mkdir(parents=True, exist_ok=True)
    stamp = CLOCK.next()
    if rename_save:
        temp = path.with_name(f".{path.name}.save~")
        temp.write_bytes(data)
        os.utime(temp, ns=(stamp, stamp))
        os.replace(temp, path)
    else:
        with open(path, "wb") as handle:
            handle.write(data)
        os.utime(path, ns=(stamp, stamp))


def remove(path: Path) -> None:
    path.unlink()
    parent = path.parent
    if parent.name == "templates" and not any(parent.iterdir()):
        parent.rmdir()


# --- editing YAML as text (comments stay; MACs are never re-typed by a YAML round trip) -----------------

def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" "))


def _is_content(line: str) -> bool:
    stripped = line.strip()
    return bool(stripped) and not stripped.startswith("#")


def _find(lines: list[str], start: int, end: int, indent: int, key: str) -> tuple[int, int] | None:
    """(i, j): lines[i] is `key:` at `indent` in [start, end); lines[i+1:j] are its children."""
    for i in range(start, end):
        line = lines[i]
        if _is_content(line) and _indent(line) == indent and line[indent:].startswith(key + ":"):
            j = last = i + 1
            while j < end:
                if _is_content(lines[j]):
                    if _indent(lines[j]) <= indent:
                        break
                    last = j + 1
                j += 1
            return i, last
    return None


def _child_indent(lines: list[str], i: int, j: int, indent: int) -> int:
    for line in lines[i + 1:j]:
        if _is_content(line):
            return _indent(line)
    return indent + 2


def set_path(text: str, path: tuple[str, ...], value: str | None) -> str:
    """Set (or with None, remove) the block-style mapping entry at `path` to a one-line YAML value."""
    lines = text.splitlines()
    start, end, indent = 0, len(lines), 0
    for depth, key in enumerate(path):
        found = _find(lines, start, end, indent, key)
        if found is None:
            if value is None:
                return text
            rest = path[depth:]
            new = [f"{' ' * (indent + 2 * k)}{name}:" for k, name in enumerate(rest[:-1])]
            new.append(f"{' ' * (indent + 2 * (len(rest) - 1))}{rest[-1]}: {value}")
            lines[end:end] = new
            return "\n".join(lines) + "\n"
        i, j = found
        if depth == len(path) - 1:
            lines[i:j] = [] if value is None else [f"{' ' * indent}{key}: {value}"]
            return "\n".join(lines) + "\n"
        inline = lines[i][indent + len(key) + 1:].split(" #")[0].strip()
        if inline:  # a flow value where a mapping is wanted: replace it by a block
            lines[i:j] = [f"{' ' * indent}{key}:"]
            j = i + 1
        start, end, indent = i + 1, j, _child_indent(lines, i, j, indent)
    return text


def set_list_item(text: str, path: tuple[str, ...], prefix: str, item: str) -> str:
    """In the block list at `path`, replace the item starting with `prefix`, or append `item`."""
    lines = text.splitlines()
    start, end, indent = 0, len(lines), 0
    for depth, key in enumerate(path):
        found = _find(lines, start, end, indent, key)
        if found is None:
            return set_path(text, path, f"[{item}]")
        i, j = found
        if depth < len(path) - 1:
            start, end, indent = i + 1, j, _child_indent(lines, i, j, indent)
            continue
        inline = lines[i][indent + len(key) + 1:].split(" #")[0].strip()
        if inline:  # a flow list written by an earlier edit
            import yaml

            items = [str(v) for v in yaml.safe_load(inline) or []]
            items = [v for v in items if not v.startswith(prefix)] + [item]
            lines[i:j] = [f"{' ' * indent}{key}: [{', '.join(items)}]"]
            return "\n".join(lines) + "\n"
        child = _child_indent(lines, i, j, indent)
        for k in range(i + 1, j):
            if lines[k].strip().startswith(f"- {prefix}"):
                lines[k] = f"{' ' * child}- {item}"
                return "\n".join(lines) + "\n"
        lines[j:j] = [f"{' ' * child}- {item}"]
        return "\n".join(lines) + "\n"
    return text


def top_value(text: str, key: str) -> str | None:
    match = re.search(rf"^{re.escape(key)}:\s*([^\s#]+)", text, re.M)
    return match.group(1) if match else None


# --- the site the sequences start from ---------------------------------------------------------------

class KeyMaterial:
    """An OpenPGP key pinned by the site, another key, and signed kernels (made once per session)."""

    def __init__(self, fingerprint: str, key: bytes, other_key: bytes, kernels: tuple[tuple[bytes, bytes], ...]):
        self.fingerprint = fingerprint
        self.key = key  # armored export of the pinned key
        self.other_key = other_key  # armored export of a key that is not the pinned one
        self.kernels = kernels  # (kernel bytes, detached signature) made with the pinned key

    def __repr__(self) -> str:  # short in Hypothesis's reports
        return f"KeyMaterial({self.fingerprint})"


def make_key_material(home: Path) -> KeyMaterial:
    home.mkdir(mode=0o700, parents=True, exist_ok=True)

    def gpg(*args: str) -> bytes:
        return subprocess.run(["gpg", "--homedir", str(home), "--batch", "--yes", "--pinentry-mode", "loopback",
                               "--passphrase", "", *args], capture_output=True, timeout=GPG_TIMEOUT,
                              check=True).stdout

    try:
        for name in ("lab", "other"):
            gpg("--quick-gen-key", f"{name} <{name}@bootgen.test>", "future-default", "default", "never")
        listing = gpg("--with-colons", "--list-keys", "<lab@bootgen.test>").decode()
        fingerprint = next(line.split(":")[9] for line in listing.splitlines() if line.startswith("fpr:"))
        kernels = []
        for i in range(3):
            data = f"lab kernel {i}\n".encode() * (40 + i)
            (home / "kernel").write_bytes(data)
            gpg("--local-user", fingerprint, "--detach-sign", "-o", str(home / "kernel.sig"), str(home / "kernel"))
            kernels.append((data, (home / "kernel.sig").read_bytes()))
        return KeyMaterial(fingerprint, gpg("--armor", "--export", "<lab@bootgen.test>"),
                           gpg("--armor", "--export", "<other@bootgen.test>"), tuple(kernels))
    finally:
        subprocess.run(["gpgconf", "--homedir", str(home), "--kill", "all"], capture_output=True, timeout=GPG_TIMEOUT)


LAB_SITE_YAML = """
keys:
  lab:
    file: keys/lab.asc
    fingerprint: {fingerprint}
"""

LAB_IMAGE_SET = """  lab:
    # Mirrored from files in site/: the kernel is signed with the lab key.
    mirror: true
    kernel:
      file: images/lab-vmlinuz
      signature: auto
      keys: [lab]
    initrds:
      - file: images/lab-initrd.img
        unsigned: true
"""

LAB_PROFILE = """# Flatcar live from the lab image set, with a Butane file that embeds a site file.
description: lab live boot
images: lab
os_config: ignition
variant: flatcar
install:
  disk: /dev/sda
kernel_args:
  - flatcar.autologin
  - ignition.config.url={{ config_url }}
ignition_files:
  - butane/lab.bu
"""

LAB_BUTANE = """variant: flatcar
version: 1.0.0
storage:
  files:
    - path: /etc/motd
      mode: 0644
      contents:
        inline: |
          Installed by bootgen.
    - path: /etc/lab-message
      mode: 0644
      contents:
        local: files/lab-motd.txt
"""

LAB_NODE = """# A lab machine booting the lab image set live.
hostname: lab-1
profile: lab-live
boot: live
interfaces:
  - mac: 02:00:00:00:00:11
    address: 10.0.0.90/24
"""


def make_baseline(root: Path, keys: KeyMaterial | None) -> None:
    """The repository's example site/ and nodes/; with `keys`, also a signed image set mirrored from
    site files, a profile using it with a `.bu` file that has `contents.local`, and a node."""
    shutil.copytree(REPO / "site", root / "site")
    shutil.copytree(REPO / "nodes", root / "nodes")
    if keys is None:
        return
    site = root / "site"
    text = (site / "site.yaml").read_text()
    text = text.replace("\nimages:\n", LAB_SITE_YAML.format(fingerprint=keys.fingerprint) + "\nimages:\n", 1)
    text = text.replace("\nexports:\n", "\n" + LAB_IMAGE_SET + "\nexports:\n", 1)
    (site / "site.yaml").write_text(text)
    (site / "keys").mkdir()
    (site / "keys" / "lab.asc").write_bytes(keys.key)
    (site / "images").mkdir()
    (site / "images" / "lab-vmlinuz").write_bytes(keys.kernels[0][0])
    (site / "images" / "lab-vmlinuz.sig").write_bytes(keys.kernels[0][1])
    (site / "images" / "lab-initrd.img").write_bytes(b"lab initrd 0\n" * 64)
    (site / "files").mkdir()
    (site / "files" / "lab-motd.txt").write_text("lab message 0\n")
    (site / "butane" / "lab.bu").write_text(LAB_BUTANE)
    (site / "profiles" / "lab-live.yaml").write_text(LAB_PROFILE)
    (root / "nodes" / "lab-1.yaml").write_text(LAB_NODE)


# --- edits ----------------------------------------------------------------------------------------------

KINDS = (
    "node_kernel_args", "node_boot", "node_disk", "node_vars", "node_profile", "node_add", "node_delete",
    "node_rename", "profile_disk", "profile_kernel_args", "profile_vars", "profile_add", "profile_delete",
    "site_disk", "site_kernel_args", "site_name", "template", "butane", "local_file", "image_url",
    "image_version", "image_rename", "image_file", "image_signed", "key_comment",
)
# Broken inputs, each kept (with the file's good bytes) until a "fix" edit restores them.
BREAKS = tuple("break:" + name for name in (
    "profile_field", "profile_yaml", "node_yaml", "node_mac", "site_yaml", "template", "butane",
    "local_missing", "key_other", "image_signature"))
FIX = "fix"
TEMPLATES = ("node.ipxe.j2", "pxelinux.cfg.j2", "grub.cfg-node.j2")
DISKS = "abcdefghijklmnop"


class Edit(NamedTuple):
    """One edit: `kind` (KINDS, BREAKS or FIX), `pick` chooses the file among those that exist (for a
    break, `value` does), `value` what to write."""

    kind: str
    pick: int = 0
    value: int = 0
    rename_save: bool = False


class _Inputs:
    """One work directory's inputs, as an edit sees them."""

    def __init__(self, root: Path, keys: KeyMaterial | None, rename_save: bool):
        self.root, self.keys, self.rename_save = root, keys, rename_save
        self.site, self.nodes = root / "site", root / "nodes"
        self.touched = 0  # files written, removed or renamed

    def rel(self, path: Path) -> str:
        return str(path.relative_to(self.root))

    def node_files(self) -> list[Path]:
        return sorted(p for p in self.nodes.glob("*.yaml"))

    def profile_files(self) -> list[Path]:
        return sorted(p for p in (self.site / "profiles").glob("*.yaml"))

    def node(self, pick: int) -> Path | None:
        files = self.node_files()
        return files[pick % len(files)] if files else None

    def profile(self, pick: int) -> Path | None:
        files = self.profile_files()
        return files[pick % len(files)] if files else None

    def write(self, path: Path, data: str | bytes) -> None:
        write(path, data, rename_save=self.rename_save)
        self.touched += 1

    def remove(self, path: Path) -> None:
        remove(path)
        self.touched += 1

    def rename(self, path: Path, new: Path) -> None:
        os.rename(path, new)
        self.touched += 1

    def edit_text(self, path: Path, change) -> str:
        before = path.read_text()
        self.write(path, change(before))
        return before

    # Files broken by `break`, with what they held before (None: absent), until `fix`.
    def pending(self) -> dict[str, str | None]:
        path = self.root / ".edits" / "pending.json"
        return json.loads(path.read_text()) if path.is_file() else {}

    def set_pending(self, pending: dict[str, str | None]) -> None:
        path = self.root / ".edits" / "pending.json"
        path.parent.mkdir(exist_ok=True)
        path.write_text(json.dumps(pending, sort_keys=True))

    def remember(self, path: Path) -> None:
        pending = self.pending()
        pending.setdefault(self.rel(path), base64.b64encode(path.read_bytes()).decode() if path.exists() else None)
        self.set_pending(pending)


class Applied(NamedTuple):
    description: str  # one line: the files and what was done to them
    touched: int  # files written, removed or renamed (0: the edit did not apply to these inputs)


def apply_edit(root: Path, edit: Edit, keys: KeyMaterial | None) -> Applied:
    """Apply `edit` to the inputs under `root`."""
    inputs = _Inputs(root, keys, edit.rename_save)
    if edit.kind.startswith("break:"):
        description = _break(inputs, edit.kind.split(":", 1)[1], edit.value)
    else:
        description = _EDITS[edit.kind](inputs, edit.pick, edit.value)
    renamed = edit.rename_save and inputs.touched and edit.kind not in ("node_delete", "node_rename")
    return Applied(description + (" (saved by rename)" if renamed else ""), inputs.touched)


def broken_files(root: Path) -> list[str]:
    """Files a `break` edit broke and no `fix` restored yet."""
    return sorted(_Inputs(root, None, False).pending())


def fix_all(root: Path, keys: KeyMaterial | None, *, comment: bool = False) -> Applied:
    """Restore every file a `break` edit broke."""
    inputs = _Inputs(root, keys, False)
    return Applied(_fix(inputs, 0, 1 if comment else 0), inputs.touched)


def _disk(value: int) -> str:
    return f"/dev/vd{DISKS[value % len(DISKS)]}"


def _uses_cloud_init(inputs: _Inputs, profile: str) -> bool:
    path = inputs.site / "profiles" / f"{profile}.yaml"
    return path.is_file() and "os_config: cloud-init" in path.read_text()


def _point_node(inputs: _Inputs, node: Path, profile: str) -> None:
    def change(text: str) -> str:
        text = set_path(text, ("profile",), profile)
        if _uses_cloud_init(inputs, profile) and "password_hash" not in text:
            text = set_path(text, ("cloud_init", "password_hash"), PASSWORD_HASH)
        return text
    inputs.edit_text(node, change)


def _node_kernel_args(inputs: _Inputs, pick: int, value: int) -> str:
    node = inputs.node(pick)
    if node is None:
        return "nothing (no node)"
    args = None if value == 0 else f"[edit={value}]"
    inputs.edit_text(node, lambda t: set_path(t, ("kernel_args",), args))
    return f"{inputs.rel(node)}: kernel_args = {args or '(removed)'}"


def _node_boot(inputs: _Inputs, pick: int, value: int) -> str:
    node = inputs.node(pick)
    if node is None:
        return "nothing (no node)"
    state = ("install", "live", "local")[value % 3]
    inputs.edit_text(node, lambda t: set_path(t, ("boot",), state))
    return f"{inputs.rel(node)}: boot = {state}"


def _node_disk(inputs: _Inputs, pick: int, value: int) -> str:
    node = inputs.node(pick)
    if node is None:
        return "nothing (no node)"
    inputs.edit_text(node, lambda t: set_path(t, ("install", "disk"), _disk(value)))
    return f"{inputs.rel(node)}: install.disk = {_disk(value)}"


def _node_vars(inputs: _Inputs, pick: int, value: int) -> str:
    node = inputs.node(pick)
    if node is None:
        return "nothing (no node)"
    url = f"http://10.0.0.5:8080/fcos/node-rootfs-{value}.img"
    inputs.edit_text(node, lambda t: set_path(t, ("vars", "rootfs_url"), url))
    return f"{inputs.rel(node)}: vars.rootfs_url = {url}"


def _node_profile(inputs: _Inputs, pick: int, value: int) -> str:
    node, profile = inputs.node(pick), inputs.profile(value)
    if node is None or profile is None:
        return "nothing (no node or profile)"
    _point_node(inputs, node, profile.stem)
    return f"{inputs.rel(node)}: profile = {profile.stem}"


def _node_add(inputs: _Inputs, pick: int, value: int) -> str:
    profile = inputs.profile(pick)
    if profile is None:
        return "nothing (no profile)"
    existing = sorted(inputs.nodes.glob(f"extra-{value}.yaml")) + sorted(inputs.nodes.glob(f"extra-{value}-r*.yaml"))
    path = existing[0] if existing else inputs.nodes / f"extra-{value}.yaml"
    text = (f"hostname: extra-{value}\nprofile: {profile.stem}\ninterfaces:\n"
            f"  - mac: 02:00:00:00:01:{value:02x}\n    address: 10.0.0.{100 + value}/24\n")
    if _uses_cloud_init(inputs, profile.stem):
        text += f"cloud_init:\n  password_hash: {PASSWORD_HASH}\n"
    inputs.write(path, text)
    return f"{inputs.rel(path)}: {'rewritten' if existing else 'new node'} with profile {profile.stem}"


def _node_delete(inputs: _Inputs, pick: int, value: int) -> str:
    files = inputs.node_files()
    if len(files) < 2:
        return "nothing (one node left)"
    node = files[pick % len(files)]
    inputs.remove(node)
    return f"{inputs.rel(node)}: deleted"


def _node_rename(inputs: _Inputs, pick: int, value: int) -> str:
    node = inputs.node(pick)
    if node is None:
        return "nothing (no node)"
    base = re.sub(r"-r\d+$", "", node.stem)
    for n in range(value, value + 100):
        new = node.with_name(f"{base}-r{n}.yaml")
        if not new.exists() and new != node:
            break
    inputs.rename(node, new)
    return f"{inputs.rel(node)}: renamed to {new.name}"


def _profile_disk(inputs: _Inputs, pick: int, value: int) -> str:
    profile = inputs.profile(pick)
    if profile is None:
        return "nothing (no profile)"
    inputs.edit_text(profile, lambda t: set_path(t, ("install", "disk"), _disk(value)))
    return f"{inputs.rel(profile)}: install.disk = {_disk(value)}"


def _profile_kernel_args(inputs: _Inputs, pick: int, value: int) -> str:
    profile = inputs.profile(pick)
    if profile is None:
        return "nothing (no profile)"
    inputs.edit_text(profile, lambda t: set_list_item(t, ("kernel_args",), "profile-edit=", f"profile-edit={value}"))
    return f"{inputs.rel(profile)}: kernel_args gets profile-edit={value}"


def _profile_vars(inputs: _Inputs, pick: int, value: int) -> str:
    profile = inputs.profile(pick)
    if profile is None:
        return "nothing (no profile)"
    url = f"http://10.0.0.5:8080/fcos/rootfs-{value}.img"
    inputs.edit_text(profile, lambda t: set_path(t, ("vars", "rootfs_url"), url))
    return f"{inputs.rel(profile)}: vars.rootfs_url = {url}"


def _profile_add(inputs: _Inputs, pick: int, value: int) -> str:
    source, nodes = inputs.profile(pick), inputs.node_files()
    if source is None or not nodes:
        return "nothing (no profile or node)"
    path = inputs.site / "profiles" / f"extra-{value}.yaml"
    existed = path.exists()
    text = set_list_item(source.read_text(), ("kernel_args",), "extra-profile=", f"extra-profile={value}")
    inputs.write(path, text)
    node = nodes[value % len(nodes)]
    _point_node(inputs, node, path.stem)
    return (f"{inputs.rel(path)}: {'rewritten as' if existed else 'new profile,'} a copy of {source.stem} with "
            f"kernel arg extra-profile={value}; {inputs.rel(node)}: profile = {path.stem}")


def _profiles_in_use(inputs: _Inputs) -> set[str]:
    used = set()
    site = inputs.site / "site.yaml"
    lines = site.read_text().splitlines() if site.is_file() else []
    defaults = _find(lines, 0, len(lines), 0, "defaults")
    if defaults is not None:
        i, j = defaults
        found = _find(lines, i + 1, j, _child_indent(lines, i, j, 0), "profile")
        if found is not None:
            used.add(lines[found[0]].split(":", 1)[1].split("#")[0].strip())
    for node in inputs.node_files():
        name = top_value(node.read_text(), "profile")
        if name:
            used.add(name)
    return used


def _profile_delete(inputs: _Inputs, pick: int, value: int) -> str:
    unused = [p for p in inputs.profile_files() if p.stem not in _profiles_in_use(inputs)]
    if not unused:
        return "nothing (every profile is in use)"
    profile = unused[pick % len(unused)]
    inputs.remove(profile)
    return f"{inputs.rel(profile)}: deleted (unused)"


def _site_disk(inputs: _Inputs, pick: int, value: int) -> str:
    site = inputs.site / "site.yaml"
    inputs.edit_text(site, lambda t: set_path(t, ("defaults", "install", "disk"), _disk(value)))
    return f"site/site.yaml: defaults.install.disk = {_disk(value)}"


def _site_kernel_args(inputs: _Inputs, pick: int, value: int) -> str:
    site = inputs.site / "site.yaml"
    inputs.edit_text(site, lambda t: set_list_item(t, ("defaults", "kernel_args"), "site-edit=", f"site-edit={value}"))
    return f"site/site.yaml: defaults.kernel_args gets site-edit={value}"


def _site_name(inputs: _Inputs, pick: int, value: int) -> str:
    site = inputs.site / "site.yaml"
    inputs.edit_text(site, lambda t: set_path(t, ("name",), f"example-{value}"))
    return f"site/site.yaml: name = example-{value}"


def _template(inputs: _Inputs, pick: int, value: int) -> str:
    name = TEMPLATES[pick % len(TEMPLATES)]
    path = inputs.site / "templates" / name
    if value == 0:
        if not path.exists():
            return f"nothing (site/templates/{name} is not there to remove)"
        inputs.remove(path)
        return f"site/templates/{name}: removed (the built-in one applies again)"
    first, rest = (BUILTIN_TEMPLATES / name).read_text().split("\n", 1)
    existed = path.exists()
    inputs.write(path, f"{first}\n# site template, edit {value}\n{rest}")
    how = "changed to" if existed else "added as"
    return f"site/templates/{name}: {how} the built-in one plus '# site template, edit {value}'"


def _butane(inputs: _Inputs, pick: int, value: int) -> str:
    files = sorted((inputs.site / "butane").glob("*.bu"))
    if not files:
        return "nothing (no .bu file)"
    path = files[pick % len(files)]
    inputs.edit_text(path, lambda t: re.sub(r"Installed by bootgen[^\n]*", f"Installed by bootgen (edit {value}).", t))
    return f"{inputs.rel(path)}: inline /etc/motd = 'Installed by bootgen (edit {value}).'"


def _local_file(inputs: _Inputs, pick: int, value: int) -> str:
    if not (inputs.site / "butane" / "lab.bu").exists():
        return "nothing (no lab.bu)"
    path = inputs.site / "files" / "lab-motd.txt"
    inputs.write(path, f"lab message {value}\n")
    return f"site/files/lab-motd.txt (contents.local of butane/lab.bu) = 'lab message {value}'"


def _image_url(inputs: _Inputs, pick: int, value: int) -> str:
    site = inputs.site / "site.yaml"
    part = "current" if value == 0 else str(value)
    inputs.edit_text(site, lambda t: re.sub(r"amd64-usr/[^/]+/flatcar_production_pxe\.vmlinuz",
                                            f"amd64-usr/{part}/flatcar_production_pxe.vmlinuz", t))
    return f"site/site.yaml: images.flatcar-stable.kernel.url = .../amd64-usr/{part}/flatcar_production_pxe.vmlinuz"


def _image_version(inputs: _Inputs, pick: int, value: int) -> str:
    site = inputs.site / "site.yaml"
    inputs.edit_text(site, lambda t: re.sub(r"version: 1010\.5\.\d+", f"version: 1010.5.{value}", t))
    return f"site/site.yaml: the CoreOS image set's version = 1010.5.{value}"


def _image_sets(text: str) -> list[str]:
    lines = text.splitlines()
    found = _find(lines, 0, len(lines), 0, "images")
    if found is None:
        return []
    i, j = found
    indent = _child_indent(lines, i, j, 0)
    return [line.strip().split(":")[0] for line in lines[i + 1:j] if _is_content(line) and _indent(line) == indent]


def _image_rename(inputs: _Inputs, pick: int, value: int) -> str:
    site = inputs.site / "site.yaml"
    sets = _image_sets(site.read_text())
    if not sets:
        return "nothing (no image set)"
    old = sets[pick % len(sets)]
    base = re.sub(r"-r\d+$", "", old)
    new = next(f"{base}-r{n}" for n in range(value, value + 100) if f"{base}-r{n}" not in sets)
    inputs.edit_text(site, lambda t: re.sub(rf"^  {re.escape(old)}:", f"  {new}:", t, count=1, flags=re.M))
    users = []
    for profile in inputs.profile_files():
        if top_value(profile.read_text(), "images") == old:
            inputs.edit_text(profile, lambda t: set_path(t, ("images",), new))
            users.append(profile.stem)
    return f"site/site.yaml: image set {old} renamed {new}; profiles {', '.join(users) or '(none)'} follow"


def _image_file(inputs: _Inputs, pick: int, value: int) -> str:
    path = inputs.site / "images" / "lab-initrd.img"
    if not path.exists():
        return "nothing (no lab image)"
    inputs.write(path, f"lab initrd {value}\n".encode() * 64)
    return f"site/images/lab-initrd.img (a mirrored site file) = 'lab initrd {value}' x 64"


def _image_signed(inputs: _Inputs, pick: int, value: int) -> str:
    path = inputs.site / "images" / "lab-vmlinuz"
    if inputs.keys is None or not path.exists():
        return "nothing (no lab image)"
    data, signature = inputs.keys.kernels[value % len(inputs.keys.kernels)]
    inputs.write(path.with_name("lab-vmlinuz.sig"), signature)
    inputs.write(path, data)
    return f"site/images/lab-vmlinuz and .sig = signed kernel variant {value % len(inputs.keys.kernels)}"


def _key_comment(inputs: _Inputs, pick: int, value: int) -> str:
    path = inputs.site / "keys" / "lab.asc"
    if inputs.keys is None or not path.exists():
        return "nothing (no key file)"
    begin = b"-----BEGIN PGP PUBLIC KEY BLOCK-----\n"
    comment = begin + f"Comment: edit {value}\n".encode()
    data = inputs.keys.key if value == 0 else inputs.keys.key.replace(begin, comment, 1)
    inputs.write(path, data)
    return f"site/keys/lab.asc: the same key, armor header {'removed' if value == 0 else f'Comment: edit {value}'}"


def _break(inputs: _Inputs, kind: str, value: int) -> str:
    if kind in ("profile_field", "profile_yaml"):
        path = inputs.profile(value)
        if path is None:
            return "nothing (no profile to break)"
        inputs.remember(path)
        extra = "instal:\n  disk: /dev/sdb\n" if kind == "profile_field" else "kernel_args: [unclosed\n"
        inputs.edit_text(path, lambda t: t + extra)
        what = "unknown field 'instal'" if kind == "profile_field" else "invalid YAML"
    elif kind in ("node_yaml", "node_mac"):
        path = inputs.node(value)
        if path is None:
            return "nothing (no node to break)"
        inputs.remember(path)
        if kind == "node_yaml":
            inputs.edit_text(path, lambda t: t + "vars: [unclosed\n")
            what = "invalid YAML"
        else:
            inputs.edit_text(path, lambda t: re.sub(r"mac: \S+", "mac: not-a-mac", t, count=1))
            what = "a MAC that is not one"
    elif kind == "site_yaml":
        path = inputs.site / "site.yaml"
        inputs.remember(path)
        inputs.edit_text(path, lambda t: t + "defaults: [unclosed\n")
        what = "invalid YAML"
    elif kind == "template":
        path = inputs.site / "templates" / "node.ipxe.j2"
        inputs.remember(path)
        inputs.write(path, "#!ipxe\n{% if %}\n")
        what = "a Jinja syntax error"
    elif kind == "butane":
        files = sorted((inputs.site / "butane").glob("*.bu"))
        if not files:
            return "nothing (no .bu file to break)"
        path = files[value % len(files)]
        inputs.remember(path)
        inputs.edit_text(path, lambda t: t + "storage_typo: {}\n")
        what = "unknown field 'storage_typo'"
    elif kind == "local_missing":
        path = inputs.site / "files" / "lab-motd.txt"
        if not path.exists():
            return "nothing (no contents.local file to remove)"
        inputs.remember(path)
        inputs.remove(path)
        what = "removed (butane/lab.bu names it in contents.local)"
    elif kind == "key_other":
        path = inputs.site / "keys" / "lab.asc"
        if inputs.keys is None or not path.exists():
            return "nothing (no key file)"
        inputs.remember(path)
        inputs.write(path, inputs.keys.other_key)
        what = "replaced by another key (not the pinned fingerprint)"
    else:  # image_signature
        path = inputs.site / "images" / "lab-vmlinuz"
        if not path.exists():
            return "nothing (no lab image)"
        inputs.remember(path)
        inputs.write(path, b"unsigned kernel\n" * 50)
        what = "bytes its signature does not match"
    return f"BREAK {inputs.rel(path)}: {what}"


def _fix(inputs: _Inputs, pick: int, value: int) -> str:
    pending = inputs.pending()
    if not pending:
        return "nothing (nothing broken)"
    done = []
    for rel, data in sorted(pending.items()):
        path = inputs.root / rel
        if data is None:
            if path.exists():
                inputs.remove(path)
            done.append(f"{rel} removed again")
            continue
        original = base64.b64decode(data)
        commented = value % 2 == 1 and rel.endswith(".yaml")
        inputs.write(path, original + (b"# fixed\n" if commented else b""))
        done.append(f"{rel} restored" + (" plus a '# fixed' line" if commented else ""))
    inputs.set_pending({})
    return "FIX " + "; ".join(done)


_EDITS = {name: globals()[f"_{name}"] for name in (*KINDS, FIX)}


# --- running bootgen ------------------------------------------------------------------------------------

def bootgen_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env["PYTHONUNBUFFERED"] = "1"
    env.pop("BOOTGEN_DEBUG", None)  # exit codes as users see them
    return env


def run_build(root: Path) -> subprocess.CompletedProcess:
    """`bootgen build --offline` as a fresh process in `root`."""
    return subprocess.run([sys.executable, "-m", "bootgen", "build", "--offline"], cwd=root, env=bootgen_env(),
                          capture_output=True, text=True, timeout=BUILD_TIMEOUT)


class Tree(NamedTuple):
    build_id: str | None  # the name of the tree `build` links to
    files: dict[str, bytes]


def live_tree(root: Path) -> Tree:
    out = root / "build"
    if not out.is_symlink():
        return Tree(None, {})
    tree = out.resolve()
    return Tree(tree.name, {str(p.relative_to(tree)): p.read_bytes() for p in sorted(tree.rglob("*")) if p.is_file()})


class Clean(NamedTuple):
    ok: bool
    tree: Tree
    output: str


def input_digest(root: Path) -> str:
    digest = hashlib.sha256()
    for top in ("site", "nodes"):
        for path in sorted((root / top).rglob("*")):
            if path.is_file():
                digest.update(f"{path.relative_to(root)}\0{path.stat().st_size}\0".encode())
                digest.update(path.read_bytes())
    return digest.hexdigest()


class CleanBuilds:
    """Clean builds (a fresh directory, a fresh process) of the inputs in a work directory,
    remembered by the inputs' bytes: a shrinking sequence asks for the same inputs again."""

    def __init__(self, scratch: Path):
        self.scratch = scratch
        self.known: dict[str, Clean] = {}

    def of(self, root: Path) -> Clean:
        key = input_digest(root)
        if key not in self.known:
            work = Path(tempfile.mkdtemp(prefix="clean-", dir=self.scratch))
            try:
                shutil.copytree(root / "site", work / "site")
                shutil.copytree(root / "nodes", work / "nodes")
                done = run_build(work)
                if done.returncode not in (0, 1):
                    raise AssertionError(f"a clean build crashed (exit {done.returncode}):\n{done.stdout}{done.stderr}")
                ok = done.returncode == 0
                tree = live_tree(work) if ok else Tree(None, {})
                self.known[key] = Clean(ok, tree, (done.stdout + done.stderr).strip())
            finally:
                shutil.rmtree(work, ignore_errors=True)
        return self.known[key]


def first_difference(expected: dict[str, bytes], actual: dict[str, bytes], actual_name: str) -> str | None:
    """The first path where two trees differ (boot files before the index, manifest.json and its
    shards, which differ whenever anything does), with a short diff and a count; None if the trees
    are equal."""
    differing = [path for path in sorted(expected.keys() | actual.keys()) if expected.get(path) != actual.get(path)]
    if not differing:
        return None
    differing.sort(key=is_index_path)
    path = differing[0]
    more = f" ({len(differing) - 1} more paths differ)" if len(differing) > 1 else ""
    if path not in actual:
        return f"{path}: in the clean tree, missing from the {actual_name} tree{more}"
    if path not in expected:
        return f"{path}: in the {actual_name} tree, not in the clean tree{more}"
    try:
        old, new = expected[path].decode().splitlines(), actual[path].decode().splitlines()
    except UnicodeDecodeError:
        return f"{path}: bytes differ ({len(expected[path])} bytes clean, {len(actual[path])} {actual_name}){more}"
    diff = list(difflib.unified_diff(old, new, "clean", actual_name, n=1, lineterm=""))[2:]
    shown = [_crop(line, diff) for line in diff[:14]] + (["..."] if len(diff) > 14 else [])
    sizes = f"{len(expected[path])} bytes clean, {len(actual[path])} {actual_name}"
    return f"{path}: bytes differ ({sizes}){more}\n    --- clean\n    +++ {actual_name}\n" + \
        "\n".join("    " + line for line in shown)


def _crop(line: str, diff: list[str]) -> str:
    """A long changed line, shown from a little before where the first changed pair of lines differs."""
    if len(line) <= 160:
        return line
    removed = next((d for d in diff if d.startswith("-")), "")
    added = next((d for d in diff if d.startswith("+")), "")
    start = 1 + len(os.path.commonprefix([removed[1:], added[1:]]))
    if line[0] not in "+-" or start < 100:
        return line[:160] + "..."
    return line[0] + "..." + line[start - 60:start + 100] + ("..." if len(line) > start + 100 else "")


# --- one `bootgen watch` process ------------------------------------------------------------------------

_OK = re.compile(r"\d+ files for \d+ nodes(?:: unchanged \(build ([0-9a-f]{12})\)| -> build ([0-9a-f]{12}) )")
FAILED = "build failed; still serving the last good tree"


def outcome(line: str) -> str | None:
    """'ok <build id prefix>' or 'failed' for a line that reports a build, else None."""
    match = _OK.search(line)
    if match:
        return "ok " + (match.group(1) or match.group(2))
    return "failed" if FAILED in line else None


def _inotify_watched(pid: int) -> set[int]:
    """Inodes of the directories process `pid` watches with inotify (from /proc/<pid>/fdinfo)."""
    watched = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            if os.readlink(fd) != "anon_inode:inotify":
                continue
            info = Path(f"/proc/{pid}/fdinfo/{fd.name}").read_text()
        except OSError:
            continue
        watched |= {int(m, 16) for m in re.findall(r"^inotify wd:\S+ ino:([0-9a-f]+)", info, re.M)}
    return watched


class WatchProcess:
    """`bootgen watch --offline` in `root`, its output (stdout and stderr) collected line by line."""

    START_TIMEOUT = 60
    SETTLE_TIMEOUT = 30  # seconds an edit may take to be reported (a missed event is caught after 2 s)
    QUIET = 3.0  # with no matching report: seconds of silence after the last report before judging
    SETTLED = 0.3  # after an edit of several files, the silence that says watch has seen them all

    def __init__(self, root: Path):
        self.root = root
        self.lines: list[str] = []
        self.last_line_at = time.monotonic()
        self.proc = subprocess.Popen([sys.executable, "-m", "bootgen", "watch", "--offline"], cwd=root,
                                     env=bootgen_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                     start_new_session=True)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))
            self.last_line_at = time.monotonic()

    def __enter__(self) -> "WatchProcess":
        return self

    def __exit__(self, *exc_info) -> None:
        self.kill()

    def started(self) -> str:
        """Wait for the first build's report and for the file watches; the report."""
        deadline = time.monotonic() + self.START_TIMEOUT
        while time.monotonic() < deadline and not any(outcome(line) for line in self.lines):
            self._check_alive()
            time.sleep(0.02)
        reports = [line for line in self.lines if outcome(line)]
        if not reports:
            raise AssertionError("bootgen watch reported no first build:\n" + "\n".join(self.lines))
        self._wait_for_watches(deadline)
        return reports[0]

    def _wait_for_watches(self, deadline: float) -> None:
        """watch starts watching after its first build and loading what edits need: wait until its
        inotify watches cover every directory under site/ and nodes/, so the first edit is not missed."""
        pid = self.proc.pid
        if not Path(f"/proc/{pid}/fdinfo").is_dir():
            time.sleep(2.5)  # no procfs: the 2 s idle check would catch a missed edit anyway
            return
        wanted = {p.stat().st_ino for top in ("site", "nodes") for p in [self.root / top, *(self.root / top).rglob("*")]
                  if p.is_dir()}
        while time.monotonic() < deadline:
            if wanted <= _inotify_watched(pid):
                return
            self._check_alive()
            time.sleep(0.02)
        raise AssertionError("bootgen watch did not start watching site/ and nodes/:\n" + "\n".join(self.lines))

    def _check_alive(self) -> None:
        if self.proc.poll() is not None:
            self._reader.join(timeout=5)
            raise AssertionError(f"bootgen watch exited ({self.proc.returncode}):\n" + "\n".join(self.lines))

    def settle(self, mark: int, expected: str, *, files: int = 1) -> tuple[bool, list[str]]:
        """After an edit of `files` files: wait until the latest report after `mark` is `expected`
        ('ok <id12>' or 'failed'), or reports stopped coming for QUIET seconds (a missed event is
        rebuilt after 2 s). After an edit of several files, a report matching early may be of a
        build that saw only some of them: then wait until watch is quiet for a moment, and judge
        its latest report. Returns (matched, the lines printed after `mark`)."""
        deadline = time.monotonic() + self.SETTLE_TIMEOUT
        while time.monotonic() < deadline:
            new = self.lines[mark:]
            reports = [o for o in map(outcome, new) if o]
            quiet = time.monotonic() - self.last_line_at
            if reports and reports[-1] == expected and (files == 1 or quiet >= self.SETTLED):
                return True, new
            if reports and quiet >= self.QUIET:
                return False, new
            self._check_alive()
            time.sleep(0.02)
        return False, self.lines[mark:]

    def stop(self) -> list[str]:
        """SIGTERM (as Ctrl-C: the state is saved); the lines printed while stopping."""
        mark = len(self.lines)
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError("bootgen watch did not stop within 30 s of SIGTERM")
        self._reader.join(timeout=5)
        return self.lines[mark:]

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=30)
        if self.proc.stdout is not None:
            self._reader.join(timeout=5)
            self.proc.stdout.close()
