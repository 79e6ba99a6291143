"""Hostile values in any field of the site, a profile or a node (issue #13).

Hypothesis picks one field of the example site (every scalar in site/site.yaml, site/profiles/,
site/butane/ and nodes/, the keys of free-form maps, and optional fields the schemas define) and a
value for it: arbitrary text, line breaks and control characters, quotes, `;`, `$()`, `${`, `%`,
Jinja2 `{{ }}` and `{% %}`, YAML-special words, paths out of the site, very long strings, numbers,
lists and maps. The value is written with yaml.safe_dump (the YAML stays valid and the value
arrives exactly) or, sometimes, spliced raw into the text where the old value was.

Then `bootgen build --offline` runs (in-process through click, and one time in ten as a real
process) and:

- exits 0 or 1, never 3 (a bug) and never with a traceback;
- on 1, leaves the live tree (the `build` link and every file under it) as it was;
- on 0, every generated file parses with its reader: Ignition and Pixiecore JSON, cloud-init and
  Tinkerbell YAML, install.sh under sh, dnsmasq.conf under `dnsmasq --test`, nginx.conf under
  `nginx -t`, grub.cfg under grub-script-check; and when the field still holds a string, each
  pxelinux, iPXE, GRUB, dnsmasq and nginx file, the install unit's ExecStart and the shell steps
  keep the lines and commands the same site with a plausible value generates;
- never prints a private key pasted into a field, whatever else is wrong with it.

BOOTGEN_FUZZ_EXAMPLES sets the number of examples (40 by default). SHARP lists values at the edge
of a reader's limit, which random search reaches only now and then; they run every time.
"""
from __future__ import annotations

import collections
import importlib.util
import os
import shutil
import subprocess
import sys
import traceback
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from bootgen.cli import main


def _support():
    name = "bootgen_tests_load_fuzz_support"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, Path(__file__).with_name("fuzz_support.py"))
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


fs = _support()
ROOT = fs.ROOT
EXAMPLES = int(os.environ.get("BOOTGEN_FUZZ_EXAMPLES", "40"))
BUILD = ["build", "--offline"]

# --- values ------------------------------------------------------------------------------------

TEMPLATES = ["{{ }}", "{{", "}}", "{% %}", "{%", "%}", "{#", "{{ config_url }}", "{{ '\\n' }}", '{{ "a\\nb" }}',
             "{{ '\\x00' }}", "{{ 'x' * 100000 }}", "{{ 'a b' }}", "{{ '${x}' }}", "{{ '#' }}", "{{ ';' }}",
             "{% for i in range(100000000) %}x{% endfor %}", "{{ ''.__class__ }}", "{{ vars }}", "{{ site }}",
             "{{ node }}", "{{ images }}", "{{ install }}", "{{ lipsum() }}", "{{ range(10) | list }}",
             "{{ cycler }}", "{% include 'x' %}", "{% macro m() %}{% endmacro %}", "{{ 1 / 0 }}",
             "{{ 1 + 'a' }}", "{{ vars.nope }}", "{{ self }}", "{{ 9 ** 9 ** 9 }}", "{{ config_url[::-1] }}",
             "{% raw %}{{{% endraw %}", "{{ '%s' % 'x' }}", "{{ 'a'.format(x=1) }}", "{{ hostname ~ '\\r' }}"]
YAML_WORDS = ["", " ", "~", "null", "Null", "NULL", "yes", "no", "on", "off", "y", "n", "true", "False", "0",
              "-0", "0o17", "0x1F", "017", "1e3", "1_000", ".inf", "-.inf", ".nan", "12:30:45", "190:20:30",
              "2001-12-14", "2001-12-14t21:59:43.10-05:00", "=", "<<", "*", "&a", "*a", "!!str", "!binary",
              "- x", "? x", ": x", "x: y", "[a]", "{a: b}", "---", "...", "%YAML 1.1", "%TAG ! x", "#", "@", "`",
              "|", ">", "'", '"', "\\", "\t", "\ufeff", "\ufeffx"]
PATHS = ["../../../../etc/passwd", "/etc/shadow", "..", ".", "/", "//", "a/../../b", "/dev/sda/../../etc/x",
         "/dev/", "/dev/sda\n", "butane/../../nodes/node-1.yaml", "~root/.ssh/id_rsa", "file:///etc/passwd",
         "http://169.254.169.254/latest/meta-data/", "/proc/self/environ", "/dev/zero", "-rf", "--help"]
SECRET_BODY = "b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQ"  # base64 of "openssh-key-v1" and on
PRIVATE_KEY = f"-----BEGIN OPENSSH PRIVATE KEY-----\n{SECRET_BODY}\n-----END OPENSSH PRIVATE KEY-----"
SECRETS = [PRIVATE_KEY, f"{PRIVATE_KEY}\n", f"x {SECRET_BODY}",
           "b3BlbnNzaC1rZXktdjE", "ssh-ed25519 AAAA x\nssh-rsa AAAA y", "ssh-ed25519 AAAA\u2028comment",
           "$6$salt$" + "a" * 86, "$1$x$y", "plaintext"]
# YAML that means something other than a string when spliced raw into a file.
RAW_YAML = ["!!python/object/apply:os.system ['id']", "!!binary aGVsbG8=", "!!set {a, b}", "!!omap [a: 1]",
            "!!timestamp 2001-01-01", "!!float x", "!!int x", "!!map x", "!!seq x", "!foo x", "!<tag:x> y", "!!str",
            "&a [*a]", "*nope", "[" * 200 + "]" * 200, "{a: " * 100 + "1" + "}" * 100, "&a x\nx: *a",
            "x\n<<: {hostname: evil}", "x\n? [a, b]\n: c", "x\n1: x", "x\nnull: x", "x\n2001-01-01: x", "x\nx: 1",
            "'\\x00'", '"\\x00"', '"\\ud800"', '"\\uFFFE"', '"\\N\\_\\L\\P"', '"a\\\n b"', "|\n  a\n b", ">-\n  x",
            "|+\n\n\n", "|0\n x", "\t", "%YAML 1.2\n---\nx", "--- x\n--- y", "x\n...\n---\n- a", "1e99999",
            "0x" + "f" * 3600, "0" + "7" * 4800, "0b" + "1" * 14400, "1" + "0" * 5000, "!!int 0x" + "f" * 3600,
            "1:" * 3000 + "1", "-.inf", ".NaN", "[&a [a,a,a,a,a,a,a,a,a], &b [*a,*a,*a,*a,*a,*a,*a,*a,*a], "
            "&c [*b,*b,*b,*b,*b,*b,*b,*b,*b], &d [*c,*c,*c,*c,*c,*c,*c,*c,*c], &e [*d,*d,*d,*d,*d,*d,*d,*d,*d], "
            "&f [*e,*e,*e,*e,*e,*e,*e,*e,*e]]"]
LIBRARY = fs.inj.HOSTILE + TEMPLATES + YAML_WORDS + RAW_YAML + PATHS + SECRETS + [
    "\x00", "\x7f", "\x85", "\u2028", "\u2029", "\x1b[31m", "\r\n", "\n", "a\n", "\n\n", "\u202e", "\u200b",
    "\U0001f600", "é", "Ǆ", "ﬀ", "İ", "K", "%n%s%x", "%%%", "${net0/mac}", "$(reboot)\n", "`id`", "x\\",
    "eth0\n", "node-1\n", "stable\n", "/dev/sda\n", "10.0.0.70\n", "boot.example.com\n", "a" * 63, "a" * 64,
    "-a", "a-", "xn--", "a.b", "A", "0", "localhost", "default", "ipxe", "none", "core", "root"]
SPECIAL_CHARS = "\n\r\t\x00\x0b\x0c\x1b\x7f\x85\u2028\u2029 \"'`;$(){}[]%#\\|&<>*?!,=:@~^-./_aZ09é\u200b"
LONG_UNITS = ["a", "x ", "é", "{{ 1 }}", "\\n", "%", "$", "/a", "a,", "\U0001f600"]
LONG_COUNTS = [256, 1016, 1023, 1024, 2048, 4090, 4094, 4095, 4096, 4100, 8191, 8192, 65535, 65537]
TYPED = [None, True, False, 0, -1, 2 ** 64, 1.5, float("inf"), [], {}, ["x"], {"a": "b"}, [["x"]], {"a": {"b": 1}}]
MAX_CHARS = 1 << 17


@st.composite
def values(draw, original, key=False):
    how = draw(st.sampled_from(["text", "library", "near", "special", "long", "typed", "library", "near"]))
    if how == "text":
        return draw(st.text(st.characters(exclude_categories=("Cs",)), max_size=40))
    if how == "library":
        return draw(st.sampled_from(LIBRARY))
    if how == "special":
        return draw(st.text(st.sampled_from(SPECIAL_CHARS), min_size=1, max_size=24))
    if how == "long":
        return draw(st.sampled_from(LONG_UNITS)) * draw(st.sampled_from(LONG_COUNTS))
    if how == "typed":  # a map key can be any scalar, not a list or a map
        return draw(st.sampled_from([v for v in TYPED if not key or not isinstance(v, (list, dict))]))
    # near: a plausible value with something hostile before, after or inside it
    base = original if isinstance(original, str) else str(original)
    piece = draw(st.one_of(st.sampled_from(LIBRARY), st.text(st.sampled_from(SPECIAL_CHARS), min_size=1,
                                                                max_size=6)))
    where = draw(st.integers(0, len(base)))
    return (base[:where] + piece + base[where:])[:MAX_CHARS]




# --- running a build -----------------------------------------------------------------------------

def _in_process(workspace: Path, env=None):
    here = os.getcwd()
    os.chdir(workspace)
    try:
        result = CliRunner().invoke(main, BUILD, env=env)
    finally:
        os.chdir(here)
    return result, result.output


def _subprocess(workspace: Path):
    env = {k: v for k, v in os.environ.items() if k != "BOOTGEN_DEBUG"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    done = subprocess.run([sys.executable, "-m", "bootgen", *BUILD], cwd=workspace, capture_output=True, text=True,
                          env=env, timeout=300)
    return done.returncode, done.stdout + done.stderr


def _describe(value) -> str:
    text = repr(value)
    return text if len(text) < 300 else f"{text[:200]}... ({len(text)} characters)"


class Fuzzer:
    """A copy of the example site, built once, and a way to try one value in one field."""

    def __init__(self, base: Path):
        self.workspace = base / "repo"
        shutil.copytree(ROOT / "site", self.workspace / "site")
        shutil.copytree(ROOT / "nodes", self.workspace / "nodes")
        (self.workspace / "site" / "keys").mkdir()
        (self.workspace / "site" / "keys" / "fuzz.asc").write_text("placeholder for the optional keys field\n")
        self.link = self.workspace / "build"
        self.checker = fs.Checker(base / "scratch")
        self.fields = fs.enumerate_fields(self.workspace)
        self.originals = {f.file: (self.workspace / f.file).read_text() for f in self.fields}
        self.outcomes = collections.Counter()
        result, output = _in_process(self.workspace)
        assert result.exit_code == 0, output
        self.checker.verify_sums(self.link.resolve())
        self.baselines = {None: self.checker.learn(self.link.resolve())}

    def field(self, file: str, path: tuple):
        return next(f for f in self.fields if f.file == file and f.path == path)

    def original(self, field):
        return fs.original_value(self.workspace, field)

    def baseline_for(self, field):
        """The structure of the tree the site generates with the field's optional subtree added and
        its plausible value: what the tree with the hostile value is compared with."""
        key = None if field.extra is None else (field.file, repr(field.extra[0]))
        if key not in self.baselines:
            original = self.original(field)
            self._write(field, fs.write_value(self.workspace, self.originals[field.file], field, original, raw=False,
                                              allow_unicode=True))
            try:
                result, output = _in_process(self.workspace)
                assert result.exit_code == 0, f"{field} with its plausible value {original!r}:\n{output}"
                self.baselines[key] = self.checker.learn(self.link.resolve())
            finally:
                self._write(field, self.originals[field.file])
        return self.baselines[key]

    def _write(self, field, text: str) -> None:
        (self.workspace / field.file).write_text(text, encoding="utf-8")

    def attempt(self, field, value, *, raw=False, allow_unicode=True, separate=False) -> int:
        """Build with `value` in `field`; assert what a build must do; return its exit code."""
        baseline = self.baseline_for(field)
        text = fs.write_value(self.workspace, self.originals[field.file], field, value, raw=raw,
                              allow_unicode=allow_unicode)
        what = f"{field} = {_describe(value)}" + (" (spliced raw)" if raw else "")
        self._write(field, text)
        try:
            live_before = fs.tree_digest(self.link)
            if separate:
                code, output = _subprocess(self.workspace)
            else:
                result, output = _in_process(self.workspace)
                assert result.exception is None or isinstance(result.exception, SystemExit), (
                    f"{what}: uncaught {result.exception!r}\n"
                    + "".join(traceback.format_exception(*result.exc_info))[-4000:])
                code = result.exit_code
            if code == 3:
                raise AssertionError(f"{what}: exit 3 (a bug in bootgen)\n{output}\n{self._debug_traceback()}")
            assert code in (0, 1), f"{what}: exit {code}\n{output}"
            assert "Traceback" not in output and "bug in bootgen" not in output, f"{what}:\n{output}"
            if SECRET_BODY in str(value):  # a private key is never printed, whatever else is wrong with it
                assert SECRET_BODY not in output, f"{what}: the output shows the private key:\n{output}"
            if code == 1:
                assert "error" in output, f"{what}: exit 1 without a problem:\n{output}"
                assert fs.tree_digest(self.link) == live_before, f"{what}: exit 1 changed the live tree\n{output}"
            else:
                tree = self.link.resolve()
                self.checker.verify_sums(tree)
                try:
                    # A string keeps every file's lines and commands; a list or a map may rightly not
                    # (no initrds, no DNS servers), so then each file only has to parse.
                    self.checker.check(tree, baseline, same_structure=fs.lands_as_text(text, field))
                except AssertionError as exc:
                    raise AssertionError(f"{what}: exit 0 but a generated file is wrong: {exc}") from None
            self.outcomes[code] += 1
            return code
        finally:
            self._write(field, self.originals[field.file])

    def _debug_traceback(self) -> str:
        """The traceback of the same build with BOOTGEN_DEBUG=1, for the report."""
        result, _ = _in_process(self.workspace, env={"BOOTGEN_DEBUG": "1"})
        if result.exc_info and not isinstance(result.exception, SystemExit):
            return "".join(traceback.format_exception(*result.exc_info))[-4000:]
        return "(no traceback with BOOTGEN_DEBUG=1)"


@pytest.fixture(scope="module")
def fuzzer(tmp_path_factory):
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv("BOOTGEN_DEBUG", raising=False)
        yield Fuzzer(tmp_path_factory.mktemp("fuzz"))


# --- the tests -----------------------------------------------------------------------------------

def test_a_hostile_value_in_any_field_is_refused_or_written_so_every_file_parses(fuzzer):
    # No shrinking: each step is a build, and the failure message already names the field and value.
    @settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None, print_blob=False,
              phases=[Phase.explicit, Phase.generate],
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example])
    @given(st.data())
    def one_value(data):
        field = data.draw(st.sampled_from(fuzzer.fields), label="field")
        value = data.draw(values(fuzzer.original(field), key=field.path[-1] == fs.KEY), label="value")
        raw = (isinstance(value, str) and field.existing and field.path[-1] != fs.KEY
               and data.draw(st.integers(0, 4), label="raw splice") == 0)
        fuzzer.attempt(field, value, raw=raw, allow_unicode=data.draw(st.booleans(), label="allow_unicode"),
                       separate=data.draw(st.integers(0, 9), label="as a process") == 0)

    one_value()
    print(f"\nfuzzed fields: {EXAMPLES} examples over {len(fuzzer.fields)} fields, exits "
          f"{dict(sorted(fuzzer.outcomes.items()))}")


# Values random search reaches only now and then, each at the edge of a limit of some reader: they
# run on every test run. (name, file, field path, value, spliced raw)
SHARP = [
    # GRUB's lexer aborts on a word of 8192 bytes or more (YYLMAX); the fcos profile has no pxelinux
    # entry, whose 4094-byte line limit would refuse it first.
    ("grub-word-8192-node-kernel-arg", "nodes/fcos-1.yaml", ("kernel_args", 0), "x=" + "a" * 8190, False),
    ("grub-word-8192-profile-var", "site/profiles/fcos-install.yaml", ("vars", "rootfs_url"),
     "http://10.0.0.5/" + "a" * 8200, False),
    ("grub-word-4000", "nodes/fcos-1.yaml", ("kernel_args", 0), "x=" + "a" * 4000, False),
    # nginx refuses a parameter of 4096 bytes or more ("too long parameter").
    ("nginx-server-name-4096", "site/site.yaml", ("server", "server_name"), "a" * 4096, False),
    ("nginx-server-name-4000", "site/site.yaml", ("server", "server_name"), "a" * 4000, False),
    # An integer spelled in hex, octal or binary with more than 4300 decimal digits.
    ("yaml-hex-int-4300-digits", "nodes/node-1.yaml", ("hostname",), "0x" + "f" * 3600, True),
    ("yaml-binary-int-4300-digits", "site/site.yaml", ("name",), "0b" + "1" * 14400, True),
    # A private key pasted into a field that refuses it for another reason (a line break, not a
    # host name) is still not printed; in vars it is refused as a key and not printed.
    ("private-key-in-kernel-arg", "nodes/node-1.yaml", ("kernel_args", 0), PRIVATE_KEY, False),
    ("private-key-in-hostname", "nodes/node-1.yaml", ("hostname",), PRIVATE_KEY, False),
    ("private-key-in-site-name", "site/site.yaml", ("name",), PRIVATE_KEY, False),
    ("private-key-in-vars", "nodes/node-1.yaml", ("vars", "fuzz"), PRIVATE_KEY, False),
    # Trailing line breaks, which `$` in a pattern lets through.
    ("channel-trailing-newline", "site/profiles/coreos-cloud-config.yaml", ("install", "channel"), "stable\n", False),
    ("interface-trailing-newline", "site/site.yaml", ("dhcp", "interface"), "eth0\n", False),
    ("hostname-trailing-newline", "nodes/node-1.yaml", ("hostname",), "node-1\n", False),
    # Templates in data that render a line break or a `${`.
    ("template-renders-newline", "nodes/node-1.yaml", ("kernel_args", 0), "{{ '\\n' }}", False),
    ("template-renders-dollar-brace", "nodes/node-1.yaml", ("kernel_args", 0), "{{ '$' ~ '{x}' }}", False),
]


@pytest.mark.parametrize("file,path,value,raw", [case[1:] for case in SHARP], ids=[case[0] for case in SHARP])
def test_a_value_at_the_edge_of_a_readers_limit_is_refused_or_written_readably(fuzzer, file, path, value, raw):
    fuzzer.attempt(fuzzer.field(file, path), value, raw=raw)
