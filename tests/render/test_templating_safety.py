"""Templates in data run in a sandbox; template files and their cache never crash a build.

Strings in site.yaml, profiles and node files are data: a node file must not be
able to run code, read files or exhaust the machine through Jinja. Every error
while rendering (data strings or template files) is a problem that names the
file and line, and the compiled-template cache is only ever an optimisation.
"""
from __future__ import annotations

import marshal
import os
import re
import subprocess
import sys
import time
import types
from pathlib import Path

import jinja2
import pytest

from bootgen.errors import InputError, Location, Problem, RenderError
from bootgen.render.templating import MAX_DATA_CHARS, Templates, builtin_template_names

ROOT = Path(__file__).resolve().parent.parent.parent
WHERE = Location("nodes/n1.yaml", 7, 5)
FIELD = "$.kernel_args[0]"
CONTEXT = {"hostname": "n1", "vars": {"role": "db", "n": 3, "disk": "/dev/sda"}, "path": Path("/etc/passwd"),
           "items": ["a", "b", "c"], "blob": types.SimpleNamespace(text="x" * 20000)}
TOO_LONG = f"template in data may not make a value or output of more than {MAX_DATA_CHARS} characters"


def _render(source: str, templates: Templates | None = None) -> str:
    templates = templates or Templates(None, Path.cwd())
    return templates.render_string(source, CONTEXT, WHERE, FIELD)


def _refusal(source: str) -> str:
    """The one problem a data string is refused with; it must be at the data's position and field."""
    with pytest.raises(RenderError) as caught:
        _render(source)
    [problem] = caught.value.problems
    assert (problem.location, problem.path) == (WHERE, FIELD)
    prefix = f"in template {source!r}: "
    assert problem.message.startswith(prefix), problem.message
    return problem.message[len(prefix):]


# -- data strings: what still works ------------------------------------------------------------------


@pytest.mark.parametrize(("source", "expected"), [
    ("plain=value", "plain=value"),
    ("hostname={{ hostname }}", "hostname=n1"),
    ("role={{ vars.role|upper }} n={{ vars.n * 2 + 1 }}", "role=DB n=7"),
    ("{% if vars.role == 'db' %}big{% else %}small{% endif %}", "big"),
    ("{% for i in range(3) %}{{ i }}{% if not loop.last %},{% endif %}{% endfor %}", "0,1,2"),
    ("{% for x in items %}{{ loop.cycle('+', '-') }}{{ x }}{% endfor %}", "+a-b+c"),
    ("{{ items|join(',') }} {{ items|map('upper')|join }}", "a,b,c ABC"),
    ("{{ 'root=' ~ vars.disk ~ '1' }}", "root=/dev/sda1"),
    ("{{ '%s-%02d' % (hostname, vars.n) }} {{ '{}:{}'.format(hostname, 80) }}", "n1-03 n1:80"),
    ("{{ hostname.replace('n', 'node-') }} {{ vars.get('missing', 'dflt') }}", "node-1 dflt"),
    ("{% set x %}<{{ hostname }}>{% endset %}{{ x }}{% filter upper %}ok{% endfilter %}", "<n1>OK"),
    ("{{ vars.ramdisk_kb|default(1048576) }} {{ 'a b'|grub_quote }}", "1048576 'a b'"),
    ("{{ dict(a=1)|tojson }} {{ vars|dictsort|first|last }}", '{"a": 1} /dev/sda'),
])
def test_ordinary_data_templates_render(source, expected):
    assert _render(source) == expected


# -- data strings: what is refused -----------------------------------------------------------------


@pytest.mark.parametrize(("source", "message"), [
    ("{{ ''.__class__.__mro__ }}", "template in data may not access attribute '__class__'"),
    ("{{ cycler.__init__.__globals__.os.popen('id').read() }}",
     "template in data may not access attribute '__init__'"),
    ("{{ lipsum.__globals__ }}", "undefined variable: 'lipsum' is undefined"),
    ("{{ joiner() }}", "undefined variable: 'joiner' is undefined"),
    ("{{ namespace(a=1) }}", "undefined variable: 'namespace' is undefined"),
    ("{{ self }}", "template in data may not use 'self'"),
    ("{{ self._TemplateReference__context }}", "template in data may not use 'self'"),
    ("{{ vars|attr('__class__') }}", "template in data may not access attribute '__class__'"),
    ("{{ vars['__class__'] }}", "template in data may not access attribute '__class__'"),
    ("{{ '{0.__class__}'.format(1) }}", "template in data may not access attribute '__class__'"),
    ("{{ items|map(attribute='__class__')|list }}", "template in data may not access attribute '__class__'"),
    ("{{ hostname.__len__() }}", "template in data may not access attribute '__len__'"),
    ("{{ vars.update(role='x') }}", "template in data may not access attribute 'update'"),
    ("{{ path.read_text() }}", "template in data may not call 'PosixPath.read_text'"),
    ("{{ path.parent.joinpath('shadow') }}", "template in data may not call 'PosixPath.joinpath'"),
    ("{{ hostname.translate({110: 'x'}) }}", "template in data may not call 'str.translate'"),
    ("{{ dict.fromkeys('ab') }}", "template in data may not call 'dict.fromkeys'"),
    ("{{ environ }}", "undefined variable: 'environ' is undefined"),
    ("{{ config }}", "undefined variable: 'config' is undefined"),
])
def test_python_internals_and_the_file_system_are_out_of_reach(source, message):
    assert _refusal(source) == message


@pytest.mark.parametrize(("source", "message"), [
    ("{% include '/etc/passwd' %}", "template in data may not use {% include %}"),
    ("{% import 'grub.cfg.j2' as g %}", "template in data may not use {% import %}"),
    ("{% from 'grub.cfg.j2' import x %}", "template in data may not use {% from ... import %}"),
    ("{% extends 'grub.cfg.j2' %}", "template in data may not use {% extends %}"),
    ("{% block b %}x{% endblock %}", "template in data may not use {% block %}"),
    ("{% macro f() %}{{ f() }}{% endmacro %}{{ f() }}", "template in data may not use {% macro %}"),
    ("{% for x in [[1]] recursive %}{{ loop(x) }}{% endfor %}", "template in data may not use recursive loops"),
])
def test_data_strings_cannot_load_templates_or_recurse(source, message):
    assert _refusal(source) == message


@pytest.mark.timeout(60)
@pytest.mark.parametrize(("source", "message"), [
    ("{{ 'x' * 10**10 }}", TOO_LONG),
    ("{{ [0] * 10**10 }}", TOO_LONG),
    ("{{ 2 ** (10**9) }}", TOO_LONG),
    ("{% for i in range(10**9) %}{% endfor %}", "template in data may not make a range of more than 10000 numbers"),
    ("{{ range(10**100)|list }}", "template in data may not make a range of more than 10000 numbers"),
    ("{% set s = 'x' * 60000 %}{% for a in s %}{% for b in s %}{% endfor %}{% endfor %}",
     "template in data takes too many steps (the limit is 250000)"),
    ("{% for i in range(10000) %}{{ 'x' * 60000 }}{% endfor %}", TOO_LONG),
    ("{% set s = 'x' * 60000 %}{% set t %}{% for i in range(10000) %}{{ s }}{% endfor %}{% endset %}", TOO_LONG),
    ("{% set s = 'x' * 60000 %}{{ s ~ s }}", TOO_LONG),
    ("{% set s = 'x' * 40000 %}{{ s + s }}", TOO_LONG),
    ("{% set s = 'x' * 8000 %}{{ [s, s, s, s, s, s, s, s, s, s] }}", TOO_LONG),
    ("{% set s = 'x' * 60000 %}{{ s|replace('x', s) }}", TOO_LONG),
    ("{% set s = 'x' * 60000 %}{{ s.replace('x', s) }}", TOO_LONG),
    ("{% set s = 'x' * 60000 %}{{ s|replace(old='x', new=s) }}", TOO_LONG),
    ("{{ ([blob] * 50)|join(attribute='text') }}", TOO_LONG),
    ("{% set s = 'x' * 60000 %}{{ s|list|join(s) }}", TOO_LONG),
    ("{% set s = 'x' * 60000 %}{{ s.join(s) }}", TOO_LONG),
    ("{% set s = '\n' * 30000 %}{{ s|indent(60000) }}", TOO_LONG),
    ("{% set s = 'y' * 30000 %}{{ s|wordwrap(1, wrapstring=s) }}", TOO_LONG),
    ("{{ ('\t' * 1000).expandtabs(60000) }}", TOO_LONG),
    ("{{ ('\t' * 60000).expandtabs(tabsize=60000) }}", TOO_LONG),
    ("{{ 'x'|center(10**10) }}", "template in data may not use a width or count of more than 65536"),
    ("{{ 'x'.ljust(10**10) }}", "template in data may not use a width of more than 65536"),
    ("{{ '%09999999999d'|format(1) }}", "template in data may not use a width of more than 65536"),
    ("{{ '%0999999d' % 1 }}", "template in data may not use a width of more than 65536"),
    ("{{ '%*d' % (10**9, 1) }}", "template in data may not use '*' for a width in a format"),
    ("{{ '{:>9999999999}'.format(1) }}", "template in data may not use a width of more than 65536"),
    ("{{ '{:>{w}}'.format(1, w=10**9) }}", "template in data may not nest fields in a format"),
])
def test_huge_values_and_endless_loops_fail_fast(source, message):
    started = time.monotonic()
    assert _refusal(source) == message
    assert time.monotonic() - started < 5


def test_a_long_template_is_refused_before_it_compiles():
    source = "{{ 'x' }}" + "y" * MAX_DATA_CHARS
    with pytest.raises(RenderError) as caught:
        _render(source)
    assert caught.value.problems[0].message == f"in template {source[:200]!r} (and {len(source) - 200} more " \
        f"characters): template in data may not be longer than {MAX_DATA_CHARS} characters"


def test_a_long_plain_value_is_refused_too():
    with pytest.raises(RenderError) as caught:
        _render("x" * (MAX_DATA_CHARS + 1))
    assert caught.value.problems == [Problem(WHERE, f"value is longer than {MAX_DATA_CHARS} characters", FIELD)]


@pytest.mark.parametrize(("source", "message"), [
    ("{{ 1 / 0 }}", "ZeroDivisionError: division by zero"),
    ("{{ 1 + 'a' }}", "TypeError: unsupported operand type(s) for +: 'int' and 'str'"),
    ("{{ items|sum }}", "TypeError: unsupported operand type(s) for +: 'int' and 'str'"),
    ("{{ nope() }}", "undefined variable: 'nope' is undefined"),
    ("{{ vars.missing }}", "undefined variable: 'dict object' has no attribute 'missing'"),
    ("{{ x }", "unexpected '}'"),
])
def test_errors_in_data_templates_are_input_errors(source, message):
    assert _refusal(source) == message


def test_a_long_template_is_shown_shortened():
    source = "{{ nope }}" + "x" * 500
    with pytest.raises(RenderError) as caught:
        _render(source)
    assert caught.value.problems[0].message == \
        f"in template {source[:200]!r} (and 310 more characters): undefined variable: 'nope' is undefined"


def test_the_sandbox_is_separate_from_the_template_files(tmp_path):
    templates = Templates(None, tmp_path)
    templates.env.filters["shout"] = str.upper  # a filter registered for the template files
    assert templates.env.globals.get("cycler") is not None
    assert "cycler" not in templates.data_env.globals
    assert sorted(templates.data_env.globals) == ["dict", "range"]
    with pytest.raises(RenderError, match="No filter named 'shout'"):
        _render("{{ hostname|shout }}", templates)


# -- template files: every error is a problem at the file's line ---------------------------------


def _site(tmp_path: Path, **files: str) -> Path:
    templates = tmp_path / "site" / "templates"
    templates.mkdir(parents=True)
    for name, text in files.items():
        (templates / name.replace("_", ".")).write_text(text)
    return templates


def _file_problem(templates_dir: Path, root: Path, context=None, name="node.ipxe.j2") -> str:
    with pytest.raises(RenderError) as caught:
        Templates(templates_dir, root).render(name, context or {"title": "t"}, node="n1")
    [problem] = caught.value.problems
    return problem.format()


class _NoMemory:
    def __str__(self):
        raise MemoryError


@pytest.mark.parametrize(("body", "expected"), [
    ('#!ipxe\n# fine\nchain {{ 1 + "a" }}\n',
     "site/templates/node.ipxe.j2:3:1: error: TypeError: unsupported operand type(s) for +: 'int' and 'str' "
     "(rendering node 'n1')"),
    ("#!ipxe\n{{ 1 // 0 }}\n",
     "site/templates/node.ipxe.j2:2:1: error: ZeroDivisionError: integer division or modulo by zero "
     "(rendering node 'n1')"),
    ('#!ipxe\n\n{{ "a"|round }}\n',
     "site/templates/node.ipxe.j2:3:1: error: TypeError: type str doesn't define __round__ method "
     "(rendering node 'n1')"),
    ("{% macro f() %}{{ f() }}{% endmacro %}\n{{ f() }}\n",
     "site/templates/node.ipxe.j2:1:1: error: recursion too deep (a macro or include that calls itself?) "
     "(rendering node 'n1')"),
    ("#!ipxe\n{% include 'node.ipxe.j2' %}\n",
     "site/templates/node.ipxe.j2:2:1: error: recursion too deep (a macro or include that calls itself?) "
     "(rendering node 'n1')"),
    ("#!ipxe\n{% include 'partial.j2' %}\n",
     "site/templates/node.ipxe.j2:2:1: error: no template named 'partial.j2' (rendering node 'n1')"),
    ("#!ipxe\n\n\n{{ title }\n",
     "site/templates/node.ipxe.j2:4:1: error: unexpected '}' (rendering node 'n1')"),
    ("#!ipxe\n{{ no_such }}\n",
     "site/templates/node.ipxe.j2:2:1: error: undefined variable: 'no_such' is undefined (rendering node 'n1')\n"
     "  hint: every variable a template uses must be defined; see README 'Templates'"),
])
def test_errors_in_template_files_name_the_file_line_and_node(tmp_path, body, expected):
    assert _file_problem(_site(tmp_path, node_ipxe_j2=body), tmp_path) == expected


def test_memory_error_while_rendering_a_file_is_a_problem(tmp_path):
    templates = _site(tmp_path, node_ipxe_j2="#!ipxe\n\n{{ title }}\n")
    assert _file_problem(templates, tmp_path, {"title": _NoMemory()}) == \
        "site/templates/node.ipxe.j2:3:1: error: out of memory (rendering node 'n1')"


def test_a_file_that_is_not_utf8_is_a_problem(tmp_path):
    templates = _site(tmp_path)
    (templates / "node.ipxe.j2").write_bytes(b"#!ipxe\n\nchain \xff\n")
    assert _file_problem(templates, tmp_path) == \
        "site/templates/node.ipxe.j2:3:1: error: is not UTF-8 text (rendering node 'n1')"


def test_errors_reported_by_the_caller_pass_through(tmp_path):
    templates = Templates(_site(tmp_path, node_ipxe_j2="{{ title|refuse }}"), tmp_path)
    refusal = InputError(Problem(Location("site/site.yaml", 2, 1), "refused"))

    def refuse(value):
        raise refusal

    templates.env.filters["refuse"] = refuse
    with pytest.raises(InputError) as caught:
        templates.render("node.ipxe.j2", {"title": "t"}, node="n1")
    assert caught.value is refusal


def test_quoting_refusals_pass_through(tmp_path):
    quoting = pytest.importorskip("bootgen.quoting")
    templates = Templates(_site(tmp_path, node_ipxe_j2="{{ title|refuse }}"), tmp_path)

    def refuse(value):
        raise quoting.UnsafeValue(value, "iPXE", "test")

    templates.env.filters["refuse"] = refuse
    with pytest.raises(quoting.UnsafeValue):
        templates.render("node.ipxe.j2", {"title": "t"}, node="n1")


# -- overrides in site/templates -------------------------------------------------------------------


def _override_problems(templates_dir: Path, root: Path) -> list[str]:
    with pytest.raises(RenderError) as caught:
        Templates(templates_dir, root)
    return [problem.format() for problem in caught.value.problems]


def test_overrides_must_be_regular_files_in_the_site_named_after_builtins(tmp_path):
    templates = _site(tmp_path, pxelinux_cfg="x", README="notes", _gitkeep="")
    (templates / "grub.cfg.j2.bak").write_text("old")
    (tmp_path / "secret.txt").write_text("SECRET")
    (templates / "grub.cfg.j2").symlink_to(tmp_path / "secret.txt")
    (templates / "node.ipxe.j2").symlink_to("/etc/passwd")
    os.mkfifo(templates / "pxelinux.cfg.j2")
    (templates / "boot.ipxe.j2").mkdir()
    (templates / "dnsmasq.conf.j2").symlink_to(templates / "gone.j2")
    names = ", ".join(builtin_template_names())
    regular = "  hint: an override in site/templates must be a regular file in the site directory"
    unknown = f"  hint: an override must have the name of the template it replaces: {names}"
    assert _override_problems(templates, tmp_path) == [
        f"site/templates/boot.ipxe.j2: error: is a directory, not a regular file\n{regular}",
        f"site/templates/dnsmasq.conf.j2: error: is a symlink to a file that does not exist\n{regular}",
        f"site/templates/grub.cfg.j2: error: is a symlink to '{tmp_path / 'secret.txt'}', outside the site "
        f"directory\n{regular}",
        f"site/templates/grub.cfg.j2.bak: error: 'grub.cfg.j2.bak' is not the name of a built-in template\n{unknown}",
        f"site/templates/node.ipxe.j2: error: is a symlink to '/etc/passwd', outside the site directory\n{regular}",
        f"site/templates/pxelinux.cfg: error: 'pxelinux.cfg' is not the name of a built-in template\n{unknown}",
        f"site/templates/pxelinux.cfg.j2: error: is a FIFO, not a regular file\n{regular}",
    ]
    assert names == "boot.ipxe.j2, config.txt.j2, dnsmasq.conf.j2, grub.cfg-node.j2, grub.cfg.j2, node.ipxe.j2, " \
                    "pxelinux.cfg.j2"


def test_templates_dir_outside_the_site_or_not_a_directory(tmp_path):
    (tmp_path / "site").mkdir()
    (tmp_path / "elsewhere").mkdir()
    templates = tmp_path / "site" / "templates"
    templates.symlink_to(tmp_path / "elsewhere")
    assert _override_problems(templates, tmp_path) == [
        f"site/templates: error: is a symlink to '{tmp_path / 'elsewhere'}', outside the site directory\n"
        "  hint: make site/templates a directory in the site"]
    templates.unlink()
    templates.write_text("")
    assert _override_problems(templates, tmp_path) == [
        "site/templates: error: is not a directory\n"
        "  hint: site/templates holds files that replace built-in templates"]


def test_a_symlink_inside_the_site_is_used_and_errors_name_the_override(tmp_path):
    templates = _site(tmp_path)
    shared = tmp_path / "site" / "shared.ipxe"
    shared.write_text("#!ipxe\n# {{ title }}\n")
    (templates / "node.ipxe.j2").symlink_to("../shared.ipxe")
    assert Templates(templates, tmp_path).render("node.ipxe.j2", {"title": "t"}) == b"#!ipxe\n# t\n"
    shared.write_text("#!ipxe\n{{ oops }}\n")
    assert _file_problem(templates, tmp_path).startswith("site/templates/node.ipxe.j2:2:1: error: undefined")


@pytest.mark.timeout(30)
def test_an_override_replaced_by_a_fifo_is_refused_not_read(tmp_path):
    templates_dir = _site(tmp_path, node_ipxe_j2="#!ipxe\n")
    templates = Templates(templates_dir, tmp_path)
    (templates_dir / "node.ipxe.j2").unlink()
    os.mkfifo(templates_dir / "node.ipxe.j2")
    with pytest.raises(RenderError) as caught:
        templates.render("node.ipxe.j2", {}, node="n1")
    assert caught.value.problems[0].format() == \
        "site/templates/node.ipxe.j2: error: is a FIFO, not a regular file (rendering node 'n1')"


# -- the compiled-template cache -------------------------------------------------------------------


def _cached_render(tmp_path: Path, cache: Path, compile_allowed: bool = True) -> bytes:
    templates = Templates(tmp_path / "site" / "templates", tmp_path, cache)
    if not compile_allowed:
        def no_compile(*args, **kwargs):
            raise AssertionError("compiled although the cache has the template")
        templates.env.compile = no_compile
    return templates.render("node.ipxe.j2", {"title": "t"})


@pytest.mark.parametrize("damage", ["truncated", "bad pickle", "bad marshal", "not code", "empty", "directory"])
def test_a_damaged_cache_file_is_a_miss_and_is_replaced(tmp_path, damage):
    _site(tmp_path, node_ipxe_j2="#!ipxe\n# {{ title }}\n")
    cache = tmp_path / "cache"
    assert _cached_render(tmp_path, cache) == b"#!ipxe\n# t\n"
    [path] = cache.iterdir()
    good = path.read_bytes()
    magic = jinja2.bccache.bc_magic
    path.unlink()
    if damage == "directory":
        path.mkdir()
    else:
        path.write_bytes({
            "truncated": good[:len(magic) + 5],
            "bad pickle": magic + b"\x80\x05garbage",
            "bad marshal": good[:len(good) - len(marshal.dumps(compile("", "x", "exec")))] + b"\xff" * 40,
            "not code": good[:good.index(b".", len(magic)) + 1] + marshal.dumps(42),
            "empty": b"",
        }[damage])
    assert _cached_render(tmp_path, cache) == b"#!ipxe\n# t\n"
    if damage != "directory":
        assert _cached_render(tmp_path, cache, compile_allowed=False) == b"#!ipxe\n# t\n"


def test_a_cache_directory_that_is_a_file_is_not_used(tmp_path):
    _site(tmp_path, node_ipxe_j2="#!ipxe\n")
    (tmp_path / "cache").write_text("not a directory")
    assert _cached_render(tmp_path, tmp_path / "cache") == b"#!ipxe\n"
    assert _cached_render(tmp_path, tmp_path / "cache" / "templates") == b"#!ipxe\n"
    assert (tmp_path / "cache").read_text() == "not a directory"


def test_a_cache_that_cannot_be_written_is_skipped(tmp_path, monkeypatch):
    _site(tmp_path, node_ipxe_j2="#!ipxe\n")
    templates = Templates(tmp_path / "site" / "templates", tmp_path, tmp_path / "cache")
    (tmp_path / "cache").rmdir()
    (tmp_path / "cache").write_text("")  # the directory became a file after the build started
    assert templates.render("node.ipxe.j2", {}) == b"#!ipxe\n"

    def read_only(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr("tempfile.NamedTemporaryFile", read_only)
    assert _cached_render(tmp_path, tmp_path / "other-cache") == b"#!ipxe\n"
    assert list((tmp_path / "other-cache").iterdir()) == []


# -- end to end: `bootgen build` in a copy of the example site ------------------------------------


def _build(cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("BOOTGEN_DEBUG", None)
    return subprocess.run([sys.executable, "-m", "bootgen", "build"], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=300)


def _built(cwd: Path) -> str:
    done = _build(cwd)
    assert done.returncode == 0, done.stdout + done.stderr
    return os.readlink(cwd / "build")


def _refused(cwd: Path, live: str) -> str:
    done = _build(cwd)
    output = done.stdout + done.stderr
    assert done.returncode == 1, output
    assert "Traceback" not in output and "bug in bootgen" not in output, output
    assert os.readlink(cwd / "build") == live
    return output


def _line_of(path: Path, text: str) -> int:
    return next(number for number, line in enumerate(path.read_text().splitlines(), 1) if text in line)


@pytest.mark.timeout(300)
def test_build_refuses_hostile_kernel_arguments(example, tmp_path):
    live = _built(tmp_path)
    hostile = {
        "node-1": "x={{ cycler.__init__.__globals__.os.popen('touch pwned').read() }}",
        "node-2": "{% for i in range(10**9) %}{% endfor %}",
        "fcos-1": "{{ 'x' * 10**10 }}",
    }
    for name, value in hostile.items():
        with open(tmp_path / "nodes" / f"{name}.yaml", "a") as handle:
            handle.write(f'kernel_args:\n  - "{value}"\n')
    started = time.monotonic()
    output = _refused(tmp_path, live)
    assert time.monotonic() - started < 60
    lines = {name: _line_of(tmp_path / "nodes" / f"{name}.yaml", "kernel_args:") + 1 for name in hostile}
    assert (f"nodes/node-1.yaml:{lines['node-1']}:5: error at $.kernel_args[0]: in template "
            f"\"{hostile['node-1']}\": template in data may not access attribute '__init__'") in output
    assert (f"nodes/node-2.yaml:{lines['node-2']}:5: error at $.kernel_args[0]: in template "
            f"'{hostile['node-2']}': template in data may not make a range of more than 10000 numbers") in output
    assert (f"nodes/fcos-1.yaml:{lines['fcos-1']}:5: error at $.kernel_args[0]: in template "
            f"\"{hostile['fcos-1']}\": {TOO_LONG}") in output
    assert "3 problems found" in output
    assert not (tmp_path / "pwned").exists()


@pytest.mark.timeout(300)
def test_build_reports_an_error_in_an_override_at_its_line(example, tmp_path):
    live = _built(tmp_path)
    templates = _site(tmp_path, node_ipxe_j2='#!ipxe\n# fine\nchain {{ 1 + "a" }}\n')
    output = _refused(tmp_path, live)
    assert "site/templates/node.ipxe.j2:3:1: error: TypeError: unsupported operand type(s) for +: 'int' and " \
           "'str' (rendering node '" in output
    assert '  | chain {{ 1 + "a" }}' in output  # the source line is shown
    (templates / "node.ipxe.j2").write_text("#!ipxe\n{{ 1 // 0 }}\n")
    output = _refused(tmp_path, live)
    assert "site/templates/node.ipxe.j2:2:1: error: ZeroDivisionError: integer division or modulo by zero " \
           "(rendering node '" in output
    (templates / "node.ipxe.j2").write_text("#!ipxe\n{% include 'dnsmasq.conf.j2' %}\n")
    output = _refused(tmp_path, live)  # the error is in the built-in the override includes
    assert re.search(r"^<built-in>/dnsmasq\.conf\.j2:\d+:1: error: undefined variable: 'site' is undefined "
                     r"\(rendering node '", output, re.M), output


@pytest.mark.timeout(300)
def test_build_refuses_overrides_outside_the_site_or_with_unknown_names(example, tmp_path):
    live = _built(tmp_path)
    (tmp_path / "secret.txt").write_text("SECRET-CONTENT")
    templates = _site(tmp_path, pxelinux_cfg="DEFAULT x\n")
    (templates / "grub.cfg.j2").symlink_to(tmp_path / "secret.txt")
    output = _refused(tmp_path, live)
    assert f"site/templates/grub.cfg.j2: error: is a symlink to '{tmp_path / 'secret.txt'}', outside the site " \
           "directory" in output
    assert "site/templates/pxelinux.cfg: error: 'pxelinux.cfg' is not the name of a built-in template" in output
    assert "2 problems found" in output
    assert "SECRET-CONTENT" not in output


@pytest.mark.timeout(300)
def test_build_survives_a_damaged_template_cache(example, tmp_path):
    _site(tmp_path, node_ipxe_j2="#!ipxe\n# {{ title }}\nexit\n")
    _built(tmp_path)
    cache = tmp_path / ".bootgen" / "cache" / "templates"
    files = sorted(cache.iterdir())
    assert files
    for path in files:
        path.write_bytes(path.read_bytes()[:20])  # as left by a crash or a full disk
    site = tmp_path / "site" / "site.yaml"
    site.write_text(site.read_text() + "# edited: every node renders again\n")
    _built(tmp_path)
    assert all(len(path.read_bytes()) > 20 for path in files)
