"""Jinja2 for the text formats (pxelinux, GRUB, iPXE, dnsmasq, nginx) and for
templated values in input files (kernel arguments).

Two environments, for two levels of trust:

* Template files (the built-ins in `bootgen/templates/` and the site's
  overrides in `site/templates/`) are code the site owner wrote. They render
  in a plain Jinja2 environment. An override must be a regular file inside the
  site directory, named after the built-in it replaces; anything else in
  `site/templates/` (hidden files and READMEs aside) is refused before
  anything renders. Compiled templates are cached between runs; a cache file
  that cannot be read or written is only a cache miss.
* Strings in site.yaml, profiles and node files are data. They render in an
  immutable sandbox with nothing in reach but the variables passed in: no
  attributes starting with `_`, no calls but a short list of pure methods, no
  include, import, extends, blocks or macros, and a budget of steps and
  characters, so a hostile node file fails fast with an input error instead of
  running code, reading files or exhausting the machine.

Undefined variables are errors (StrictUndefined) in both. Every failure while
rendering -- a syntax error, an undefined variable, a `TypeError` in an
override, a refused attribute, a recursion -- becomes a Problem that names the
template file and line (and the node being rendered), or the input file's
position and field for data strings.
"""
from __future__ import annotations

import contextvars
import functools
import os
import re
import stat
import string
import traceback
import types
from pathlib import Path

import jinja2
from jinja2 import nodes
from jinja2.exceptions import SecurityError
from jinja2.runtime import LoopContext
from jinja2.sandbox import ImmutableSandboxedEnvironment
from jinja2.visitor import NodeTransformer

from .. import quoting
from ..errors import BootgenError, Location, Problem, RenderError
from ..model import Site
from ..secrets import SecretStr

BUILTIN_DIR = Path(__file__).resolve().parent.parent / "templates"

# Limits for templates in data. A kernel command line is a few KiB at most.
MAX_DATA_CHARS = 64 * 1024  # longest data string, rendered value or intermediate value
MAX_DATA_RANGE = 10_000  # longest range()
MAX_DATA_STEPS = 250_000  # loop iterations (weighted by body size), calls, filters, operators, output


# -- template files --------------------------------------------------------------------------------


class Templates:
    """The environment for template files (overrides, then built-ins) and the sandbox for data strings.

    Raises RenderError listing every unusable file in `override_dir`."""

    def __init__(self, override_dir: Path | None, display_root: Path, cache_dir: Path | None = None):
        self.display_root = display_root.resolve()
        overrides = self._overrides(override_dir)
        self.env = jinja2.Environment(
            loader=jinja2.ChoiceLoader([_OverrideLoader(overrides), jinja2.PackageLoader("bootgen", "templates")]),
            undefined=jinja2.StrictUndefined, autoescape=False,
            keep_trailing_newline=True, trim_blocks=True, lstrip_blocks=True,
            bytecode_cache=_bytecode_cache(cache_dir))
        self.env.filters["grub_quote"] = grub_quote
        self.env.filters.update(quoting.FILTERS)  # one filter per destination syntax (bootgen.quoting)
        self.data_env = DataEnvironment()
        self._inline: dict[str, jinja2.Template] = {}

    def render(self, name: str, context: dict, *, node: str | None = None) -> bytes:
        """Render a template file to bytes; RenderError names the template line and node."""
        try:
            return self.env.get_template(name).render(context).encode()
        except Exception as exc:  # an override is code: any error in it is the user's to fix
            if _reported_by_caller(exc):
                raise
            raise RenderError(self._problem(exc, name, node)) from None

    def render_string(self, source: str, context: dict, location: Location, field: str) -> str:
        """Render a templated value from an input file (e.g. a kernel argument) in the sandbox."""
        if "{" not in source:  # no Jinja syntax: it renders to itself, without compiling a template
            if len(source) > MAX_DATA_CHARS:
                raise RenderError(Problem(location, f"value is longer than {MAX_DATA_CHARS} characters", field))
            return source
        token = _BUDGET.set(_Budget())
        try:
            template = self._inline.get(source)
            if template is None:
                template = self._inline[source] = self.data_env.compile_data(source)
            text = template.render(context)
            if len(text) > MAX_DATA_CHARS:
                raise SecurityError(_TOO_LONG)
            _check_secrets_kept(_budget().secrets_read, text)
            return text
        except Exception as exc:  # whatever the data makes the template do is an input error
            raise RenderError(Problem(location, f"in template {_shown_source(source)}: {_message(exc)}",
                                      field)) from None
        finally:
            _BUDGET.reset(token)

    def _overrides(self, override_dir: Path | None) -> dict[str, tuple[str, str]]:
        """Template name -> (path to show, real path to read) of each usable override."""
        if override_dir is None or not os.path.lexists(override_dir):
            return {}
        problems: list[Problem] = []
        site_dir = Path(os.path.realpath(os.path.dirname(os.path.abspath(override_dir))))
        shown_dir = self.display(override_dir)
        real_dir = Path(os.path.realpath(override_dir))
        if not real_dir.is_relative_to(site_dir):
            raise RenderError(Problem(Location(shown_dir), f"is a symlink to '{real_dir}', outside the site directory",
                                      hint="make site/templates a directory in the site"))
        if not real_dir.is_dir():
            raise RenderError(Problem(Location(shown_dir), "is not a directory",
                                      hint="site/templates holds files that replace built-in templates"))
        builtins = builtin_template_names()
        found = {}
        try:
            entries = sorted(os.scandir(override_dir), key=lambda e: e.name)
        except OSError as exc:
            raise RenderError(Problem(Location(shown_dir), f"cannot list the directory: {exc.strerror}")) from None
        for entry in entries:
            name = entry.name
            if name.startswith(".") or name.upper().startswith("README"):
                continue
            shown = self.display(os.path.join(override_dir, name))
            if name not in builtins:
                problems.append(Problem(
                    Location(shown), f"'{name}' is not the name of a built-in template",
                    hint="an override must have the name of the template it replaces: " + ", ".join(builtins)))
                continue
            problem, real = _check_override(entry.path, site_dir)
            if problem:
                problems.append(Problem(Location(shown), problem, hint=_OVERRIDE_HINT))
            else:
                found[name] = (os.path.abspath(entry.path), real)
        if problems:
            raise RenderError(problems)
        return found

    def _problem(self, exc: BaseException, name: str, node: str | None) -> Problem:
        filename, line = _template_position(exc, name)
        shown = self._display(filename) if filename else name
        who = f" (rendering node '{node}')" if node else ""
        hint = "every variable a template uses must be defined; see README 'Templates'" \
            if isinstance(exc, jinja2.UndefinedError) else ""
        return Problem(Location(shown, line, 1 if line else 0), f"{_message(exc)}{who}", hint=hint)

    def _display(self, filename: str) -> str:
        """How a template file is named in problems: relative to display_root, or <built-in>/name."""
        if os.path.realpath(os.path.dirname(filename)) == str(BUILTIN_DIR):
            return f"<built-in>/{os.path.basename(filename)}"
        return self.display(filename)

    def display(self, path) -> str:
        """A path relative to display_root if it is below it (symlinks in its directory resolved), else absolute."""
        absolute = Path(os.path.abspath(path))
        for candidate in (absolute, Path(os.path.realpath(absolute.parent)) / absolute.name):
            if candidate.is_relative_to(self.display_root):
                return str(candidate.relative_to(self.display_root))
        return str(absolute)


_OVERRIDE_HINT = "an override in site/templates must be a regular file in the site directory"


@functools.cache
def builtin_template_names() -> tuple[str, ...]:
    """The names an override may have: the built-in templates."""
    return tuple(sorted(p.name for p in BUILTIN_DIR.iterdir() if p.name.endswith(".j2")))


def _check_override(path: str, site_dir: Path) -> tuple[str, str]:
    """(why the override cannot be used or "", its real path), without opening it."""
    try:
        st = os.lstat(path)
        real = os.path.realpath(path)
        if stat.S_ISLNK(st.st_mode):
            if not Path(real).is_relative_to(site_dir):
                return f"is a symlink to '{real}', outside the site directory", real
            st = os.stat(real)
    except FileNotFoundError:
        return "is a symlink to a file that does not exist", ""
    except OSError as exc:
        return f"cannot be read: {exc.strerror}", ""
    if stat.S_ISREG(st.st_mode):
        return "", real
    return f"is {_file_kind(st.st_mode)}, not a regular file", real


def _file_kind(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    return "not a file"


class _OverrideLoader(jinja2.BaseLoader):
    """The checked overrides, by name. Files are opened without blocking and must still be regular
    files when read; problems name the override as the user sees it, not the file it links to."""

    def __init__(self, overrides: dict[str, tuple[str, str]]):
        self.overrides = overrides

    def get_source(self, environment, template):
        if template not in self.overrides:
            raise jinja2.TemplateNotFound(template)
        filename, real = self.overrides[template]
        try:
            fd = os.open(real, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOFOLLOW", 0))
            with os.fdopen(fd, "rb") as handle:
                st = os.fstat(handle.fileno())
                if not stat.S_ISREG(st.st_mode):
                    raise jinja2.TemplateSyntaxError(f"is {_file_kind(st.st_mode)}, not a regular file", 0,
                                                     template, filename)
                data = handle.read()
        except OSError as exc:
            raise jinja2.TemplateSyntaxError(f"cannot be read: {exc.strerror}", 0, template, filename) from None
        try:
            source = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            line = data.count(b"\n", 0, exc.start) + 1
            raise jinja2.TemplateSyntaxError("is not UTF-8 text", line, template, filename) from None
        mtime = st.st_mtime_ns
        return source, filename, lambda: _mtime(real) == mtime

    def list_templates(self):
        return sorted(self.overrides)


def _mtime(path: str) -> int | None:
    try:
        return os.stat(path).st_mtime_ns
    except OSError:
        return None


# -- compiled-template cache -----------------------------------------------------------------------


class TolerantBytecodeCache(jinja2.FileSystemBytecodeCache):
    """A bytecode cache that never fails a build: a file it cannot load is a miss (and is removed),
    a file it cannot write is skipped."""

    def load_bytecode(self, bucket: jinja2.bccache.Bucket) -> None:
        try:
            super().load_bytecode(bucket)
        except Exception:
            pass
        else:
            if bucket.code is None or isinstance(bucket.code, types.CodeType):
                return
        bucket.reset()
        try:
            os.remove(self._get_cache_filename(bucket))
        except OSError:
            pass

    def dump_bytecode(self, bucket: jinja2.bccache.Bucket) -> None:
        try:
            super().dump_bytecode(bucket)
        except Exception:
            pass


def _bytecode_cache(cache_dir: Path | None) -> jinja2.BytecodeCache | None:
    """Compiled templates kept between runs (keyed by each template's source checksum):
    compiling them is most of an edit build's rendering time. Code from another Jinja2
    version is never loaded: the version is part of the file name."""
    if cache_dir is None:
        return None
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
    except OSError:
        return None
    if not cache_dir.is_dir():
        return None
    return TolerantBytecodeCache(str(cache_dir), f"jinja2-{jinja2.__version__}-%s.cache")


# -- errors ----------------------------------------------------------------------------------------


def _reported_by_caller(exc: BaseException) -> bool:
    """Errors that carry their own report: bootgen's, and a quoting filter's refusal of a value
    (bootgen.quoting.UnsafeValue), which the caller places at the field the value came from."""
    return isinstance(exc, (BootgenError, quoting.UnsafeValue))


def _message(exc: BaseException) -> str:
    if isinstance(exc, jinja2.UndefinedError):
        return f"undefined variable: {exc.message}"
    if isinstance(exc, jinja2.TemplateNotFound):
        return f"no template named '{exc.name}'"
    if isinstance(exc, jinja2.TemplateError):
        return exc.message or type(exc).__name__
    if isinstance(exc, RecursionError):
        return "recursion too deep (a macro or include that calls itself?)"
    if isinstance(exc, MemoryError):
        return "out of memory"
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _template_position(exc: BaseException, name: str) -> tuple[str | None, int]:
    """Template file and line of the error, from the syntax error or the traceback."""
    if isinstance(exc, jinja2.TemplateSyntaxError):
        return exc.filename, exc.lineno or 0
    for frame in reversed(traceback.extract_tb(exc.__traceback__)):
        if frame.filename.endswith(name) or frame.filename.endswith(".j2"):
            return frame.filename, frame.lineno or 0
    return None, 0


def _shown_source(source: str) -> str:
    return repr(source) if len(source) <= 200 else repr(source[:200]) + f" (and {len(source) - 200} more characters)"


# -- the sandbox for data strings ------------------------------------------------------------------


_TOO_LONG = f"template in data may not make a value or output of more than {MAX_DATA_CHARS} characters"
_TOO_MUCH = f"template in data takes too many steps (the limit is {MAX_DATA_STEPS})"


class _Budget:
    """What one data string may still do while it renders."""

    __slots__ = ("steps", "output", "secrets_read")

    def __init__(self):
        self.steps = MAX_DATA_STEPS
        self.output = MAX_DATA_CHARS
        self.secrets_read: list[str] = []  # secret values the template looked up (see _check_secrets_kept)

    def spend(self, steps: int) -> None:
        self.steps -= steps
        if self.steps < 0:
            raise SecurityError(_TOO_MUCH)

    def check(self, value):
        """Refuse a value too large to work with; it costs a step per 64 characters."""
        size = _size(value, self)
        if size > MAX_DATA_CHARS:
            raise SecurityError(_TOO_LONG)
        self.spend(1 + size // 64)
        return value

    def allow(self, estimate: int) -> None:
        if estimate > MAX_DATA_CHARS:
            raise SecurityError(_TOO_LONG)


_BUDGET: contextvars.ContextVar[_Budget | None] = contextvars.ContextVar("bootgen_data_budget", default=None)


def _noted(value):
    """A value a data template looked up; a secret one is remembered (see _check_secrets_kept)."""
    if isinstance(value, SecretStr):
        _budget().secrets_read.append(value)
    return value


def _check_secrets_kept(secrets_read: list[str], text: str) -> None:
    """A data template may place a secret value, but not transform it. bootgen finds the files
    that carry a secret by the value's bytes (to keep them out of the public index and fence
    them); an upper-cased, split or re-encoded secret would be served to anyone."""
    if any(value not in text for value in secrets_read):
        raise SecurityError("a template in data may place a secret value as it is, but not change or cut it "
                            "(bootgen recognises files that carry a secret by its exact bytes): use the "
                            "reference where the value is needed, or put the value you need in the secrets file")


def _budget() -> _Budget:
    budget = _BUDGET.get()
    if budget is None:
        raise SecurityError("template in data rendered outside Templates.render_string")
    return budget


_SEQUENCES = (list, tuple, set, frozenset, dict)
_SMALL = (type(None), bool, float, jinja2.Undefined)
_OPAQUE = 1024  # an object from the inputs (a node, the site): its text is made from input files


def _size(value, budget: _Budget | None = None) -> int:
    """About len(str(value)), stopping once past the limit; containers cost a step per item."""
    if isinstance(value, (str, bytes)):
        return len(value)
    if isinstance(value, int):
        return value.bit_length() // 3 + 1
    if not isinstance(value, _SEQUENCES):
        return 8 if isinstance(value, _SMALL) else _OPAQUE
    total, stack, visited = 2, [value], 0
    while stack and total <= MAX_DATA_CHARS:
        item = stack.pop()
        visited += 1
        if isinstance(item, (str, bytes)):
            total += len(item) + 2
        elif isinstance(item, dict):
            total += 2
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, _SEQUENCES):
            total += 2
            stack.extend(item)
        elif isinstance(item, int):
            total += item.bit_length() // 3 + 2
        else:
            total += 8 if isinstance(item, _SMALL) else _OPAQUE
    if budget is not None:
        budget.spend(visited)
    return total


def _int_arg(value, what: str) -> None:
    """A width or count: bounded, so that it cannot make a huge value."""
    if isinstance(value, int) and abs(value) > MAX_DATA_CHARS:
        raise SecurityError(f"template in data may not use a {what} of more than {MAX_DATA_CHARS}")


def _bounded_range(*args) -> range:
    numbers = range(*args)
    try:
        length = len(numbers)
    except OverflowError:
        length = MAX_DATA_RANGE + 1
    if length > MAX_DATA_RANGE:
        raise SecurityError(f"template in data may not make a range of more than {MAX_DATA_RANGE} numbers")
    return numbers


_PERCENT_SPEC = re.compile(r"%(?:\([^)]*\))?[-#0 +]*(\*|\d+)?(?:\.(\*|\d*))?[hlL]?(.)", re.S)


def _percent_estimate(fmt, values, budget: _Budget) -> int:
    """About the length of `fmt % values` (printf style), refusing huge or `*` widths."""
    text = fmt if isinstance(fmt, str) else fmt.decode("latin-1")
    fields, widest = 0, 0
    for width, precision, conversion in _PERCENT_SPEC.findall(text):
        if conversion == "%":
            continue
        if "*" in (width, precision):
            raise SecurityError("template in data may not use '*' for a width in a format")
        fields += 1
        widest = max(widest, _width(width), _width(precision))
    return len(text) + fields * (_size(values, budget) + widest)


def _brace_estimate(fmt: str, values, budget: _Budget) -> int:
    """About the length of `fmt.format(...)`, refusing huge widths and nested fields."""
    fields, widest = 0, 0
    for _literal, field, spec, _conversion in string.Formatter().parse(fmt):
        if field is None:
            continue
        if spec and "{" in spec:
            raise SecurityError("template in data may not nest fields in a format")
        fields += 1
        widest = max([widest] + [_width(digits) for digits in re.findall(r"\d+", spec or "")])
    return len(fmt) + fields * (_size(values, budget) + widest)


def _width(digits: str) -> int:
    if not digits:
        return 0
    if len(digits) > 6 or int(digits) > MAX_DATA_CHARS:
        raise SecurityError(f"template in data may not use a width of more than {MAX_DATA_CHARS}")
    return int(digits)


def _replace_estimate(text, old, new, count=-1) -> int:
    if not isinstance(text, str) or not isinstance(old, str) or not isinstance(new, str):
        return 0
    places = text.count(old) if old else len(text) + 1
    if isinstance(count, int) and count >= 0:
        places = min(places, count)
    return len(text) + places * max(0, len(new) - len(old))


def _join_estimate(items: list, separator, budget: _Budget) -> int:
    return _size(items, budget) + max(0, len(items) - 1) * _size(separator)


def _arg(args: tuple, kwargs: dict, position: int, name: str, default=None):
    """A filter argument (after the value) given by position or by name."""
    return args[position] if position < len(args) else kwargs.get(name, default)


# Checks for the filters whose output can be far larger than their input; each returns the
# value to pass on (join gets a lazy value as a list, as it would make one anyway).
def _filter_join(budget, context, value, args, kwargs):
    value = list(value) if not isinstance(value, (str, *_SEQUENCES)) else value
    items = list(value)
    attribute = _arg(args, kwargs, 1, "attribute")
    if attribute is not None:
        getter = jinja2.filters.make_attrgetter(context.environment, attribute)
        items = [getter(item) for item in items]
    budget.allow(_join_estimate(items, _arg(args, kwargs, 0, "d", ""), budget))
    return value


def _filter_replace(budget, context, value, args, kwargs):
    old, new = _arg(args, kwargs, 0, "old"), _arg(args, kwargs, 1, "new")
    budget.allow(_replace_estimate(str(value), old, new, _arg(args, kwargs, 2, "count", -1)))
    return value


def _filter_indent(budget, context, value, args, kwargs):
    width = _arg(args, kwargs, 0, "width", 4)
    _int_arg(width, "width")
    text = str(value)
    budget.allow(len(text) + (text.count("\n") + 1) * (width if isinstance(width, int) else _size(width)))
    return value


def _filter_wordwrap(budget, context, value, args, kwargs):
    width = _arg(args, kwargs, 0, "width", 79)
    _int_arg(width, "width")
    text = str(value)
    lines = len(text) // max(1, width if isinstance(width, int) else 1) + text.count("\n") + 1
    budget.allow(len(text) + lines * _size(_arg(args, kwargs, 2, "wrapstring") or "\n"))
    return value


def _filter_format(budget, context, value, args, kwargs):
    budget.allow(_percent_estimate(str(value), kwargs or args, budget))
    return value


def _widths(**params):
    """Bound the width or count arguments of a filter, given by name and position."""
    def check(budget, context, value, args, kwargs):
        for name, position in params.items():
            _int_arg(_arg(args, kwargs, position, name), "width or count")
        return value
    return check


_FILTER_CHECKS = {
    "join": _filter_join, "replace": _filter_replace, "indent": _filter_indent, "wordwrap": _filter_wordwrap,
    "format": _filter_format, "center": _widths(width=0), "truncate": _widths(length=0, leeway=3),
    "batch": _widths(linecount=0), "slice": _widths(slices=0),
}


def _checked_filter(name: str, func):
    """`func` as a filter for data strings: inputs and result bounded, a step spent."""
    pass_arg = getattr(getattr(func, "jinja_pass_arg", None), "name", None)
    check = _FILTER_CHECKS.get(name)

    @jinja2.pass_context  # also keeps the compiler from running it on constants at compile time
    def checked(context, value=None, *args, **kwargs):
        budget = _budget()
        budget.spend(1)
        for item in (value, *args, *kwargs.values()):
            budget.check(item)
        if check is not None:
            value = check(budget, context, value, args, kwargs)
        if pass_arg == "context":
            result = func(context, value, *args, **kwargs)
        elif pass_arg == "eval_context":
            result = func(context.eval_ctx, value, *args, **kwargs)
        elif pass_arg == "environment":
            result = func(context.environment, value, *args, **kwargs)
        else:
            result = func(value, *args, **kwargs)
        return budget.check(result)

    return checked


@jinja2.pass_context
def _guard_output(context, value):
    """Every piece of output (also into {% set %} blocks) counts against the output limit."""
    budget = _budget()
    size = _size(value, budget)
    budget.output -= size
    if size > MAX_DATA_CHARS or budget.output < 0:
        raise SecurityError(_TOO_LONG)
    budget.spend(1 + size // 64)
    return value


@jinja2.pass_context
def _guard_concat(context, parts):
    """`a ~ b`: the parts' sizes are checked before they are joined."""
    budget = _budget()
    budget.allow(sum(_size(part, budget) for part in parts))
    return budget.check("".join(str(part) for part in parts))


@jinja2.pass_context
def _guard_loop(context, iterable, cost):
    """Each iteration of a loop costs as many steps as its body has nodes."""
    budget = _budget()
    for item in iterable:
        budget.spend(cost)
        yield item


_OUTPUT, _CONCAT, _LOOP = "bootgen output", "bootgen concat", "bootgen loop"  # names no template can spell

# Pure methods data strings may call (mutating ones are refused by the immutable sandbox anyway).
_SAFE_METHODS: dict[type, frozenset[str]] = {
    str: frozenset("""capitalize casefold center count encode endswith expandtabs find index isalnum isalpha
        isascii isdecimal isdigit isidentifier islower isnumeric isprintable isspace istitle isupper join ljust
        lower lstrip partition removeprefix removesuffix replace rfind rindex rjust rpartition rsplit rstrip split
        splitlines startswith strip swapcase title upper zfill""".split()),
    bytes: frozenset({"decode"}),
    dict: frozenset({"get", "items", "keys", "values"}),
    list: frozenset({"count", "index"}),
    tuple: frozenset({"count", "index"}),
    int: frozenset({"bit_length"}),
    float: frozenset({"is_integer"}),
}
_SAFE_FUNCTIONS = frozenset({Site.url, LoopContext.cycle, LoopContext.changed})
_SAFE_CALLABLES = (_bounded_range, dict)

_REFUSED_NODES = {
    nodes.Extends: "{% extends %}", nodes.Include: "{% include %}", nodes.Import: "{% import %}",
    nodes.FromImport: "{% from ... import %}", nodes.Block: "{% block %}", nodes.Macro: "{% macro %}",
    nodes.CallBlock: "{% call %}",
}
_REFUSED_NAMES = frozenset({"self", "super", "caller", "varargs", "kwargs"})


class _RefusingLoader(jinja2.BaseLoader):
    def get_source(self, environment, template):
        raise SecurityError("template in data may not load other templates")


class _Guard(NodeTransformer):
    """Refuse what data strings may not use, and put guards around loops, output and `~`."""

    def __init__(self, environment):
        self.environment = environment

    def generic_visit(self, node, *args, **kwargs):
        for kind, what in _REFUSED_NODES.items():
            if isinstance(node, kind):
                raise SecurityError(f"template in data may not use {what}")
        return super().generic_visit(node, *args, **kwargs)

    def visit_Name(self, node):
        if node.name in _REFUSED_NAMES:
            raise SecurityError(f"template in data may not use '{node.name}'")
        return node

    def visit_For(self, node):
        if node.recursive:
            raise SecurityError("template in data may not use recursive loops")
        node = self.generic_visit(node)
        cost = 1 + sum(1 + sum(1 for _ in part.find_all(nodes.Node))
                       for part in (*node.body, *([node.test] if node.test else ())))
        node.iter = self._filter(node.iter, _LOOP, [nodes.Const(cost)])
        return node

    def visit_Output(self, node):
        node = self.generic_visit(node)
        node.nodes = [self._filter(child, _OUTPUT) for child in node.nodes]
        return node

    def visit_Concat(self, node):
        node = self.generic_visit(node)
        return self._filter(nodes.List(node.nodes, lineno=node.lineno), _CONCAT)

    def _filter(self, node, name, args=()):
        wrapped = nodes.Filter(node, name, list(args), [], None, None, lineno=node.lineno)
        wrapped.set_environment(self.environment)
        return wrapped


class DataEnvironment(ImmutableSandboxedEnvironment):
    """The sandbox data strings render in: only the variables given, a few pure functions, and a budget."""

    intercepted_binops = frozenset({"+", "*", "**", "%"})

    def __init__(self):
        super().__init__(loader=_RefusingLoader(), undefined=jinja2.StrictUndefined, autoescape=False,
                         keep_trailing_newline=True, trim_blocks=True, lstrip_blocks=True, optimized=False)
        self.globals.clear()  # lipsum, cycler, joiner and namespace are not for data
        self.globals.update(range=_bounded_range, dict=dict)
        # `random` would make the tree depend on more than its inputs.
        filters = {name: func for name, func in {**self.filters, "grub_quote": grub_quote}.items() if name != "random"}
        self.filters = {name: _checked_filter(name, func) for name, func in filters.items()}
        self.filters.update({_OUTPUT: _guard_output, _CONCAT: _guard_concat, _LOOP: _guard_loop})

    def compile_data(self, source: str) -> jinja2.Template:
        if len(source) > MAX_DATA_CHARS:
            raise SecurityError(f"template in data may not be longer than {MAX_DATA_CHARS} characters")
        tree = _Guard(self).visit(self.parse(source))
        return self.from_string(tree)

    def is_safe_attribute(self, obj, attr, value) -> bool:
        return super().is_safe_attribute(obj, attr, value) and not isinstance(
            value, (types.ModuleType, type, types.FunctionType, types.CodeType, types.FrameType,
                    types.TracebackType))

    def unsafe_undefined(self, obj, attribute):
        raise SecurityError(f"template in data may not access attribute {attribute!r}")

    def getattr(self, obj, attribute):
        return _noted(super().getattr(obj, attribute))

    def getitem(self, obj, argument):
        return _noted(super().getitem(obj, argument))

    def wrap_str_format(self, value):
        wrapped = super().wrap_str_format(value)
        if wrapped is None:
            return None
        fmt = value.__self__

        def checked(*args, **kwargs):
            budget = _budget()
            budget.allow(_brace_estimate(fmt, (args, kwargs), budget))
            return budget.check(wrapped(*args, **kwargs))

        checked.bootgen_format = True
        return checked

    def call_binop(self, context, operator, left, right):
        budget = _budget()
        budget.spend(1)
        budget.allow(_binop_estimate(operator, left, right, budget))
        return budget.check(super().call_binop(context, operator, left, right))

    def call(__self, __context, __obj, *args, **kwargs):  # noqa: N805 (the sandbox's own signature)
        budget = _budget()
        budget.spend(1)
        if isinstance(__obj, jinja2.Undefined):
            return __context.call(__obj, *args, **kwargs)  # raises: "'x' is undefined"
        if not _may_call(__obj):
            raise SecurityError(f"template in data may not call {_callable_name(__obj)}")
        for arg in (*args, *kwargs.values()):
            budget.check(arg)
        args = _check_call(budget, __obj, args, kwargs)
        return budget.check(__context.call(__obj, *args, **kwargs))


def _binop_estimate(operator: str, left, right, budget: _Budget) -> int:
    if operator == "+":
        return _size(left, budget) + _size(right, budget)
    if operator == "*":
        if isinstance(right, int) and not isinstance(left, (int, float)):
            left, right = right, left
        if isinstance(left, int) and not isinstance(right, (int, float)):
            return _size(right, budget) * max(left, 0)
        return _size(left) + _size(right)
    if operator == "**":
        if isinstance(left, int) and isinstance(right, int) and right > 0 and abs(left) > 1:
            return left.bit_length() * right // 3 + 1
        return 0
    if operator == "%" and isinstance(left, (str, bytes)):
        return _percent_estimate(left, right, budget)
    return 0


def _may_call(obj) -> bool:
    if any(obj is safe for safe in _SAFE_CALLABLES):
        return True
    if isinstance(obj, types.FunctionType) and getattr(obj, "bootgen_format", False):
        return True
    if isinstance(obj, types.BuiltinMethodType):
        owner = getattr(obj, "__self__", None)
        return not isinstance(owner, (type, types.ModuleType)) and any(
            isinstance(owner, kind) and obj.__name__ in names for kind, names in _SAFE_METHODS.items())
    if isinstance(obj, types.MethodType):
        return obj.__func__ in _SAFE_FUNCTIONS
    return False


def _callable_name(obj) -> str:
    owner = getattr(obj, "__self__", None)
    name = getattr(obj, "__name__", None) or type(obj).__name__
    if owner is not None and not isinstance(owner, types.ModuleType):
        kind = owner.__name__ if isinstance(owner, type) else type(owner).__name__
        return f"'{kind}.{name}'"
    return f"'{name}'"


def _check_call(budget: _Budget, obj, args: tuple, kwargs: dict) -> tuple:
    """Bound what a str method can make from bounded inputs; `join` gets its items as a list."""
    owner = getattr(obj, "__self__", None)
    if not isinstance(owner, str):
        return args
    name = obj.__name__
    if name in ("center", "ljust", "rjust", "zfill", "expandtabs"):
        for arg in (*args, *kwargs.values()):
            _int_arg(arg, "width")
        if name == "expandtabs":
            tabsize = _arg(args, kwargs, 0, "tabsize", 8)
            budget.allow(len(owner) + owner.count("\t") * (tabsize if isinstance(tabsize, int) else 8))
    elif name == "replace":
        budget.allow(_replace_estimate(owner, _arg(args, kwargs, 0, "old"), _arg(args, kwargs, 1, "new"),
                                       _arg(args, kwargs, 2, "count", -1)))
    elif name == "join" and args:
        items = list(args[0])
        budget.allow(_join_estimate(items, owner, budget))
        args = (items, *args[1:])
    return args
    name = obj.__name__
    if name in ("center", "ljust", "rjust", "zfill", "expandtabs"):
        for arg in args:
            _int_arg(arg, "width")
        if name == "expandtabs":
            budget.allow(len(owner) + owner.count("\t") * (args[0] if args and isinstance(args[0], int) else 8))
    elif name == "replace" and len(args) >= 2:
        budget.allow(_replace_estimate(owner, *args[:3]))
    elif name == "join" and args:
        items = list(args[0])
        budget.allow(_join_estimate(items, owner, budget))
        args = (items, *args[1:])
    return args


# -- filters ---------------------------------------------------------------------------------------


_GRUB_SPECIAL = set(" \t;&|<>{}$\"'\\#")


def grub_quote(arg: str) -> str:
    """Quote one word for grub.cfg: `;`, `$` and friends are syntax there."""
    if arg and not (_GRUB_SPECIAL & set(arg)):
        return arg
    return "'" + arg.replace("'", "'\\''") + "'"
