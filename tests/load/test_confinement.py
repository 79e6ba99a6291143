"""Every path site data names must be a regular file inside the site (bootgen.confine).

A copy of the example site gets one escape at a time (`..`, an absolute path, a
symlink pointing out, a symlinked directory pointing out, a FIFO, a directory, a
dangling symlink, a symlink loop) in each kind of input that names a file: image
`file:` and `signature:`, key files, Butane `contents.local` (node and site
defaults), systemd `contents_local` and `ssh_authorized_keys_local`. The build
must fail with the exact file:line:col and field path, never show the secret it
was pointed at (in problems, text or JSON output, or anything written), never
hard-link it, never hang on a FIFO, and leave the live tree as it was.
"""
from __future__ import annotations

import hashlib
import json
import os
import stat
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Callable
from urllib.parse import quote

import pytest

from bootgen.build import build, plan_build
from bootgen.confine import SiteFileError, read_site_file, site_file
from bootgen.errors import BootgenError, InputError, Location, format_problems

ROOT = Path(__file__).resolve().parents[2]
MARKER = "SECRET-MARKER-7f3a9c-not-for-the-tree"
KERNEL = b"lab kernel bytes\n" * 64
FINGERPRINT = "0123456789ABCDEF0123456789ABCDEF01234567"

pytestmark = pytest.mark.timeout(120)


# --- the escapes ------------------------------------------------------------------


@dataclass(frozen=True)
class Escape:
    """One way out of the site: make(root, secret) prepares the site and returns the path to write."""

    name: str
    make: Callable[[Path, Path], str]
    message: str  # a fragment every kind's problem message holds
    butane_message: str | None = None  # Butane words some refusals its own way


def _files(root: Path) -> Path:
    path = root / "site" / "files"
    path.mkdir(exist_ok=True)
    return path


def _symlink_out(root: Path, secret: Path) -> str:
    (_files(root) / "esc").symlink_to(secret)
    return "files/esc"


def _symlinked_dir(root: Path, secret: Path) -> str:
    (_files(root) / "outdir").symlink_to(secret.parent, target_is_directory=True)
    return "files/outdir/" + secret.name


def _fifo(root: Path, secret: Path) -> str:
    os.mkfifo(_files(root) / "fifo")
    return "files/fifo"


def _directory(root: Path, secret: Path) -> str:
    (_files(root) / "adir").mkdir()
    return "files/adir"


def _dangling(root: Path, secret: Path) -> str:
    (_files(root) / "dang").symlink_to("nothere")
    return "files/dang"


def _loop(root: Path, secret: Path) -> str:
    (_files(root) / "loop1").symlink_to("loop2")
    (_files(root) / "loop2").symlink_to("loop1")
    return "files/loop1"


ESCAPES = [
    Escape("dotdot", lambda root, secret: "../outside/" + secret.name, "leaves the site directory",
           "contains a '..' segment"),
    Escape("absolute", lambda root, secret: str(secret), "is an absolute path"),
    Escape("symlink-out", _symlink_out, "resolves outside the site directory",
           "resolves outside the files directory"),
    Escape("symlinked-dir-out", _symlinked_dir, "resolves outside the site directory",
           "resolves outside the files directory"),
    Escape("fifo", _fifo, "is a FIFO (named pipe), not a regular file"),
    Escape("directory", _directory, "is a directory, not a regular file"),
    Escape("dangling", _dangling, "not found"),
    Escape("loop", _loop, "is a symlink loop"),
]


# --- the inputs that name files ---------------------------------------------------


def _insert_after(path: Path, anchor: str, block: str) -> None:
    text = path.read_text()
    assert text.count(anchor) == 1, anchor
    path.write_text(text.replace(anchor, anchor + block))


def _lab_profile(root: Path) -> None:
    (root / "site" / "profiles" / "lab.yaml").write_text("images: lab\nos_config: none\n")


def _image_file(root: Path, value: str) -> None:
    _insert_after(root / "site" / "site.yaml", "\nimages:\n",
                  f"  lab:\n    mirror: true\n    kernel:\n      file: {value}\n      unsigned: true\n")
    _lab_profile(root)


def _signature_file(root: Path, value: str) -> None:
    (root / "site" / "images").mkdir(exist_ok=True)
    (root / "site" / "images" / "vmlinuz").write_bytes(KERNEL)
    (root / "site" / "keys").mkdir(exist_ok=True)
    (root / "site" / "keys" / "lab.asc").write_text("not checked before the signature is\n")
    _insert_after(root / "site" / "site.yaml", "\nimages:\n",
                  "  lab:\n    mirror: true\n    kernel:\n      file: images/vmlinuz\n"
                  f"      signature: {value}\n      keys: [lab]\n")
    with (root / "site" / "site.yaml").open("a") as out:
        out.write(f"keys:\n  lab:\n    file: keys/lab.asc\n    fingerprint: {FINGERPRINT}\n")
    _lab_profile(root)


def _key_file(root: Path, value: str) -> None:
    with (root / "site" / "site.yaml").open("a") as out:
        out.write(f"keys:\n  lab:\n    file: {value}\n    fingerprint: {FINGERPRINT}\n")


def _node_ignition(block: str) -> Callable[[Path, str], None]:
    def apply(root: Path, value: str) -> None:
        with (root / "nodes" / "node-1.yaml").open("a") as out:
            out.write("ignition:\n" + textwrap.indent(block.format(value=value), "  "))
    return apply


def _site_defaults_local(root: Path, value: str) -> None:
    _insert_after(root / "site" / "site.yaml", "\ndefaults:\n",
                  "  ignition:\n    storage:\n      files:\n        - path: /etc/leak\n"
                  f"          contents:\n            local: {value}\n")


@dataclass(frozen=True)
class Kind:
    name: str
    file: str  # the input file, as problems name it
    field: str
    needle: str  # the text right before the value on its line
    apply: Callable[[Path, str], None]
    butane: bool = False


KINDS = [
    Kind("image-file", "site/site.yaml", "$.images.lab.kernel.file", "file: ", _image_file),
    Kind("image-signature", "site/site.yaml", "$.images.lab.kernel.signature", "signature: ", _signature_file),
    Kind("key-file", "site/site.yaml", "$.keys.lab.file", "file: ", _key_file),
    Kind("contents-local", "nodes/node-1.yaml", "$.ignition.storage.files[0].contents.local", "local: ",
         _node_ignition("storage:\n  files:\n    - path: /etc/leak\n      contents:\n        local: {value}\n"), True),
    Kind("site-defaults-local", "site/site.yaml", "$.defaults.ignition.storage.files[0].contents.local", "local: ",
         _site_defaults_local, True),
    Kind("unit-contents-local", "nodes/node-1.yaml", "$.ignition.systemd.units[0].contents_local", "contents_local: ",
         _node_ignition("systemd:\n  units:\n    - name: leak.service\n      contents_local: {value}\n"), True),
    Kind("dropin-contents-local", "nodes/node-1.yaml", "$.ignition.systemd.units[0].dropins[0].contents_local",
         "contents_local: ", _node_ignition("systemd:\n  units:\n    - name: leak.service\n      dropins:\n"
                                            "        - name: 10-leak.conf\n          contents_local: {value}\n"), True),
    Kind("ssh-keys-local", "nodes/node-1.yaml", "$.ignition.passwd.users[0].ssh_authorized_keys_local[0]", "- ",
         _node_ignition("passwd:\n  users:\n    - name: core\n      ssh_authorized_keys_local:\n"
                        "        - {value}\n"), True),
]


def value_position(path: Path, needle: str, value: str) -> tuple[int, int]:
    """(line, column) of `value` written after `needle`, 1-based, as problems report it."""
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if line.rstrip().endswith(needle + value):
            return number, line.index(needle + value) + len(needle) + 1
    raise AssertionError(f"{needle}{value} not in {path}")


# --- fixtures and checks ------------------------------------------------------------


@pytest.fixture(autouse=True)
def _ignition_3_4(example):
    """`contents_local` and `ssh_authorized_keys_local` exist from Butane flatcar 1.1.0 (Ignition 3.4.0)."""
    profile = Path("site/profiles/flatcar-install.yaml")
    profile.write_text(profile.read_text().replace("ignition_version: 3.3.0", "ignition_version: 3.4.0"))


@pytest.fixture
def secret(tmp_path) -> Path:
    """A file outside the site standing in for /etc/shadow."""
    outside = tmp_path / "outside"
    outside.mkdir()
    path = outside / "shadow"
    path.write_text(f"root:$6${MARKER}$x:19000:0:99999:7:::\n")
    return path


@pytest.fixture
def live(example, secret) -> str:
    """The example site built once; the live link's target."""
    build(example)
    return os.readlink(example.out)


def assert_nothing_leaked(root: Path, secret: Path, *texts: str) -> None:
    """The marker is in no output text and no file bootgen wrote; no file bootgen wrote is the secret's inode."""
    for text in texts:
        assert MARKER not in text
    secret_id = (secret.stat().st_dev, secret.stat().st_ino)
    assert secret.stat().st_nlink == 1
    for top in (root / ".bootgen",):
        for dirpath, _dirs, names in os.walk(top):  # does not follow symlinks
            for name in names:
                path = Path(dirpath, name)
                try:
                    st = path.lstat()
                    data = path.read_bytes() if stat.S_ISREG(st.st_mode) else b""
                except FileNotFoundError:  # a discarded staging tree, being removed in the background
                    continue
                assert not stat.S_ISLNK(st.st_mode), path  # trees hold no symlinks
                assert (st.st_dev, st.st_ino) != secret_id, path
                assert MARKER.encode() not in data, path


def the_problem(problems, kind: Kind):
    found = [p for p in problems if p.path == kind.field]
    assert len(found) == 1, [p.format() for p in problems]
    return found[0]


# --- library builds: every kind x every escape -------------------------------------------


def assert_refused(info, root: Path, kind: Kind, escape: Escape, value: str):
    problems = info.value.problems
    problem = the_problem(problems, kind)
    line, column = value_position(root / kind.file, kind.needle, value)
    assert (problem.location.file, problem.location.line, problem.location.column) == (kind.file, line, column)
    expected = escape.butane_message if kind.butane and escape.butane_message else escape.message
    assert expected in problem.message, problem.format()
    if not kind.butane:
        assert isinstance(info.value, InputError)
    return problems


@pytest.mark.parametrize("escape", ESCAPES, ids=[e.name for e in ESCAPES])
@pytest.mark.parametrize("kind", KINDS, ids=[k.name for k in KINDS])
def test_escape_is_refused_where_it_is_written(example, secret, live, kind, escape):
    root = Path.cwd()
    value = escape.make(root, secret)
    kind.apply(root, value)
    with pytest.raises(BootgenError) as info:
        build(example)
    problems = assert_refused(info, root, kind, escape, value)
    text = format_problems(problems, "text")
    assert_nothing_leaked(root, secret, text, format_problems(problems, "json"), repr(info.value))
    assert os.readlink(example.out) == live  # the live tree stays
    assert (example.out / "manifest.json").is_file()


@pytest.mark.parametrize("escape", [e for e in ESCAPES if e.name in ("dangling", "loop")], ids=["dangling", "loop"])
@pytest.mark.parametrize("kind", KINDS, ids=[k.name for k in KINDS])
def test_dangling_symlink_and_loop_are_refused_by_check_too(example, secret, kind, escape):
    root = Path.cwd()
    value = escape.make(root, secret)
    kind.apply(root, value)
    with pytest.raises(BootgenError) as info:
        plan_build(example, fetch=False)
    problems = assert_refused(info, root, kind, escape, value)
    assert_nothing_leaked(root, secret, format_problems(problems, "text"), format_problems(problems, "json"))
    assert not example.out.exists()


@pytest.mark.parametrize("kind", KINDS[:4], ids=[k.name for k in KINDS[:4]])
def test_escape_is_refused_by_check_too(example, secret, kind):
    """`plan_build` (what `bootgen check` runs) refuses the same way, writing nothing."""
    root = Path.cwd()
    value = _symlink_out(root, secret)
    kind.apply(root, value)
    with pytest.raises(BootgenError) as info:
        plan_build(example, fetch=False)
    problem = the_problem(info.value.problems, kind)
    assert problem.location.line == value_position(root / kind.file, kind.needle, value)[0]
    assert not example.out.exists()
    assert_nothing_leaked(root, secret, format_problems(info.value.problems, "text"))


# --- the command line ------------------------------------------------------------------


def _cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("BOOTGEN_DEBUG", None)
    return subprocess.run([sys.executable, "-m", "bootgen", *args], capture_output=True, text=True,
                          timeout=timeout, env=env)


CLI_CASES = [("image-file", "symlink-out"), ("key-file", "absolute"), ("contents-local", "symlink-out"),
             ("ssh-keys-local", "symlinked-dir-out"), ("image-file", "fifo"), ("unit-contents-local", "fifo"),
             ("site-defaults-local", "directory"), ("image-signature", "dotdot"), ("key-file", "dangling"),
             ("site-defaults-local", "loop")]


@pytest.mark.parametrize("fmt", ["text", "json"])
@pytest.mark.parametrize("kind_name,escape_name", CLI_CASES, ids=[f"{k}-{e}" for k, e in CLI_CASES])
def test_cli_exits_1_naming_the_place_and_never_the_secret(example, secret, live, kind_name, escape_name, fmt):
    kind = next(k for k in KINDS if k.name == kind_name)
    escape = next(e for e in ESCAPES if e.name == escape_name)
    root = Path.cwd()
    value = escape.make(root, secret)
    kind.apply(root, value)
    result = _cli("build", "--format", fmt)
    assert result.returncode == 1, result.stdout + result.stderr
    line, column = value_position(root / kind.file, kind.needle, value)
    expected = escape.butane_message if kind.butane and escape.butane_message else escape.message
    if fmt == "json":
        problems = json.loads(result.stdout)["problems"]
        (problem,) = [p for p in problems if p["path"] == kind.field]
        assert (problem["file"], problem["line"], problem["column"]) == (kind.file, line, column)
        assert expected in problem["message"]
    else:
        assert f"{kind.file}:{line}:{column}: error at {kind.field}: " in result.stderr
        assert expected in result.stderr
    assert_nothing_leaked(root, secret, result.stdout, result.stderr)
    assert os.readlink(example.out) == live


CHECK_CASES = [("image-file", "fifo"), ("key-file", "dangling"), ("site-defaults-local", "loop"),
               ("ssh-keys-local", "fifo")]


@pytest.mark.parametrize("kind_name,escape_name", CHECK_CASES, ids=[f"{k}-{e}" for k, e in CHECK_CASES])
def test_cli_check_refuses_without_hanging(example, secret, kind_name, escape_name):
    kind = next(k for k in KINDS if k.name == kind_name)
    escape = next(e for e in ESCAPES if e.name == escape_name)
    root = Path.cwd()
    value = escape.make(root, secret)
    kind.apply(root, value)
    result = _cli("check", "--format", "json", timeout=30)
    assert result.returncode == 1, result.stderr
    (problem,) = [p for p in json.loads(result.stdout)["problems"] if p["path"] == kind.field]
    assert (problem["file"], problem["line"], problem["column"]) == (
        kind.file, *value_position(root / kind.file, kind.needle, value))
    assert escape.message in problem["message"]
    assert_nothing_leaked(root, secret, result.stdout, result.stderr)


# --- what must keep working ---------------------------------------------------------------


def test_in_site_symlinked_image_is_served_under_its_declared_name(example, live):
    root = Path.cwd()
    images = root / "site" / "images"
    images.mkdir()
    (images / "b").write_bytes(KERNEL)
    (images / "a").symlink_to("b")
    digest = hashlib.sha256(KERNEL).hexdigest()
    _image_file(root, "images/a")
    site_yaml = root / "site" / "site.yaml"
    site_yaml.write_text(site_yaml.read_text().replace("      unsigned: true\n",
                                                       f"      unsigned: true\n      sha256: {digest}\n", 1))
    build(example)
    served = example.out / "images" / digest[:16] / "a"
    assert served.read_bytes() == KERNEL
    assert not served.is_symlink()
    assert served.read_bytes() == (images / "b").read_bytes()  # the bytes of the file the site owns
    assert served.stat().st_ino != (images / "b").stat().st_ino  # a verified copy: never a link to a site file
    assert os.readlink(example.out) != live


def test_in_site_symlinked_local_files_are_embedded(example, ed25519_public):
    root = Path.cwd()
    files = _files(root)
    (files / "b").write_text("hello from inside the site\n")
    (files / "a").symlink_to("b")
    (files / "keys").write_text(ed25519_public + "\n")
    (files / "keys-link").symlink_to("keys")
    (files / "unit").write_text("[Service]\nExecStart=/bin/true\n")
    (root / "site" / "units").symlink_to("files", target_is_directory=True)  # a symlinked directory in the site
    with (root / "nodes" / "node-1.yaml").open("a") as out:
        out.write("ignition:\n  storage:\n    files:\n      - path: /etc/hello\n        contents:\n"
                  "          local: files/a\n  systemd:\n    units:\n      - name: hello.service\n"
                  "        contents_local: units/unit\n  passwd:\n    users:\n      - name: core\n"
                  "        ssh_authorized_keys_local: [files/keys-link]\n")
    build(example)
    configs = [json.loads(p.read_bytes()) for p in (example.out / "configs" / "node-1").rglob("ignition.json")]
    (config,) = configs
    hello = next(f for f in config["storage"]["files"] if f["path"] == "/etc/hello")
    assert hello["contents"]["source"] == "data:," + quote("hello from inside the site\n", safe="")
    unit = next(u for u in config["systemd"]["units"] if u["name"] == "hello.service")
    assert unit["contents"] == "[Service]\nExecStart=/bin/true\n"
    core = next(u for u in config["passwd"]["users"] if u["name"] == "core")
    assert ed25519_public in core["sshAuthorizedKeys"]


@pytest.fixture
def ed25519_public() -> str:
    return "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIEl6E4+bBVjAGw0gD117cejmn42cizXUdSEJ19MCR9U6 test@bootgen"


# --- the gate itself ------------------------------------------------------------------------


WHERE = Location("site/site.yaml", 7, 9)


@pytest.fixture
def gate_site(tmp_path, secret) -> Path:
    site = tmp_path / "site"
    (site / "files").mkdir(parents=True)
    (site / "files" / "b").write_text("in the site\n")
    (site / "files" / "a").symlink_to("b")
    (site / "files" / "up").symlink_to("..", target_is_directory=True)
    return site


@pytest.mark.parametrize("relative", ["files/a", "files/b", "files/../files/b", "./files/b", "files/up/files/a"])
def test_gate_accepts_files_inside_the_site(gate_site, relative):
    path = site_file(gate_site, relative, WHERE, "$.x")
    assert path == (gate_site / "files" / "b").resolve()
    assert read_site_file(gate_site, relative, WHERE, "$.x") == b"in the site\n"


def test_gate_resolves_the_site_dir_too(tmp_path, gate_site):
    (tmp_path / "site-link").symlink_to(gate_site, target_is_directory=True)
    assert site_file(tmp_path / "site-link", "files/a", WHERE, "$.x") == (gate_site / "files" / "b").resolve()


@pytest.mark.parametrize("relative,reason", [
    ("../outside/shadow", "parent"), ("files/../../outside/shadow", "parent"), ("", "empty"), ("files/b\x00", "empty"),
    ("files/b/c", "missing"), ("files/nothere", "missing"), ("files", "not_regular"), (".", "outside"),
])
def test_gate_refusals(gate_site, relative, reason):
    with pytest.raises(SiteFileError) as info:
        site_file(gate_site, relative, WHERE, "$.keys.k.file")
    assert info.value.reason == reason
    (problem,) = info.value.problems
    assert (problem.location, problem.path) == (WHERE, "$.keys.k.file")


def test_gate_refuses_an_absolute_path_even_inside_the_site(gate_site):
    with pytest.raises(SiteFileError) as info:
        site_file(gate_site, str(gate_site / "files" / "b"), WHERE, "$.x")
    assert info.value.reason == "absolute"


def test_read_is_bounded(gate_site):
    with pytest.raises(SiteFileError) as info:
        read_site_file(gate_site, "files/a", WHERE, "$.x", max_bytes=4)
    assert info.value.reason == "too_large"
    assert "in the site" not in info.value.problems[0].format()


def test_read_refuses_a_file_swapped_after_the_check(gate_site, secret, monkeypatch):
    """Between the check and the open the file becomes a symlink out: it is not followed."""
    import bootgen.confine as confine

    checked = confine._check

    def check_then_swap(*args):
        result = checked(*args)
        target = gate_site / "files" / "b"
        target.unlink()
        target.symlink_to(secret)
        return result

    monkeypatch.setattr(confine, "_check", check_then_swap)
    with pytest.raises(SiteFileError) as info:
        read_site_file(gate_site, "files/b", WHERE, "$.x")
    assert info.value.reason == "changed"
    assert MARKER not in info.value.problems[0].format()


def test_read_never_blocks_on_a_fifo_swapped_in(gate_site, monkeypatch):
    import bootgen.confine as confine

    checked = confine._check

    def check_then_swap(*args):
        result = checked(*args)
        target = gate_site / "files" / "b"
        target.unlink()
        os.mkfifo(target)
        return result

    monkeypatch.setattr(confine, "_check", check_then_swap)
    with pytest.raises(SiteFileError) as info:
        read_site_file(gate_site, "files/b", WHERE, "$.x")
    assert info.value.reason == "changed"


def test_refusal_survives_pickling(gate_site):
    """Problems cross from build worker processes to the parent."""
    import pickle

    with pytest.raises(SiteFileError) as info:
        site_file(gate_site, "files/nothere", WHERE, "$.x")
    copy = pickle.loads(pickle.dumps(info.value))
    assert (copy.reason, copy.problems) == ("missing", info.value.problems)


# --- secrets in messages ----------------------------------------------------------------------


@pytest.fixture
def private_key(tmp_path) -> str:
    subprocess.run(["ssh-keygen", "-q", "-N", "", "-C", "t", "-t", "ed25519", "-f", str(tmp_path / "id")],
                   check=True, capture_output=True, timeout=60)
    return (tmp_path / "id").read_text()


def _key_body(private_key: str) -> str:
    return private_key.splitlines()[1]  # the first base64 line: must never be printed


def test_private_key_as_a_local_file_name_is_not_printed(example, private_key):
    with (Path("nodes") / "node-1.yaml").open("a") as out:
        out.write("ignition:\n  storage:\n    files:\n      - path: /etc/k\n        contents:\n"
                  f"          local: {json.dumps(private_key)}\n")
    with pytest.raises(BootgenError) as info:
        plan_build(example, fetch=False)
    (problem,) = [p for p in info.value.problems if p.path.endswith("contents.local")]
    assert "<OpenSSH private key" in problem.message and "not shown" in problem.message
    assert _key_body(private_key) not in problem.format()
    assert _key_body(private_key) not in format_problems([problem], "json")


def test_private_key_in_butane_keys_json_output_is_redacted(example, private_key):
    with (Path("nodes") / "node-1.yaml").open("a") as out:
        out.write("ignition:\n  passwd:\n    users:\n      - name: core\n"
                  f"        ssh_authorized_keys: [{json.dumps(private_key)}]\n")
    result = _cli("build", "--format", "json")
    assert result.returncode == 1
    (problem,) = json.loads(result.stdout)["problems"]
    assert problem["message"] == "this is a private key, not a public key"
    assert _key_body(private_key) not in result.stdout + result.stderr


def test_private_key_body_without_its_header_is_recognised(example, private_key):
    """Pasting only the base64 lines still reads as a private key, and none of it is quoted."""
    body = "".join(private_key.splitlines()[1:-1])
    with (Path("nodes") / "node-1.yaml").open("a") as out:
        out.write(f"ignition:\n  passwd:\n    users:\n      - name: core\n        ssh_authorized_keys: [{body}]\n")
    with pytest.raises(BootgenError) as info:
        plan_build(example, fetch=False)
    (problem,) = info.value.problems
    assert problem.message == "this is a private key, not a public key"
    assert body[:20] not in format_problems([problem], "json")


def test_private_key_in_node_keys_json_output_is_redacted(example, private_key):
    with (Path("nodes") / "node-1.yaml").open("a") as out:
        out.write(f"ssh_authorized_keys: [{json.dumps(private_key)}]\n")
    result = _cli("build", "--format", "json")
    assert result.returncode == 1
    assert "PRIVATE key" in result.stdout
    assert _key_body(private_key) not in result.stdout + result.stderr


# --- the source line shown with a problem, and the input files themselves ----------------------


def test_text_output_does_not_echo_a_private_key_source_line(example, private_key):
    with (Path("nodes") / "node-1.yaml").open("a") as out:
        out.write(f"ssh_authorized_keys: [{json.dumps(private_key)}]\n")
    result = _cli("build")
    assert result.returncode == 1
    assert "PRIVATE key" in result.stderr
    assert _key_body(private_key) not in result.stdout + result.stderr


@pytest.mark.parametrize("where", ["site/profiles/evil.yaml", "nodes/evil.yaml", "site/site.yaml"])
@pytest.mark.parametrize("fmt", ["text", "json"])
def test_symlinked_yaml_input_pointing_out_is_not_echoed(example, secret, where, fmt):
    target = Path(where)
    target.unlink(missing_ok=True)
    target.symlink_to(secret)
    result = _cli("build", "--format", fmt, timeout=30)
    assert result.returncode == 1
    assert_nothing_leaked(Path.cwd(), secret, result.stdout, result.stderr)
