"""Line injection: hostile values in every field that reaches a generated file.

Two defences, each tested on its own:

1. Validation. A newline, quote, `;`, `$()`, `#`, `%` or space in a field whose
   destination cannot hold it is refused when the site is loaded, at the
   file:line:col of the value and with its field path, and a build exits 1
   leaving the live tree as it was.
2. Quoting. Each generator, handed a hostile value directly (as if validation
   had missed it), either refuses it with a RenderError or writes a file that
   its real reader parses to exactly the intended structure: one ExecStart in
   the install unit running exactly the intended command (systemd-analyze
   verify, then the script under sh with stub commands), `dnsmasq --test` with
   only the directives the site asked for, `nginx -t` with exactly the intended
   location blocks, `grub-script-check` with exactly the intended lines, and
   the iPXE and pxelinux parsers (modelled on iPXE's image/script.c,
   core/exec.c and core/settings.c and syslinux's readconfig.c) reading
   exactly the intended commands and lines.
"""
from __future__ import annotations

import dataclasses
import json
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from bootgen.build import build, plan_build
from bootgen.errors import InputError, RenderError
from bootgen.images import resolve_images
from bootgen.load import load_inputs
from bootgen.render import boot_entry, make_context, node_spec, osconfig, targets
from bootgen.render.cloudconfig import install_script
from bootgen.render.ignition import installer_config

# --- hostile values ----------------------------------------------------------------------------

CONTROL = ["a\nb", "a\rb", "a\x00b", "a\x1bb", "a\tb", "a\u2028b", "a\x85b", "x\nExecStart=/bin/evil",
           "\ndhcp-script=/tmp/evil\n", "x;\n}\nlocation /evil {\n", "x\n#!ipxe\nshell", "a\\\nb"]
PRINTABLE = ['a"b', "a'b", "a;b", "$(reboot)", "`reboot`", "a#b", "#b", "a%nb", "%%", "%", "a$b", "$HOME",
             "$$", "a\\", "a\\b", "\\", "a|b&c", "||", "&&", ";", "a{b}", "}", "{", "a,b", "*", "!", "a&&b;reboot",
             "'", '"', "x%i%%", "-rf", ":label", "@x"]
SPACED = ["a b", " ", "x; reboot", "x && reboot", "x || shell", "; dhcp-script=/tmp/evil", "a # b"]
DOLLAR_BRACE = ["${x}", "a${net0/mac}b", "${", "${}"]
HOSTILE = CONTROL + PRINTABLE + SPACED + DOLLAR_BRACE
NO_DOLLAR = [v for v in PRINTABLE if "$" not in v]
ROOT = Path(__file__).resolve().parents[2]


def _ids(values):
    return [json.dumps(v)[1:-1] or "empty" for v in values]


# --- the example site, loaded, with values replaced behind validation's back -------------------

@pytest.fixture
def world(example):
    inputs = load_inputs(example.site, example.nodes)
    needed = {p.images for p in inputs.profiles.values()}
    images = resolve_images(inputs.image_config, site_dir=example.site, cache_dir=example.state / "cache",
                            needed=needed, fetch=False, progress=False)
    return World(inputs, images)


class World:
    def __init__(self, inputs, images):
        self.inputs, self.images = inputs, images

    def ctx(self, **site_changes):
        site = self.inputs.site
        server = {k: site_changes.pop(k) for k in ("root", "server_name", "http_port") if k in site_changes}
        dhcp = {k: site_changes.pop(k) for k in ("interface",) if k in site_changes}
        site = dataclasses.replace(site, server=dataclasses.replace(site.server, **server),
                                   dhcp=dataclasses.replace(site.dhcp, **dhcp), **site_changes)
        return make_context(dataclasses.replace(self.inputs, site=site), self.images, Path.cwd())

    def node(self, name):
        return next(n for n in self.inputs.nodes if n.name == name)

    def entry(self, ctx, name="node-1"):
        spec = node_spec(ctx, self.node(name))
        return spec, boot_entry(ctx, spec, osconfig.render(ctx, spec))


def _text(artifacts, suffix=""):
    return [a.data.decode() for a in artifacts if a.path.endswith(suffix)][0]


# === 1. validation =============================================================================

def _set_line(path: Path, old: str, new: str) -> tuple[int, int]:
    """Replace the line starting with `old` (or insert `new` after it if new starts with '+');
    return the line and column of the value written."""
    lines = path.read_text().split("\n")
    index = next(i for i, line in enumerate(lines) if line.startswith(old))
    if new.startswith("+"):
        new = new[1:]
        index += 1
        lines.insert(index, new)
    else:
        lines[index] = new
    path.write_text("\n".join(lines))
    return index + 1, new.find('"') + 1


def _q(value: str) -> str:
    """`value` as a YAML double-quoted scalar."""
    return json.dumps(value)


# (file, line to find, new line (value spliced in as {v}), field path, values the schema must refuse)
FIELDS = {
    "site-name": ("site/site.yaml", "name:", "name: {v}", "$.name",
                  ["a\nb", "a\rb", "x\nExecStart=/bin/evil", "a\u2028b", "a\x1bb", "a\tb"]),
    "base-url": ("site/site.yaml", "base_url:", "base_url: {v}", "$.base_url",
                 ["http://10.0.0.5:8080/\ndhcp-script=/tmp/evil", 'http://10.0.0.5/"x', "http://10.0.0.5/a b",
                  "http://10.0.0.5/#x", "http://10.0.0.5/'$(reboot)'", "http://10.0.0.5/${x}",
                  "http://10.0.0.5/a,b", "http://10.0.0.5/\\", "http://10.0.0.5/`id`", "http://10.0.0.5/$(reboot)/",
                  "http://10.0.0.5/a;reboot/", "http://10.0.0.5/a&&b/", "http://10.0.0.5/%n$x/"]),
    "dhcp-interface": ("site/site.yaml", "  mode: proxy", "+  interface: {v}", "$.dhcp.interface",
                       ["eth0\ndhcp-script=/tmp/evil", "eth0;x", "eth 0", "eth0#", '"eth0"', "$(reboot)",
                        "eth0,lo", "a%n", "verylonginterfacename"]),
    "server-root": ("site/site.yaml", "  root:", "  root: {v}", "$.server.root",
                    ["/srv/x;\n location /evil {", "/srv/a b", "/srv/x;", '/srv/"x', "/srv/$document_root",
                     "/srv/#x", "/srv/{x}", "srv/relative", "/srv/x\\", "/srv/$(reboot)"]),
    "server-name": ("site/site.yaml", "  root:", "+  server_name: {v}", "$.server.server_name",
                    ["a;b", "a\nb", "a{", "a}", '"a"', "$host", "a#b", "a;\n location /evil {"]),
    "kernel-args-site": ("site/site.yaml", "    - console=tty0", "    - {v}", "$.defaults.kernel_args[0]",
                         ["a\nb", "a\rb", "a\x00b", "x\n#!ipxe\nshell", "a\u2028b", "a\tb"]),
    "image-set-version": ("site/site.yaml", "    version: 1010.5.0", "    version: {v}",
                          "$.images.coreos-1010.5.0.version", ["1\n2", "1;reboot", "$(reboot)", "1 2", "1#"]),
    "image-url": ("site/site.yaml", "      url: http://stable.release.flatcar-linux.net/amd64-usr/current/flatcar_production_pxe.vmlinuz",
                  "      url: {v}", "$.images.flatcar-stable.kernel.url",
                  ["http://x/vmlinuz\nAPPEND evil", "http://x/a b", 'http://x/"vmlinuz', "http://x/${x}",
                   "http://x/a,b"]),
    "profile-disk": ("site/profiles/flatcar-install.yaml", "  disk:", "  disk: {v}", "$.install.disk",
                     ["/dev/sda\nExecStart=/bin/evil", "/dev/sda; reboot", "/dev/$(reboot)", '/dev/"sda',
                      "/dev/sda#", "/dev/%n", "/dev/sda b", "sda", "/dev/`id`"]),
    "profile-channel": ("site/profiles/flatcar-install.yaml", "  disk:", "+  channel: {v}",
                        "$.install.channel", ["stable\nExecStart=/bin/evil", "a;b", "$(reboot)", "a b", "%n",
                                              "a#", "'a'"]),
    "node-version": ("nodes/node-1.yaml", "    dns:", "+install: {{version: {v}}}", "$.install.version",
                     ["1\n2", "$(reboot)", "1;reboot", "%%", "1 2"]),
    "node-disk": ("nodes/node-1.yaml", "    dns:", "+install: {{disk: {v}}}", "$.install.disk",
                  ["/dev/sda\nExecStart=/bin/evil", "/dev/sda;reboot", "/dev/$(x)"]),
    "node-kernel-args": ("nodes/node-1.yaml", "    dns:", "+kernel_args: [{v}]", "$.kernel_args[0]",
                         ["a\nb", "a\x1bb", "x\nExecStart=/bin/evil", "a\x85b"]),
    "node-hostname": ("nodes/node-1.yaml", "hostname:", "hostname: {v}", "$.hostname",
                      ["node\ndhcp-script=/x", "a;b", "a b", "$(reboot)", "a#b", "a,b"]),
}
VALIDATION_CASES = [(field, value) for field, spec in FIELDS.items() for value in spec[4]]


@pytest.mark.parametrize("field,value", VALIDATION_CASES,
                         ids=[f"{f}-{i}" for f, v in VALIDATION_CASES for i in _ids([v])])
def test_validation_refuses_at_the_value(example, field, value):
    file, find, template, path, _ = FIELDS[field]
    line, column = _set_line(Path(file), find, template.format(v=_q(value)))
    with pytest.raises(InputError) as err:
        plan_build(example, fetch=False)
    found = {(str(p.location), p.path): p.message for p in err.value.problems}
    assert (f"{file}:{line}:{column}", path) in found, [p.format() for p in err.value.problems]
    assert "does not match" not in found[(f"{file}:{line}:{column}", path)]  # a message a person can act on


def test_plain_values_still_pass_validation(example):
    _set_line(Path("site/site.yaml"), "  mode: proxy", "+  interface: enp1s0.10")
    _set_line(Path("site/site.yaml"), "  root:", "+  server_name: boot.example.com *.boot.example.com _")
    _set_line(Path("site/profiles/flatcar-install.yaml"), "  disk:",
              "  disk: /dev/disk/by-id/usb-SanDisk_Cruzer_4C530001-0:0")
    _set_line(Path("site/profiles/flatcar-install.yaml"), "  disk:", "+  channel: beta")
    _set_line(Path("nodes/node-1.yaml"), "    dns:", "+install: {version: 3975.2.0}")
    _set_line(Path("nodes/node-1.yaml"), "    dns:",
              '+kernel_args: ["ds=nocloud-net;s=http://10.0.0.5/x/ a=\'b\' c=\\"d\\" e=$x f=50%"]')
    _, plan = plan_build(example, fetch=False)
    assert "interface=enp1s0.10\n" in plan.artifacts["server/dnsmasq.conf"].data.decode()
    nginx = plan.artifacts["server/nginx.conf"].data.decode()
    assert "server_name boot.example.com *.boot.example.com _;" in nginx
    unit = [a.data for path, a in plan.artifacts.items() if path.startswith("configs/node-1/")
            and path.endswith("install.ign")]
    assert unit and b"flatcar-install -d /dev/disk/by-id/usb-SanDisk_Cruzer_4C530001-0:0" in unit[0]


def test_cli_build_exits_1_and_keeps_the_live_tree(example, tree_files):
    first = build(example, fetch=False)
    live = os.readlink("build")
    before = tree_files(Path("build"))
    line, column = _set_line(Path("site/site.yaml"), "  root:", '  root: "/srv/x;\\n location /evil { }"')
    env = {k: v for k, v in os.environ.items() if k != "BOOTGEN_DEBUG"}
    env["PYTHONPATH"] = str(ROOT)
    done = subprocess.run([sys.executable, "-m", "bootgen", "build", "--offline"], capture_output=True, text=True,
                          env=env, timeout=120)
    assert done.returncode == 1, done.stdout + done.stderr
    assert f"site/site.yaml:{line}:{column}: error at $.server.root:" in done.stderr
    assert os.readlink("build") == live
    assert tree_files(Path("build")) == before
    assert first.write.tree.name in live
    Path("site/site.yaml").write_text((ROOT / "site" / "site.yaml").read_text())
    _set_line(Path("nodes/node-1.yaml"), "    dns:", '+install: {disk: "/dev/sda\\nExecStart=/bin/evil"}')
    done = subprocess.run([sys.executable, "-m", "bootgen", "build", "--offline", "--format", "json"],
                          capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 1, done.stdout + done.stderr
    problems = json.loads(done.stdout)["problems"]
    assert [(p["file"], p["path"]) for p in problems] == [("nodes/node-1.yaml", "$.install.disk")]
    assert os.readlink("build") == live
    assert tree_files(Path("build")) == before


# === 2. quoting, behind validation's back ======================================================

# --- iPXE: a model of iPXE's script reader ---------------------------------------------------

_IPXE_SPACE = " \f\n\r\t\v"


def ipxe_commands(script: str, settings: dict | None = None) -> list[list[str]]:
    """The commands iPXE runs from `script`, with arguments expanded (all of them, as if
    every command succeeded): image/script.c process_script, core/exec.c system,
    core/settings.c expand_settings. Unknown settings expand to nothing."""
    settings = settings or {}
    commands, pending = [], ""
    for fragment in script.split("\n"):
        line = pending + fragment
        pending = ""
        if line.endswith("\r"):
            line = line[:-1]
        if line.endswith("\\"):
            pending = line[:-1]
            continue
        command = line.lstrip(_IPXE_SPACE)
        if command.startswith(":"):  # a label
            rest = command[1:]
            cut = next((i for i, c in enumerate(rest) if c in _IPXE_SPACE), len(rest))
            command = rest[cut + 1:]
        commands.extend(_ipxe_system(command, settings))
    if pending:
        commands.extend(_ipxe_system(pending, settings))
    return commands


def _ipxe_system(command: str, settings: dict) -> list[list[str]]:
    tokens = "".join(" " if c in _IPXE_SPACE else c for c in command).split(" ")
    tokens = [t for t in tokens if t]
    commands = []
    while True:
        argv, terminated = [], False
        while tokens:
            token = tokens.pop(0)
            if token.startswith("#"):
                tokens = []
                break
            if token in ("||", "&&", ";"):
                terminated = True
                break
            argv.append(_ipxe_expand(token, settings))
        if argv:
            commands.append(argv)
        if not terminated:
            return commands


def _ipxe_expand(token: str, settings: dict) -> str:
    while True:
        start = end = None
        for i, char in enumerate(token):
            if token[i:i + 2] == "${":
                start = i
            if start is not None and char == "}":
                end = i
                break
        if end is None:
            return token
        token = token[:start] + settings.get(token[start + 2:end], "") + token[end + 1:]


def test_ipxe_model_reads_what_ipxe_reads():
    script = "#!ipxe\n# c\n:l1 echo a${x}b # c\nkernel a \\\nb || c;d ; e\r\nx${a${y}}z\n"
    assert ipxe_commands(script, {"y": "q", "aq": "Z"}) == [
        ["echo", "ab"], ["kernel", "a", "b"], ["c;d"], ["e"], ["xZz"]]


def _intended_ipxe(entry) -> list[list[str]]:
    names = [ref.name for ref in entry.initrds]
    return [["imgfree"], ["kernel", entry.kernel.url, *[f"initrd={n}" for n in names], *entry.args],
            *[["initrd", "--name", n, ref.url] for n, ref in zip(names, entry.initrds)], ["boot"]]


@pytest.mark.parametrize("value", HOSTILE, ids=_ids(HOSTILE))
def test_ipxe_node_script_has_exactly_the_intended_commands(world, value):
    ctx = world.ctx()
    _, entry = world.entry(ctx)
    hostile = dataclasses.replace(entry, args=(f"x={value}", value, "quiet"))
    try:
        script = _text(targets.ipxe(ctx, hostile))
    except RenderError:
        assert value not in PRINTABLE, f"{value!r} has a spelling in iPXE but was refused"
        return
    assert ipxe_commands(script) == _intended_ipxe(hostile)


@pytest.mark.parametrize("value", HOSTILE, ids=_ids(HOSTILE))
def test_ipxe_chain_script_has_exactly_the_intended_commands(world, value):
    base_url = f"http://10.0.0.5:8080/{value}/"
    ctx = world.ctx(name=value, base_url=base_url)
    try:
        files = targets.chain_entries(ctx, ())
    except RenderError:
        assert value not in NO_DOLLAR, f"{value!r} has a spelling in iPXE but was refused"
        return
    script = _text(files, "boot.ipxe")
    mac = "52-54-00-12-34-56"
    assert ipxe_commands(script, {"mac:hexhyp": mac}) == [
        ["chain", "--autofree", f"{base_url}ipxe/{mac}.ipxe"],
        ["chain", "--autofree", f"{base_url}ipxe/default.ipxe"]]


# --- pxelinux: syslinux's readconfig.c reads a line up to \n, cut at \r, 4095 bytes at most ----

def pxelinux_lines(text: str) -> list[tuple[str, str]]:
    out = []
    for line in text.split("\n"):
        assert len(line.encode()) < 4095
        line = line.split("\r")[0].split("\0")[0].lstrip(" \t")
        if not line or line.startswith("#"):
            continue
        keyword, _, rest = line.partition(" ")
        out.append((keyword.upper(), rest.lstrip(" ")))
    return out


@pytest.mark.parametrize("value", HOSTILE, ids=_ids(HOSTILE))
def test_pxelinux_file_has_exactly_the_intended_lines(world, value):
    ctx = world.ctx(name=value)
    _, entry = world.entry(ctx)
    hostile = dataclasses.replace(entry, args=(f"x={value}", value, "quiet"))
    try:
        files = targets.pxelinux(ctx, hostile)
    except RenderError:
        assert value not in PRINTABLE, f"{value!r} can be written on an APPEND line but was refused"
        return
    assert pxelinux_lines(_text(files)) == [
        ("DEFAULT", "bootgen"), ("PROMPT", "0"), ("TIMEOUT", "0"), ("LABEL", "bootgen"),
        ("KERNEL", entry.kernel.url), ("INITRD", ",".join(r.url for r in entry.initrds)),
        ("APPEND", " ".join(hostile.args))]
    assert pxelinux_lines(_text(files))[-1][1].split(" ") == list(hostile.args)


def test_pxelinux_refuses_a_line_its_reader_would_split(world):
    ctx = world.ctx()
    _, entry = world.entry(ctx)
    long = dataclasses.replace(entry, args=("a=" + "x" * 4090, "dhcp-script=/tmp/evil"))
    with pytest.raises(RenderError) as err:
        targets.pxelinux(ctx, long)
    assert "longer than 4094 bytes" in err.value.problems[0].message


# --- GRUB ----------------------------------------------------------------------------------------

def _grub_check(path: Path) -> None:
    assert shutil.which("grub-script-check"), "install Debian's grub-common"
    done = subprocess.run(["grub-script-check", str(path)], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stdout + done.stderr


def grub_commands(text: str) -> list[list[str]]:
    """Each line of grub.cfg as words (single quotes, as in sh); comments and blank lines dropped."""
    return [shlex.split(line, comments=True) for line in text.split("\n")
            if line.strip() and not line.lstrip().startswith("#")]


@pytest.mark.parametrize("value", HOSTILE, ids=_ids(HOSTILE))
def test_grub_file_has_exactly_the_intended_lines(world, value, tmp_path):
    ctx = world.ctx()
    _, entry = world.entry(ctx)
    hostile = dataclasses.replace(entry, args=(f"x={value}", value, "quiet"))
    try:
        files = targets.grub(ctx, hostile)
    except RenderError:
        assert value not in PRINTABLE, f"{value!r} can be quoted in grub.cfg but was refused"
        return
    text = _text(files)
    (tmp_path / "grub.cfg").write_text(text)
    _grub_check(tmp_path / "grub.cfg")
    kernel = "(http,stable.release.flatcar-linux.net)/amd64-usr/current/flatcar_production_pxe.vmlinuz"
    commands = grub_commands(text)
    assert [c[0] for c in commands] == ["set", "set", "set", "insmod", "menuentry", "linux", "initrd", "}"]
    assert commands[5] == ["linux", kernel, *hostile.args]


@pytest.mark.parametrize("value", HOSTILE, ids=_ids(HOSTILE))
def test_grub_entry_point_keeps_the_site_name_in_its_comment(world, value, tmp_path):
    ctx = world.ctx(name=value)
    benign = _text(targets.chain_entries(world.ctx(), ()), "grub/grub.cfg")
    text = _text(targets.chain_entries(ctx, ()), "grub/grub.cfg")
    (tmp_path / "grub.cfg").write_text(text)
    _grub_check(tmp_path / "grub.cfg")
    assert text.split("\n")[1:] == benign.split("\n")[1:]


# --- the Flatcar install unit ----------------------------------------------------------------

def _specifiers(value: str) -> str:
    """systemd resolves specifiers on the whole line first; the unit uses none but %%."""
    out, i = [], 0
    while i < len(value):
        if value[i] == "%":
            assert value[i + 1:i + 2] == "%", f"unescaped specifier in {value!r}"
            out.append("%")
            i += 2
        else:
            out.append(value[i])
            i += 1
    return "".join(out)


_C_ESCAPES = {"a": "\a", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v", "\\": "\\",
              '"': '"', "'": "'", "s": " "}


def systemd_words(value: str) -> list[str]:
    """extract_first_word(EXTRACT_UNQUOTE|EXTRACT_CUNESCAPE) over the whole command line,
    then replace_env_argv, which turns $$ into $ (and would expand $NAME and ${NAME})."""
    words, word, quote, i, started = [], [], None, 0, False
    value = _specifiers(value)
    while i < len(value):
        char = value[i]
        if char == "\\":
            code = value[i + 1]
            if code in _C_ESCAPES:
                word.append(_C_ESCAPES[code])
                i += 2
            elif code in "xuU":
                width = {"x": 2, "u": 4, "U": 8}[code]
                word.append(chr(int(value[i + 2:i + 2 + width], 16)))
                i += 2 + width
            else:
                raise AssertionError(f"unknown escape in {value!r}")
            started = True
            continue
        if quote:
            if char == quote:
                quote = None
            else:
                word.append(char)
        elif char in "\"'":
            quote, started = char, True
        elif char in " \t\n":
            if started:
                words.append("".join(word))
            word, started = [], False
        else:
            word.append(char)
            started = True
        i += 1
    assert quote is None, f"unbalanced quotes in {value!r}"
    if started:
        words.append("".join(word))
    return [_environment(w) for w in words]


def _environment(word: str) -> str:
    out, i = [], 0
    while i < len(word):
        if word[i] == "$":
            assert word[i + 1:i + 2] == "$", f"unescaped $ in {word!r}"
            out.append("$")
            i += 2
        else:
            out.append(word[i])
            i += 1
    return "".join(out)


def test_systemd_word_model_reads_what_systemd_reads():
    assert systemd_words('/bin/sh -c "a %% $$x \\"q\\" \\\\ \\n" \'b c\' d\\x41') == [
        "/bin/sh", "-c", 'a % $x "q" \\ \n', "b c", "dA"]


def _stubs(tmp_path: Path, names) -> tuple[Path, Path]:
    """A directory of commands that only log their argv (JSON, one line per call)."""
    stubs, log = tmp_path / "stubs", tmp_path / "calls.log"
    stubs.mkdir()
    for name in names:
        stub = stubs / name
        stub.write_text("#!/bin/sh\nprintf '%s\\000' \"$#\" \"$@\" >> \"$STUB_LOG\"\n")
        stub.chmod(0o755)
    return stubs, log


def _calls(log: Path) -> list[list[str]]:
    """Each logged call: its argument count, then its arguments, NUL-terminated."""
    fields = log.read_bytes().decode().split("\0")[:-1] if log.exists() else []
    calls = []
    while fields:
        count, fields = int(fields[0]), fields[1:]
        calls.append(fields[:count])
        fields = fields[count:]
    return calls


def _install_unit(world, ctx, install):
    spec, _ = world.entry(ctx)
    spec = dataclasses.replace(spec, install=install)
    config = installer_config(ctx, spec, spec.profile, "http://10.0.0.5:8080/configs/node-1/x/ignition.json",
                              "sha512-" + "0" * 128)
    units = config["systemd"]["units"]
    assert [u["name"] for u in units] == ["bootgen-install.service"]
    return units[0]["contents"]


def _unit_keys(unit: str) -> list[tuple[str, str]]:
    """(key, value) of each assignment, with systemd's line continuation (a trailing backslash)."""
    keys, pending = [], ""
    for line in unit.split("\n"):
        line = pending + line
        if line.endswith("\\"):
            pending = line[:-1] + " "
            continue
        pending = ""
        if not line.strip() or line.lstrip().startswith(("#", ";", "[")):
            continue
        key, _, value = line.partition("=")
        keys.append((key.strip(), value.strip()))
    return keys


@pytest.mark.parametrize("field", ["disk", "channel", "version"])
def test_install_unit_has_one_execstart_running_exactly_the_installer(world, field, tmp_path):
    ctx = world.ctx()
    spec, _ = world.entry(ctx)
    benign_keys = [k for k, _ in _unit_keys(_install_unit(world, ctx, spec.install))]
    units, intended = {}, {}
    for i, value in enumerate(HOSTILE):
        install = dataclasses.replace(spec.install, **{field: value})
        if "\0" in value:
            with pytest.raises(Exception):
                _install_unit(world, ctx, install)
            continue
        unit = _install_unit(world, ctx, install)
        keys = _unit_keys(unit)
        assert [k for k, _ in keys] == benign_keys, (value, unit)
        assert [k for k, _ in keys].count("ExecStart") == 1
        argv = systemd_words(dict(keys)["ExecStart"])
        assert argv[:2] == ["/usr/bin/sh", "-c"] and len(argv) == 3, (value, argv)
        name = f"bootgen-install-{i}.service"
        (tmp_path / name).write_text(unit)
        units[name] = argv[2]
        want = ["-d", install.disk, "-i", "/opt/ignition.json"]
        if install.channel:
            want += ["-C", install.channel]
        if install.version:
            want += ["-V", install.version]
        intended[name] = want
    # systemd's own parser: every unit loads without a bad setting
    done = subprocess.run(["systemd-analyze", "verify", *[str(tmp_path / n) for n in units]],
                          capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert done.returncode == 0 and not done.stderr.strip(), done.stderr
    # the shell line it runs: exactly the installer, then settle and reboot (stubs only log)
    stubs, log = _stubs(tmp_path, ["flatcar-install", "udevadm", "systemctl"])
    for name, script in units.items():
        log.unlink(missing_ok=True)
        subprocess.run(["/bin/sh", "-c", script], env={"PATH": str(stubs), "STUB_LOG": str(log)},
                       cwd=tmp_path, timeout=30, check=True)
        assert _calls(log) == [intended[name], ["settle"], ["reboot"]], (name, script)


def test_install_unit_quotes_a_mirror_url_and_image_version(world, tmp_path):
    # `%25n`, not `%n`: the install config's source URL must still be one Ignition can parse.
    ctx = world.ctx(base_url="http://10.0.0.5:8080/a b;$(reboot)%25n`x`'\"/")
    image_set = ctx.images["flatcar-stable"]
    ctx.images["flatcar-stable"] = dataclasses.replace(image_set, installer_base="images/x y$z/",
                                                        version="1$(reboot)\n%i")
    spec, _ = world.entry(ctx)
    unit = _install_unit(world, ctx, spec.install)
    argv = systemd_words(dict(_unit_keys(unit))["ExecStart"])
    stubs, log = _stubs(tmp_path, ["flatcar-install", "udevadm", "systemctl"])
    subprocess.run(["/bin/sh", "-c", argv[2]], env={"PATH": str(stubs), "STUB_LOG": str(log)}, timeout=30,
                   check=True)
    assert _calls(log)[0] == ["-d", "/dev/sda", "-i", "/opt/ignition.json", "-b",
                              "http://10.0.0.5:8080/a b;$(reboot)%25n`x`'\"/images/x y$z/", "-V",
                              "1$(reboot)\n%i"]


# --- install.sh (CoreOS cloud-config) ------------------------------------------------------------

@pytest.mark.parametrize("field", ["disk", "channel", "version", "config_url"])
def test_install_script_runs_exactly_the_intended_commands(world, field, tmp_path):
    ctx = world.ctx()
    spec, _ = world.entry(ctx, "coreos-f786")
    stubs, log = _stubs(tmp_path, ["wget", "sudo"])
    for value in HOSTILE:
        install, url = spec.install, "http://10.0.0.5:8080/configs/coreos-f786/x/cloud-config.yml"
        if field == "config_url":
            url = value
        else:
            install = dataclasses.replace(install, **{field: value})
        hostile = dataclasses.replace(spec, install=install)
        if "\0" in value:
            with pytest.raises(Exception):
                install_script(ctx, hostile, hostile.profile, url)
            continue
        script = install_script(ctx, hostile, hostile.profile, url).decode()
        path = tmp_path / "install.sh"
        path.write_text(script)
        subprocess.run(["/bin/sh", "-n", str(path)], check=True, timeout=30)
        log.unlink(missing_ok=True)
        subprocess.run(["/bin/sh", str(path)], env={"PATH": str(stubs), "STUB_LOG": str(log)}, cwd=tmp_path,
                       timeout=30, check=True)
        want = ["coreos-install", "-d", install.disk, "-c", "/tmp/cloud-config.yml"]
        if install.channel:
            want += ["-C", install.channel]
        want += ["-V", install.version or ctx.images[spec.profile.images].version]
        assert _calls(log) == [["-O", "/tmp/cloud-config.yml", url], want, ["reboot"]], (value, script)


# --- dnsmasq ---------------------------------------------------------------------------------

def dnsmasq_options(text: str) -> list[tuple[str, str]]:
    """(option, value) per line as dnsmasq's read_file sees them: quotes removed with their
    escapes (what was quoted is never trimmed or split), `#` after whitespace starting a
    comment, one option per physical line of at most 1024 bytes (a longer one is read as two)."""
    out = []
    for line in text.split("\n"):
        assert len(line.encode()) <= 1023, line
        chars, i, white = [], 0, True  # (character, came from quotes)
        while i < len(line):
            char = line[i]
            if char == '"':
                i += 1
                while i < len(line) and line[i] != '"':
                    if line[i] == "\\" and i + 1 < len(line) and line[i + 1] in '"tnebr\\':
                        chars.append(({"t": "\t", "n": "\n", "e": "\x1b", "b": "\b", "r": "\r"}.get(
                            line[i + 1], line[i + 1]), True))
                        i += 2
                        continue
                    chars.append((line[i], True))
                    i += 1
                assert i < len(line), f"missing quote in {line!r}"
                i += 1
                white = False
                continue
            if char.isspace():
                white = True
                char = " "
            elif white and char == "#":
                break
            else:
                white = False
            chars.append((char, False))
            i += 1
        while chars and chars[0] == (" ", False):
            chars.pop(0)
        while chars and chars[-1] == (" ", False):
            chars.pop()
        if not chars:
            continue
        equals = next((j for j, c in enumerate(chars) if c == ("=", False)), len(chars))
        name = "".join(c for c, _ in chars[:equals]).strip(" ")
        value = "".join(c for c, _ in chars[equals + 1:])
        out.append((name, value))
    return out


def _dnsmasq_test(path: Path) -> None:
    assert shutil.which("dnsmasq"), "install Debian's dnsmasq"
    done = subprocess.run(["dnsmasq", "--test", "-C", str(path)], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stdout + done.stderr


def _server_files(world, hosts=(), **site):
    files = targets.server_configs(world.ctx(**site), hosts)
    return _text(files, "dnsmasq.conf"), _text(files, "nginx.conf")


HOSTS = (("52:54:00:12:34:56", "10.0.0.70", "node-1", ""),)  # (MAC, address, host name, dnsmasq tag)
SITE_FIELDS = {
    "root": lambda v: {"root": f"/srv/{v}"},
    "base_url": lambda v: {"base_url": f"http://10.0.0.5:8080/{v}/"},
    "interface": lambda v: {"interface": v},
    "name": lambda v: {"name": v},
    "server_name": lambda v: {"server_name": f"boot.example.com {v}"},
}
SITE_CASES = [(field, value) for field in SITE_FIELDS for value in HOSTILE]


@pytest.mark.parametrize("field,value", SITE_CASES, ids=[f"{f}-{i}" for f, v in SITE_CASES for i in _ids([v])])
def test_dnsmasq_config_has_only_the_directives_the_site_asked_for(world, field, value, tmp_path):
    benign, _ = _server_files(world, HOSTS, interface="eth0")
    changes = {"interface": "eth0", **SITE_FIELDS[field](value)}
    try:
        dnsmasq, _ = _server_files(world, HOSTS, **changes)
    except RenderError:
        must = {"root": [v for v in PRINTABLE + SPACED if "$" not in v], "name": HOSTILE,
                "server_name": [v for v in PRINTABLE + SPACED if "*" not in v]}.get(field, [])
        assert value not in must, f"{value!r} in {field} can be quoted but was refused"
        return
    (tmp_path / "dnsmasq.conf").write_text(dnsmasq)
    _dnsmasq_test(tmp_path / "dnsmasq.conf")
    options = dnsmasq_options(dnsmasq)
    assert [name for name, _ in options] == [name for name, _ in dnsmasq_options(benign)]
    values = dict(options)
    if field == "root":
        assert values["tftp-root"] == changes["root"]
    if field == "base_url":
        assert values["dhcp-boot"] == f"tag:ipxe,{changes['base_url']}boot.ipxe"
    if field == "interface":
        assert values["interface"] == value


def test_dnsmasq_refuses_a_line_its_reader_would_split(world):
    with pytest.raises(RenderError) as err:
        _server_files(world, root="/srv/" + "a" * 1010 + "dhcp-script=/tmp/evil")
    assert "longer than 1023 bytes" in err.value.problems[0].message


# --- nginx -----------------------------------------------------------------------------------

def nginx_parse(text: str):
    """Directives as (name, [args], children or None), read as ngx_conf_read_token does."""
    tokens, i = [], 0
    while i < len(text):
        char = text[i]
        if char in " \t\r\n":
            i += 1
        elif char == "#":
            while i < len(text) and text[i] != "\n":
                i += 1
        elif char in ";{}":
            tokens.append((char,))
            i += 1
        elif char in "\"'":
            i += 1
            word = []
            while text[i] != char:
                if text[i] == "\\" and text[i + 1] in "\"'\\tnr":
                    word.append({"t": "\t", "n": "\n", "r": "\r"}.get(text[i + 1], text[i + 1]))
                    i += 2
                else:
                    word.append(text[i])
                    i += 1
            i += 1
            tokens.append("".join(word))
        else:
            word = []
            while i < len(text) and text[i] not in " \t\r\n;{}":
                if text[i] == "\\":
                    word.append(text[i + 1])
                    i += 2
                else:
                    word.append(text[i])
                    i += 1
            tokens.append("".join(word))

    def block(pos):
        out, words = [], []
        while pos < len(tokens):
            token = tokens[pos]
            pos += 1
            if token == (";",):
                out.append((words[0], words[1:], None))
                words = []
            elif token == ("{",):
                children, pos = block(pos)
                out.append((words[0], words[1:], children))
                words = []
            elif token == ("}",):
                return out, pos
            else:
                words.append(token)
        assert not words
        return out, pos

    return block(0)[0]


def _nginx_test(tmp_path: Path, conf: str) -> None:
    assert shutil.which("nginx"), "install Debian's nginx"
    (tmp_path / "nginx.conf").write_text(conf)
    wrapper = tmp_path / "wrapper.conf"
    wrapper.write_text(f"pid {tmp_path}/nginx.pid;\nerror_log stderr;\nevents {{}}\n"
                       f"http {{\n    include {tmp_path}/nginx.conf;\n}}\n")
    done = subprocess.run(["nginx", "-t", "-q", "-e", "stderr", "-p", str(tmp_path), "-c", str(wrapper)],
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stdout + done.stderr


def _shape(directives):
    return [(name, args if name == "location" else None, _shape(children) if children else None)
            for name, args, children in directives]


@pytest.mark.parametrize("field,value", SITE_CASES, ids=[f"{f}-{i}" for f, v in SITE_CASES for i in _ids([v])])
def test_nginx_config_has_exactly_the_intended_location_blocks(world, field, value, tmp_path):
    _, benign = _server_files(world)
    changes = SITE_FIELDS[field](value)
    try:
        _, conf = _server_files(world, **changes)
    except RenderError:
        must = {"root": [v for v in PRINTABLE + SPACED if "$" not in v], "name": HOSTILE,
                "server_name": [v for v in PRINTABLE + SPACED if "*" not in v]}.get(field, [])
        assert value not in must, f"{value!r} in {field} can be quoted but was refused"
        return
    _nginx_test(tmp_path, conf)
    parsed = nginx_parse(conf)
    assert _shape(parsed) == _shape(nginx_parse(benign))
    server = {name: args for name, args, _ in parsed[0][2]}
    locations = [args for name, args, _ in parsed[0][2] if name == "location"]
    assert locations == [["/configs/"], ["/images/"], ["/index/"], ["/pxelinux.cfg/"], ["/grub/"], ["/ipxe/"],
                         ["/server/"],
                         ["=", "/SHA256SUMS"], ["=", "/meta-data"], ["=", "/network-config"], ["=", "/user-data"],
                         ["=", "/vendor-data"], ["/"]]
    if field == "root":
        assert server["root"] == [changes["root"]]
    if field == "server_name":
        assert server["server_name"] == changes["server_name"].split()


def test_nginx_refuses_a_variable_in_root(world):
    with pytest.raises(RenderError) as err:
        _server_files(world, root="/srv/$document_root")
    assert "'$'" in err.value.problems[0].message
    assert err.value.problems[0].path == "$.server.root"


def test_control_and_space_classes_match_the_unicode_tables():
    """The quoting checks use character classes for speed; they must be exactly the
    per-character definitions they replace, over every code point."""
    import unicodedata

    from bootgen import quoting

    for code in range(0x110000):
        char = chr(code)
        control = unicodedata.category(char) in ("Cc", "Zl", "Zp")
        assert quoting.has_control(f"a{char}b") is control, hex(code)
        assert quoting.has_space(f"a{char}b") is char.isspace(), hex(code)
