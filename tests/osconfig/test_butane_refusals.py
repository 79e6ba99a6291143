"""A corpus of configs bootgen must refuse, each with its exact message and position."""
from __future__ import annotations

import re
import subprocess
import textwrap

import pytest

from bootgen.errors import RenderError
from bootgen.osconfig.butane import build_ignition
from bootgen.osconfig.butane_checks import check_dir_mode, check_file_mode
from bootgen.passwords import hash_password

ED_BLOB = "AAAAC3NzaC1lZDI1NTE5AAAAIEl6E4+bBVjAGw0gD117cejmn42cizXUdSEJ19MCR9U6"
WEAK_HINT = "run `bootgen hash-password` and put its output in password_hash"


def user(field: str) -> str:
    """A node file whose user `core` has one extra field, the offending one on line 5."""
    return f"ignition:\n  passwd:\n    users:\n      - name: core\n        {field}\n"


def file_entry(field: str) -> str:
    """A node file with one file entry; `field` sits on line 5."""
    return f"ignition:\n  storage:\n    files:\n      - path: /etc/x\n        {field}\n"


# (id, yaml, kwargs for build_ignition, line, column, field path, message, hint)
CASES = [
    ("putty-key", user("ssh_authorized_keys: ['PuTTY-User-Key-File-3: ssh-ed25519']"), {}, 5, 31,
     "$.ignition.passwd.users[0].ssh_authorized_keys[0]", "this is a private key, not a public key", None),
    ("not-a-key", user(f"ssh_authorized_keys: ['{ED_BLOB}']"), {}, 5, 31,
     "$.ignition.passwd.users[0].ssh_authorized_keys[0]",
     "'AAAAC3NzaC1lZDI1NTE5AAAAIEl6E4+bBVjAGw0g...' does not look like an OpenSSH public key",
     "paste one line of a .pub file, starting with ssh-ed25519, ssh-rsa, ecdsa-sha2-... or sk-..."),
    ("key-type-mismatch", user(f"ssh_authorized_keys: ['ssh-rsa {ED_BLOB}']"), {}, 5, 31,
     "$.ignition.passwd.users[0].ssh_authorized_keys[0]", "the key data is for 'ssh-ed25519', not ssh-rsa",
     "copy the whole line of the .pub file; the key may be truncated"),
    ("plaintext-password", user("password: hunter2"), {}, 5, 9, "$.ignition.passwd.users[0].password",
     "'password' is not allowed: it would put a plaintext secret in the served config",
     "run `bootgen hash-password` and put the result in password_hash"),
    ("hash-is-plaintext", user("password_hash: hunter2"), {}, 5, 24, "$.ignition.passwd.users[0].password_hash",
     "password_hash is not a crypt hash (it looks like a plaintext password)", WEAK_HINT),
    ("md5-crypt", user("password_hash: $1$abc$q8UwIHmflFKbQfL3Jp6Al0"), {}, 5, 24,
     "$.ignition.passwd.users[0].password_hash", "MD5-crypt ($1$) password hashes are too weak", WEAK_HINT),
    ("des-crypt", user("password_hash: abJnggxhB/yWI"), {}, 5, 24,
     "$.ignition.passwd.users[0].password_hash", "DES-crypt password hashes are too weak", WEAK_HINT),
    ("relative-path", file_entry("overwrite: true").replace("/etc/x", "etc/x"), {}, 4, 15,
     "$.ignition.storage.files[0].path", "path 'etc/x' is not absolute", "Ignition paths start with /, e.g. /etc/hostname"),
    ("dotdot-path", file_entry("overwrite: true").replace("/etc/x", "/etc/../shadow"), {}, 4, 15,
     "$.ignition.storage.files[0].path", "path '/etc/../shadow' contains a '..' segment", "write the path without '..'"),
    ("unsimplified-path", file_entry("overwrite: true").replace("/etc/x", "/etc/./x/"), {}, 4, 15,
     "$.ignition.storage.files[0].path", "path '/etc/./x/' is not in its simplest form", "write it as /etc/x"),
    ("relative-dir", "ignition:\n  storage:\n    directories:\n      - path: var/lib\n", {}, 4, 15,
     "$.ignition.storage.directories[0].path", "path 'var/lib' is not absolute", None),
    ("decimal-dir-mode", "ignition:\n  storage:\n    directories:\n      - path: /v\n        mode: 755\n", {}, 5, 15,
     "$.ignition.storage.directories[0].mode", "mode 755 is decimal (octal 1363), which is not a sensible permission",
     "YAML reads 755 as a decimal number; remember the leading zero: 0755"),
    ("mode-out-of-range", file_entry("mode: 99999"), {}, 5, 15, "$.ignition.storage.files[0].mode",
     "mode 99999 is out of range", "modes are octal numbers from 0 to 07777, e.g. 0644"),
    ("unknown-key", user("ssh_authorised_keys: []"), {}, 5, 9, "$.ignition.passwd.users[0].ssh_authorised_keys",
     "unknown key 'ssh_authorised_keys'", "did you mean 'ssh_authorized_keys'?"),
    ("ignition-spelling", user("sshAuthorizedKeys: []"), {}, 5, 9, "$.ignition.passwd.users[0].sshAuthorizedKeys",
     "unknown key 'sshAuthorizedKeys'", "did you mean 'ssh_authorized_keys'?"),
    ("trees", "ignition:\n  storage:\n    trees:\n      - local: etc\n", {}, 3, 5, "$.ignition.storage.trees",
     "'trees' is not supported by bootgen", "list the files one by one under storage.files with contents.local"),
    ("raid", "ignition:\n  storage:\n    raid: []\n", {}, 3, 5, "$.ignition.storage.raid",
     "'raid' is not supported by bootgen", None),
    ("wrong-type", "ignition:\n  systemd:\n    units:\n      - name: a.service\n        enabled: 'yes'\n", {}, 5, 18,
     "$.ignition.systemd.units[0].enabled", "expected true or false, got a string 'yes'", None),
    ("unit-name", "ignition:\n  systemd:\n    units:\n      - name: installer\n", {}, 4, 15,
     "$.ignition.systemd.units[0].name", "'installer' is not a systemd unit name", None),
    ("kargs-twice", "ignition:\n  kernel_arguments:\n    should_exist: [quiet, quiet]\n", {}, 3, 27,
     "$.ignition.kernel_arguments.should_exist[1]", "'quiet' is listed twice in should_exist (first on line 3)",
     "keep it once"),
    ("kargs-both", "ignition:\n  kernel_arguments:\n    should_exist: [quiet]\n    should_not_exist: [quiet]\n",
     {}, 4, 24, "$.ignition.kernel_arguments.should_not_exist[0]",
     "kernel argument 'quiet' is listed in both should_exist and should_not_exist", "keep it in one list, once"),
    ("kargs-too-old", "ignition:\n  kernel_arguments:\n    should_exist: [quiet]\n",
     {"variant": "fcos", "version": "3.2.0"}, 2, 3, "$.ignition.kernel_arguments",
     "'kernel_arguments' needs Ignition 3.3.0 or newer, but this config is Ignition 3.2.0", None),
    ("headers-too-old", file_entry("contents: {source: 'http://h/x', http_headers: [{name: A, value: b}]}"),
     {"version": "3.0.0"}, 5, 42, "$.ignition.storage.files[0].contents.http_headers",
     "'http_headers' needs Ignition 3.1.0 or newer, but this config is Ignition 3.0.0", None),
    ("headers-on-data", file_entry("contents: {source: 'data:,x', http_headers: [{name: A, value: b}]}"), {}, 5, 53,
     "$.ignition.storage.files[0].contents.http_headers", "http_headers need an http:// or https:// source", None),
    ("two-sources", file_entry("contents: {inline: a, source: 'http://h/x'}"), {}, 5, 19,
     "$.ignition.storage.files[0].contents", "only one of inline, local, source and remote may be set",
     "this entry sets inline, source"),
    ("compression-with-inline", file_entry("contents: {inline: a, compression: gzip}"), {}, 5, 44,
     "$.ignition.storage.files[0].contents.compression", "compression: gzip cannot apply to inline contents",
     "bootgen compresses inline contents itself when that is shorter; remove compression"),
    ("bad-hash", file_entry("contents: {source: 'http://h/x', verification: {hash: md5-abc}}"), {}, 5, 63,
     "$.ignition.storage.files[0].contents.verification.hash", "'md5-abc' is not a hash Ignition can verify", None),
    ("bad-scheme", file_entry("contents: {source: 'ftp://h/x'}"), {}, 5, 28, "$.ignition.storage.files[0].contents.source",
     "'ftp://h/x' is not a URL Ignition can fetch", None),
    ("local-absolute", file_entry("contents: {local: /etc/shadow}"), {}, 5, 27,
     "$.ignition.storage.files[0].contents.local", "local file '/etc/shadow' is an absolute path", None),
    ("local-dotdot", file_entry("contents: {local: ../secret}"), {}, 5, 27,
     "$.ignition.storage.files[0].contents.local", "local file '../secret' contains a '..' segment",
     "local files must stay inside the files directory"),
    ("local-missing", file_entry("contents: {local: nothere.txt}"), {}, 5, 27,
     "$.ignition.storage.files[0].contents.local", "local file 'nothere.txt' not found", None),
    ("unknown-variant", "ignition:\n  variant: rhcos\n", {}, 2, 12, "$.ignition.variant", "unknown variant 'rhcos'", None),
    ("legacy-filesystem", file_entry("filesystem: oem"), {}, 5, 21, "$.ignition.storage.files[0].filesystem",
     "filesystem 'oem' cannot be translated: Ignition 3 has no named filesystems", None),
    ("both-unit-contents", "ignition:\n  systemd:\n    units:\n      - name: a.service\n        contents: x\n"
     "        contents_local: a.service\n", {"version": "3.4.0"}, 6, 9, "$.ignition.systemd.units[0].contents_local",
     "only one of contents and contents_local may be set", None),
    ("overwrite-without-contents", file_entry("overwrite: true"), {}, 5, 20, "$.ignition.storage.files[0].overwrite",
     "overwrite: true needs contents to write", None),
    ("enabled-without-install", "ignition:\n  systemd:\n    units:\n      - name: a.service\n        enabled: true\n"
     "        contents: \"[Service]\\nExecStart=/bin/true\\n\"\n", {}, 5, 18, "$.ignition.systemd.units[0].enabled",
     "the unit is enabled but has no [Install] section, so enabling it does nothing", None),
    ("partition-without-id", "ignition:\n  storage:\n    disks:\n      - device: /dev/vda\n        partitions:\n"
     "          - size_mib: 100\n", {}, 6, 13, "$.ignition.storage.disks[0].partitions[0]",
     "a partition needs a label or a number other than 0", "set number: 1 or more, or a label"),
    ("bad-guid", "ignition:\n  storage:\n    disks:\n      - device: /dev/vda\n        partitions:\n"
     "          - {label: a, type_guid: linux}\n", {}, 6, 35, "$.ignition.storage.disks[0].partitions[0].type_guid",
     "'linux' is not a GUID", None),
    ("fs-format", "ignition:\n  storage:\n    filesystems:\n      - {device: /dev/vda1, format: ext3}\n", {}, 4, 37,
     "$.ignition.storage.filesystems[0].format", "unknown filesystem format 'ext3'",
     "Ignition 3.3.0 formats: ext4, btrfs, xfs, vfat, swap, none"),
    ("missing-name", "ignition:\n  passwd:\n    users:\n      - uid: 1000\n", {}, 4, 9, "$.ignition.passwd.users[0]",
     "'name' is required here", None),
]


@pytest.mark.parametrize("text,kwargs,line,column,path,message,hint", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_refused(layer, problems_of, text, kwargs, line, column, path, message, hint):
    (problem,) = problems_of([layer(text, "nodes/node-1.yaml")], **kwargs)
    assert (problem.location.file, problem.location.line, problem.location.column) == ("nodes/node-1.yaml", line, column)
    assert problem.path == path
    assert problem.message == message
    if hint is not None:
        assert problem.hint == hint


def _ssh_keygen(tmp_path, *args) -> None:
    subprocess.run(["ssh-keygen", "-q", "-N", "", "-C", "t", *args], check=True, capture_output=True, timeout=60)


def test_openssh_private_key_is_refused(layer, problems_of, tmp_path):
    """Seed 003 pasted a private key into authorized-keys; bootgen must stop that."""
    _ssh_keygen(tmp_path, "-t", "ed25519", "-f", str(tmp_path / "id"))
    private = (tmp_path / "id").read_text()
    text = user("ssh_authorized_keys:\n          - |\n" + textwrap.indent(private, " " * 12))
    (problem,) = problems_of([layer(text)])
    assert problem.message == "this is a private key, not a public key"
    assert "treat it as leaked" in problem.hint
    assert (problem.location.line, problem.location.column, problem.path) == (
        6, 13, "$.ignition.passwd.users[0].ssh_authorized_keys[0]")


def test_private_key_in_local_key_file(layer, problems_of, tmp_path):
    _ssh_keygen(tmp_path, "-t", "ed25519", "-f", str(tmp_path / "id"))
    (tmp_path / "keys").write_text("# admins\n\n" + (tmp_path / "id.pub").read_text() + (tmp_path / "id").read_text())
    (problem,) = problems_of([layer(user("ssh_authorized_keys_local: [keys]"))], files_dir=tmp_path, version="3.4.0")
    assert re.fullmatch(r"local file 'keys' holds <OpenSSH private key, \d+ characters, not shown>, "
                        "not public keys", problem.message)
    assert (problem.location.line, problem.location.column) == (5, 37)


def test_bad_line_in_local_key_file(layer, problems_of, tmp_path, ed25519_key):
    (tmp_path / "keys").write_text(f"# admins\n{ed25519_key}\n\nssh-rsa AAAA...\n")
    (problem,) = problems_of([layer(user("ssh_authorized_keys_local: [keys]"))], files_dir=tmp_path, version="3.4.0")
    assert problem.message == "keys line 4: the ssh-rsa key data is not valid base64"
    assert (problem.location.line, problem.location.column) == (5, 37)


def test_local_symlink_escaping_files_dir(layer, problems_of, tmp_path):
    files = tmp_path / "files"
    files.mkdir()
    (tmp_path / "secret").write_text("s")
    (files / "link").symlink_to(tmp_path / "secret")
    (problem,) = problems_of([layer(file_entry("contents: {local: link}"))], files_dir=files)
    assert problem.message == "local file 'link' resolves outside the files directory"


def test_all_problems_reported_at_once(layer, problems_of):
    text = "ignition:\n  passwd:\n    users:\n      - name: core\n        password: x\n        shel: /bin/sh\n"
    problems = problems_of([layer(text)])
    assert [p.location.line for p in problems] == [5, 6]


def test_unsupported_target(layer):
    with pytest.raises(RenderError) as info:
        build_ignition([], files_dir=".", version="2.3.0", variant="rhcos")
    assert [p.message for p in info.value.problems] == [
        "Ignition version '2.3.0' is not supported", "unknown Butane variant 'rhcos'"]


def test_accepted_keys_and_hashes(layer, tmp_path, assert_valid_ignition, ed25519_key):
    """The positive side of the checks: real keys from ssh-keygen and hashes bootgen makes pass."""
    for kind in ("rsa", "ecdsa", "ed25519"):
        _ssh_keygen(tmp_path, "-t", kind, *(["-b", "2048"] if kind == "rsa" else []), "-f", str(tmp_path / kind))
    (tmp_path / "keys").write_text("".join((tmp_path / f"{k}.pub").read_text() for k in ("rsa", "ecdsa")))
    text = user(f"password_hash: '{hash_password('pw', salt='abcdefgh')}'") + \
        f"        ssh_authorized_keys_local: [keys]\n        ssh_authorized_keys: ['{(tmp_path / 'ed25519.pub').read_text().strip()}']\n"
    config = build_ignition([layer(text)], files_dir=tmp_path, version="3.4.0")
    (core,) = config["passwd"]["users"]
    assert [k.split()[0] for k in core["sshAuthorizedKeys"]] == ["ssh-ed25519", "ssh-rsa", "ecdsa-sha2-nistp256"]
    assert core["passwordHash"].startswith("$6$abcdefgh$")
    assert_valid_ignition(config)


@pytest.mark.parametrize("mode", [644, 755, 777, 600, 700, 750, 640, 440, 400, 555])
def test_decimal_modes_refused(mode):
    hints = [hint for _, hint in check_file_mode(mode, (3, 3, 0))]
    assert hints == [f"YAML reads {mode} as a decimal number; remember the leading zero: 0{mode}"]


@pytest.mark.parametrize("mode,directory", [
    (0o644, False), (0o755, False), (0o777, False), (0o600, False), (0o400, False), (0, False),
    (0o4755, False), (0o2755, False), (0o1777, True), (0o2775, True), (0o750, True)])
def test_octal_modes_accepted(mode, directory):
    """Modes written with the leading zero pass, including setuid/setgid files and sticky directories (3.4.0)."""
    assert (check_dir_mode if directory else check_file_mode)(mode, (3, 4, 0)) == []


@pytest.mark.parametrize("mode,directory", [(0o4755, False), (0o2755, False), (0o1777, True), (0o2775, True)])
def test_special_bits_refused_before_3_4(mode, directory):
    """Ignition 3.3.0 and older ignore setuid/setgid/sticky bits (a warning Butane --strict refuses)."""
    ((message, hint),) = (check_dir_mode if directory else check_file_mode)(mode, (3, 3, 0))
    assert message == f"mode {oct(mode)[2:]} has setuid/setgid/sticky bits, which Ignition 3.3.0 ignores"
    assert hint.startswith("raise the profile's ignition_version to 3.4.0")
