"""Support for the field fuzzer (test_fuzz_fields.py): which fields of the example site can be
written, how a value is written into a file, and what "every generated file parses" means.

Fields are every scalar, map and list in site/site.yaml, site/profiles/*.yaml, site/butane/*.bu and
nodes/*.yaml, the keys of free-form maps (vars, images, keys, user_data), and optional fields the
schemas define that the example leaves out (added with a plausible context, then overwritten).

The readers of generated files come from tests/render/test_injection.py: models of iPXE's,
pxelinux's, dnsmasq's and nginx's own parsers, plus the real dnsmasq, nginx, grub-script-check
and sh where installed.
"""
from __future__ import annotations

import copy
import hashlib
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import unicodedata
import urllib.parse
from dataclasses import asdict, dataclass
from pathlib import Path

import yaml

from bootgen.publish.manifest import load_tree

ROOT = Path(__file__).resolve().parents[2]


def _load_injection():
    name = "bootgen_tests_render_injection"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, ROOT / "tests" / "render" / "test_injection.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


inj = _load_injection()

# --- fields ----------------------------------------------------------------------------------

KEY = "<key>"  # last path element: rename the key of the map at the path before it
FREE_MAPS = {"vars", "images", "keys", "user_data"}

KEY_ED = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBnVq1wTkq3Vb7ozJ0T1sJ2H2j4m8Qw9c0fJb6cQm2xv fuzz@example"
HASH = "$6$r5BaaYkys3XBVgNs$Il5bJI//lEMZmj6zNvVY2l1ZKOcmOGuF5XvjX9QoCKlyJZS8v/YWNwf.C9kVvfqbAeqYguXWn1SablhvwT9NI/"

# A Butane-shaped layer with one of most kinds of string the transpiler reads.
IGNITION = {
    "passwd": {"users": [{"name": "ops", "groups": ["wheel"], "shell": "/bin/bash", "uid": 1001,
                          "gecos": "Operator", "home_dir": "/home/ops", "primary_group": "ops",
                          "password_hash": HASH, "ssh_authorized_keys": [KEY_ED]}],
               "groups": [{"name": "ops", "gid": 1001}]},
    "storage": {
        "files": [{"path": "/etc/fuzz.conf", "mode": 0o644, "contents": {"inline": "a=b\n"},
                   "user": {"name": "root"}, "group": {"name": "root"}, "append": [{"inline": "c=d\n"}]},
                  {"path": "/etc/fuzz-motd", "contents": {"local": "butane/motd.bu"}},
                  {"path": "/opt/fuzz.bin", "contents": {"source": "http://10.0.0.5/fuzz.bin",
                                                         "verification": {"hash": "sha512-" + "0" * 128}}}],
        "directories": [{"path": "/var/lib/fuzz", "mode": 0o750}],
        "links": [{"path": "/etc/fuzz-link", "target": "/etc/fuzz.conf"}],
        "disks": [{"device": "/dev/vdb", "wipe_table": True,
                   "partitions": [{"label": "data", "number": 1, "size_mib": 1024}]}],
        "filesystems": [{"device": "/dev/disk/by-partlabel/data", "format": "ext4", "path": "/var/data",
                         "label": "data", "options": ["-b", "4096"]}],
    },
    "systemd": {"units": [{"name": "fuzz.service", "enabled": True,
                           "contents": "[Service]\nExecStart=/bin/true\n[Install]\nWantedBy=multi-user.target\n",
                           "dropins": [{"name": "10-fuzz.conf", "contents": "[Service]\nEnvironment=A=b\n"}]}]},
}
CLOUD_INIT = {"user": "ops", "password_hash": HASH, "packages": ["curl"], "late_commands": ["echo done"],
              "user_data": {"timezone": "UTC"}}
INSTALL = {"disk": "/dev/sda", "channel": "stable", "version": "1.2.3"}
VARS = {"fuzz": "value"}

# (file kind, path of the added subtree, subtree): optional fields the schemas allow.
EXTRAS = {
    "site": [
        (("dhcp", "interface"), "eth0"),
        (("dhcp",), {"mode": "full", "subnet": "10.0.0.0/24", "range": ["10.0.0.100", "10.0.0.200"],
                     "uefi_loader": "ipxe"}),
        (("server", "server_name"), "boot.example.com"),
        (("exports", "tinkerbell", "facility"), "onprem"),
        (("defaults", "install"), INSTALL),
        (("defaults", "cloud_init"), CLOUD_INIT),
        (("defaults", "vars"), VARS),
        (("defaults", "ignition"), IGNITION),
        (("images", "flatcar-stable", "version"), "3975.2.0"),
        (("images", "flatcar-stable", "kernel"), {"sha256": "0" * 64, "signature": "http://10.0.0.5/vmlinuz.sig"}),
        (("images", "flatcar-stable", "installer"), {"url": "http://10.0.0.5/flatcar_production_image.bin.bz2"}),
        (("keys",), {"fuzz-key": {"file": "keys/fuzz.asc", "fingerprint": "A" * 40}}),
    ],
    "profile": [
        (("install",), INSTALL),
        (("cloud_init",), CLOUD_INIT),
        (("vars",), VARS),
        (("ignition",), IGNITION),
        (("description",), "an OS"),
    ],
    "node": [
        (("interfaces", 0, "name"), "eth0"),
        (("interfaces", 0, "pxe"), True),
        (("ssh_authorized_keys",), [KEY_ED]),
        (("kernel_args",), ["quiet", "x={{ vars.fuzz | default('v') }}"]),
        (("install",), INSTALL),
        (("cloud_init",), CLOUD_INIT),
        (("vars",), VARS),
        (("ignition",), IGNITION),
        (("profile",), None),  # None: the value the node gets anyway (its profile or the default)
    ],
    "butane": [],
}


def kind_of(rel: str) -> str:
    if rel == "site/site.yaml":
        return "site"
    if rel.startswith("site/profiles/"):
        return "profile"
    if rel.startswith("nodes/"):
        return "node"
    return "butane"


@dataclass(frozen=True, eq=False)
class Field:
    file: str  # relative to the workspace
    path: tuple  # keys and indices; KEY last for a key rename
    extra: tuple | None = None  # (subtree path, subtree) added first, for an optional field
    existing: bool = True  # a scalar in the file as it is (so a raw splice is possible)

    def __str__(self):
        return f"{self.file}:{_dotted(self.path)}" + (" (optional, added)" if self.extra else "")


def _dotted(path) -> str:
    out = "$"
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else f".{part}"
    return out


def _scalars(doc, path=()):
    """Every scalar's path; the path of every map and list too (a value of the wrong type there),
    and a key path for each key of a free-form map."""
    if isinstance(doc, dict):
        if path:
            yield path
        for key, value in doc.items():
            if path and path[-1] in FREE_MAPS:
                yield path + (key, KEY)
            yield from _scalars(value, path + (key,))
    elif isinstance(doc, list):
        yield path
        for index, value in enumerate(doc):
            yield from _scalars(value, path + (index,))
    else:
        yield path


def enumerate_fields(workspace: Path) -> list[Field]:
    files = ["site/site.yaml", *sorted(str(p.relative_to(workspace)) for p in (workspace / "site").rglob("*")
                                       if p.suffix in (".yaml", ".bu") and p.name != "site.yaml"),
             *sorted(str(p.relative_to(workspace)) for p in (workspace / "nodes").glob("*.yaml"))]
    fields = []
    for rel in files:
        doc = yaml.safe_load((workspace / rel).read_text())
        fields += [Field(rel, path) for path in _scalars(doc)]
        for where, subtree in EXTRAS[kind_of(rel)]:
            if subtree is None:
                subtree = doc.get(where[-1], "flatcar-install")
            base = copy.deepcopy(doc)
            add_subtree(base, where, subtree)
            present = set(_scalars(doc))
            for path in _scalars(get_path(base, where), where):
                if path not in present:
                    fields.append(Field(rel, path, extra=(where, subtree), existing=False))
    unique = {}
    for field in fields:
        unique.setdefault((field.file, field.path), field)
    return sorted(unique.values(), key=lambda f: (f.file, repr(f.path)))


def add_subtree(doc, where, subtree):
    """Add an optional subtree: merged into a map that is there, appended to a list that is there."""
    try:
        present = get_path(doc, where)
    except (KeyError, IndexError, TypeError):
        present = None
    subtree = copy.deepcopy(subtree)
    if isinstance(present, dict) and isinstance(subtree, dict):
        for key, value in subtree.items():
            present.setdefault(key, value)
    elif isinstance(present, list) and isinstance(subtree, list):
        present.extend(subtree)
    elif present is None:
        set_path(doc, where, subtree)


def get_path(doc, path):
    for part in path:
        doc = doc[part]
    return doc


def set_path(doc, path, value):
    for part in path[:-1]:
        if isinstance(doc, dict):
            doc = doc.setdefault(part, {})
        else:
            doc = doc[part]
    doc[path[-1]] = value


def write_value(workspace: Path, original: str, field: Field, value, *, raw: bool, allow_unicode: bool) -> str:
    """The text of `field.file` with `value` in the field: re-serialised with yaml.safe_dump (the
    file stays valid YAML and the value arrives exactly), or, with `raw`, `value` spliced as-is
    where the scalar was written (the YAML may then be anything)."""
    if raw and field.existing and field.path[-1] != KEY:
        node = yaml.compose(original)
        for part in field.path:
            if isinstance(node, yaml.MappingNode):
                node = next(v for k, v in node.value if k.value == part)
            else:
                node = node.value[part]
        return original[:node.start_mark.index] + str(value) + original[node.end_mark.index:]
    doc = yaml.safe_load(original)
    if field.extra:
        add_subtree(doc, field.extra[0], field.extra[1])
    if field.path[-1] == KEY:
        parent = get_path(doc, field.path[:-2])
        old = field.path[-2]
        parent_items = list(parent.items())
        parent.clear()
        for key, item in parent_items:
            parent[value if key == old else key] = item
    else:
        set_path(doc, field.path, value)
    return yaml.safe_dump(doc, sort_keys=False, allow_unicode=allow_unicode, width=1 << 20)


def lands_as_text(text: str, field: Field) -> bool:
    """Whether the file `text` reads back with a string in the field (and not, say, an empty list
    where the field's list was, which may rightly take a line out of a generated file)."""
    try:
        doc = yaml.safe_load(text)
        if field.path[-1] == KEY:
            return isinstance(get_path(doc, field.path[:-2]), dict)
        return isinstance(get_path(doc, field.path), str)
    except (yaml.YAMLError, KeyError, IndexError, TypeError, ValueError):
        return False


def original_value(workspace: Path, field: Field):
    doc = yaml.safe_load((workspace / field.file).read_text())
    try:
        if field.path[-1] == KEY:
            return field.path[-2]
        return get_path(doc, field.path)
    except (KeyError, IndexError, TypeError):
        return get_path({field.extra[0][-1]: field.extra[1]}, field.path[len(field.extra[0]) - 1:])


# --- the live tree ---------------------------------------------------------------------------

def tree_digest(link: Path) -> tuple[str, dict[str, str]]:
    target = os.readlink(link)
    files = {}
    for path in sorted(link.resolve().rglob("*")):
        if path.is_file():
            files[str(path.relative_to(link.resolve()))] = hashlib.sha256(path.read_bytes()).hexdigest()
    return target, files


# --- what "parses" means, per generated file -------------------------------------------------

def file_kind(rel: str, manifest: dict) -> str:
    name = rel.rsplit("/", 1)[-1]
    if rel.endswith(".sha256"):
        return "sums"
    if rel == "manifest.json" or rel.startswith("pixiecore/") or rel.endswith((".ign", ".json")):
        return "json"
    if rel == "boot.ipxe" or rel.endswith(".ipxe"):
        return "ipxe"
    if rel.startswith("pxelinux.cfg/"):
        return "pxelinux"
    if rel.startswith("grub/grub.cfg"):
        return "grub"
    if rel.endswith((".yml", ".yaml")) or name in ("meta-data", "network-config", "user-data", "vendor-data"):
        return "yaml"
    if name == "install.sh":
        return "shell"
    if rel == "server/dnsmasq.conf":
        return "dnsmasq"
    if rel in ("server/nginx.conf", "server/nginx-secrets.conf"):
        return "nginx"
    if manifest.get(rel, {}).get("target") == "bootloader":
        return "binary"
    return "unknown"


class Checker:
    """Parses each generated file with its reader (once per content) and compares its structure
    with the file a known-good build generated at the same path (or for the same node, target and
    file name when the path is new)."""

    def __init__(self, scratch: Path):
        self.scratch = scratch
        self.parsed: dict[tuple[str, str], object] = {}  # (path, sha256) -> structure
        self.dnsmasq = shutil.which("dnsmasq")
        self.nginx = shutil.which("nginx")
        self.grub = shutil.which("grub-script-check")

    def learn(self, tree: Path) -> tuple[dict, dict]:
        """The structure of every file of a known-good tree, by path and by role (parsing it too)."""
        manifest = _manifest(tree)
        by_path = {rel: self.structure(tree, rel, manifest) for rel in _files(tree)}
        return by_path, {_role(rel, manifest): structure for rel, structure in by_path.items()}

    def check(self, tree: Path, baseline: tuple[dict, dict], *, same_structure: bool = True) -> None:
        """Every file in `tree` parses and (with `same_structure`) has the structure of its
        counterpart in `baseline`."""
        by_path, by_role = baseline
        manifest = _manifest(tree)
        for rel in _files(tree):
            structure = self.structure(tree, rel, manifest)
            if not same_structure:
                continue
            want = by_path.get(rel, by_role.get(_role(rel, manifest)))
            if want is not None and structure is not None:
                assert structure == want, (f"{rel} changed structure:\n  now {structure!r}\n  was {want!r}\n"
                                           f"--- {rel}\n{(tree / rel).read_text(errors='replace')[:4000]}")

    def structure(self, tree: Path, rel: str, manifest: dict):
        data = (tree / rel).read_bytes()
        key = (rel, hashlib.sha256(data).hexdigest())
        if key not in self.parsed:
            self.parsed[key] = self._parse(tree, rel, manifest)
        return self.parsed[key]

    def _parse(self, tree: Path, rel: str, manifest: dict):
        path = tree / rel
        kind = file_kind(rel, manifest)
        if kind in ("binary", "sums"):  # SHA256SUMS lines: checked on their own (verify_sums)
            return None
        try:
            text = path.read_bytes().decode("utf-8")
        except UnicodeDecodeError as exc:
            raise AssertionError(f"{rel} is not UTF-8: {exc}") from None
        parse = getattr(self, f"_{kind}", None)
        assert parse is not None, f"{rel}: a generated file of a kind the fuzzer does not know how to read"
        try:
            return parse(path, rel, text)
        except (AssertionError, ValueError, KeyError, TypeError, yaml.YAMLError,
                subprocess.CalledProcessError) as exc:
            raise AssertionError(f"{rel} does not parse: {type(exc).__name__}: {exc}\n--- {rel}\n"
                                 f"{text[:4000]}") from None

    def verify_sums(self, tree: Path) -> None:
        """The full index's SHA256SUMS lines list every file of the tree but the index's own,
        each with its digest."""
        from bootgen.plan import is_index_path, listing_dir
        from bootgen.publish.manifest import tree_sums

        listed = {}
        for line in tree_sums(listing_dir(tree)).splitlines():
            digest, name = line.split("  ", 1)
            listed[name] = digest
        files = {rel: hashlib.sha256((tree / rel).read_bytes()).hexdigest() for rel in _files(tree)
                 if not is_index_path(rel)}
        assert listed == files, "SHA256SUMS does not match the tree"

    # -- readers --

    def _json(self, path, rel, text):
        doc = json.loads(text)
        if rel.endswith((".ign", "ignition.json")):
            return _ignition_structure(doc)
        if rel.startswith("pixiecore/"):
            assert isinstance(doc["cmdline"], str) and isinstance(doc["kernel"], str)
            return sorted(doc)
        return None

    def _yaml(self, path, rel, text):
        if rel.endswith(("user-data", "vendor-data")) or rel.startswith("cloud-configs/") or "cloud-config" in rel:
            assert text.startswith("#cloud-config\n"), "a cloud-config starts with #cloud-config"
        docs = list(yaml.safe_load_all(text))
        for doc in docs:  # Tinkerbell templates carry a YAML document as a string
            if isinstance(doc, dict) and doc.get("kind") == "Template":
                template = yaml.safe_load(doc["spec"]["data"])
                actions = [a for task in template["tasks"] for a in task["actions"]]
                shells = [self._sh_c(a["command"][2]) for a in actions if a["command"][:2] == ["sh", "-c"]]
                return ([d.get("kind") for d in docs], [(a["name"], a["command"][:2]) for a in actions], shells)
        return [sorted(d) if isinstance(d, dict) else type(d).__name__ for d in docs]

    def _sh_c(self, script: str) -> list[int]:
        """The argument counts of the wget and sha512sum a Tinkerbell action's `sh -c` runs."""
        work = self.scratch / "sh-c"
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)
        stubs, log = inj._stubs(work, ["wget", "sha512sum"])
        subprocess.run(["/bin/sh", "-c", script], env={"PATH": str(stubs), "STUB_LOG": str(log)}, cwd=work,
                       timeout=30, check=True, capture_output=True)
        return [len(call) for call in inj._calls(log)]

    def _ipxe(self, path, rel, text):
        assert text.startswith("#!ipxe\n")
        _no_control(text)
        return [argv[0] for argv in inj.ipxe_commands(text)]

    def _pxelinux(self, path, rel, text):
        _no_control(text)
        return [keyword for keyword, _ in inj.pxelinux_lines(text)]

    def _grub(self, path, rel, text):
        _no_control(text)
        if self.grub:
            inj._grub_check(path)
        return grub_commands(text)

    def _shell(self, path, rel, text):
        _no_control(text)
        done = subprocess.run(["/bin/sh", "-n", str(path)], capture_output=True, text=True, timeout=30)
        assert done.returncode == 0, done.stderr
        work = self.scratch / "sh"
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)
        stubs, log = inj._stubs(work, ["wget", "sudo"])
        subprocess.run(["/bin/sh", str(path)], env={"PATH": str(stubs), "STUB_LOG": str(log)}, cwd=work,
                       timeout=30, check=True, capture_output=True)
        return [call[0] if call[0] != "-O" else "wget" for call in inj._calls(log)]

    def _dnsmasq(self, path, rel, text):
        _no_control(text)
        if self.dnsmasq:
            inj._dnsmasq_test(path)
        return [name for name, _ in inj.dnsmasq_options(text)]

    def _nginx(self, path, rel, text):
        _no_control(text)
        if self.nginx:
            work = self.scratch / "nginx"
            shutil.rmtree(work, ignore_errors=True)
            work.mkdir(parents=True)
            inj._nginx_test(work, text if rel == "server/nginx.conf" else f"server {{\n{text}}}\n")
        return inj._shape(inj.nginx_parse(text))


def _no_control(text: str) -> None:
    """A boot-loader or server config holds no control character but the newline ending each line
    (a carriage return, NUL or form feed cuts or splits a line in some reader)."""
    bad = sorted({c for c in text if c != "\n" and unicodedata.category(c) in ("Cc", "Zl", "Zp")})
    assert not bad, f"control characters {bad!r} in the file"


def grub_commands(text: str) -> list[str]:
    """The first word of every command in grub.cfg, as GRUB's sh-like reader splits them: at
    newlines and at unquoted `;`, `&&`, `||`, `|` and `&`; `#` starts a comment at a word's start."""
    commands, current, word, quote, i = [], [], None, None, 0

    def end_word():
        nonlocal word
        if word is not None:
            current.append(word)
        word = None

    def end_command():
        end_word()
        if current:
            commands.append(current[0])
        current.clear()

    while i < len(text):
        char = text[i]
        if quote == "'":
            if char == "'":
                quote = None
            else:
                word += char
        elif quote == '"':
            if char == '"':
                quote = None
            elif char == "\\" and i + 1 < len(text):
                word += text[i + 1]
                i += 1
            else:
                word += char
        elif char in "'\"":
            quote, word = char, word or ""
        elif char == "\\" and text[i + 1:i + 2] == "\n":
            i += 1
        elif char == "\\" and i + 1 < len(text):
            word = (word or "") + text[i + 1]
            i += 1
        elif char == "#" and word is None:
            while i + 1 < len(text) and text[i + 1] != "\n":
                i += 1
        elif char in " \t":
            end_word()
        elif char in "\n;&|":
            if text[i:i + 2] in ("&&", "||"):
                i += 1
            end_command()
        else:
            word = (word or "") + char
        i += 1
    assert quote is None, "unbalanced quote"
    end_command()
    return commands


def _ignition_structure(doc):
    """The Ignition version, the install unit's keys and the commands its ExecStart runs, the
    number of lines of /etc/hostname and the sections of each networkd file."""
    assert isinstance(doc["ignition"]["version"], str)
    out = {"version": doc["ignition"]["version"]}
    for unit in doc.get("systemd", {}).get("units", []):
        if unit["name"] == "bootgen-install.service":
            keys = inj._unit_keys(unit["contents"])
            argv = inj.systemd_words(dict(keys)["ExecStart"])
            assert argv[:2] == ["/usr/bin/sh", "-c"] and len(argv) == 3, argv
            out["install-unit"] = ([k for k, _ in keys], _sh_commands(argv[2]))
    for entry in doc.get("storage", {}).get("files", []):
        source = entry.get("contents", {}).get("source", "")
        if entry["path"] == "/etc/hostname" or entry["path"].startswith("/etc/systemd/network/10-bootgen-"):
            assert source.startswith("data:,") and not entry["contents"].get("compression"), entry
            body = urllib.parse.unquote(source[len("data:,"):])
            assert "\r" not in body and "\0" not in body, body
            lines = body.split("\n")
            if entry["path"] == "/etc/hostname":
                out["/etc/hostname"] = len(lines)
                continue
            keys = [line.split("=", 1)[0] for line in lines if line and not line.startswith("[")]
            assert set(keys) <= NETWORKD_KEYS and keys.count("MACAddress") == keys.count("Address") == 1, body
            out[entry["path"].rsplit("-", 1)[0]] = [line for line in lines if line.startswith("[")]
    return out


NETWORKD_KEYS = {"MACAddress", "Address", "Gateway", "DNS"}  # what bootgen writes; Gateway and DNS optional


def _sh_commands(script: str) -> list[str]:
    import tempfile

    with tempfile.TemporaryDirectory() as work:
        stubs, log = inj._stubs(Path(work), ["flatcar-install", "udevadm", "systemctl"])
        subprocess.run(["/bin/sh", "-c", script], env={"PATH": str(stubs), "STUB_LOG": str(log)}, cwd=work,
                       timeout=30, check=True, capture_output=True)
        return [call[0] if call[0] in ("settle", "reboot") else "flatcar-install" for call in inj._calls(log)]


def _manifest(tree: Path) -> dict:
    return {f.path: asdict(f) for f in load_tree(tree).files}


def _role(rel: str, manifest: dict) -> tuple:
    entry = manifest.get(rel, {})
    if not entry.get("node"):
        return ("path", rel)
    return (entry["node"], entry.get("target"), rel.rsplit("/", 1)[-1] if rel.startswith("configs/") else None)


def _files(tree: Path) -> list[str]:
    return sorted(str(p.relative_to(tree)) for p in tree.rglob("*") if p.is_file())
