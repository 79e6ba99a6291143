"""Jinja2 for the text formats (pxelinux, GRUB, iPXE, dnsmasq, nginx).

Built-in templates live in `bootgen/templates/`; a file of the same name in
`site/templates/` replaces one. Undefined variables are errors
(StrictUndefined) and every template error becomes a Problem that names the
template file and line and the node being rendered.
"""
from __future__ import annotations

import traceback
from pathlib import Path

import jinja2

from ..errors import Location, Problem, RenderError


class Templates:
    """A Jinja2 environment over the site's overrides and the built-ins."""

    def __init__(self, override_dir: Path | None, display_root: Path, cache_dir: Path | None = None):
        loaders: list[jinja2.BaseLoader] = []
        if override_dir is not None and override_dir.is_dir():
            loaders.append(jinja2.FileSystemLoader(str(override_dir)))
        loaders.append(jinja2.PackageLoader("bootgen", "templates"))
        self.display_root = display_root.resolve()
        self.env = jinja2.Environment(
            loader=jinja2.ChoiceLoader(loaders), undefined=jinja2.StrictUndefined, autoescape=False,
            keep_trailing_newline=True, trim_blocks=True, lstrip_blocks=True,
            bytecode_cache=_bytecode_cache(cache_dir))
        self.env.filters["grub_quote"] = grub_quote
        self._inline: dict[str, jinja2.Template] = {}

    def render(self, name: str, context: dict, *, node: str | None = None) -> bytes:
        """Render a template file to bytes; RenderError names the template line and node."""
        try:
            text = self.env.get_template(name).render(context)
        except jinja2.TemplateError as exc:
            raise RenderError(self._problem(exc, name, node)) from None
        return text.encode()

    def render_string(self, source: str, context: dict, location: Location, field: str) -> str:
        """Render a templated value from an input file (e.g. a kernel argument)."""
        if "{" not in source:  # no Jinja syntax: it renders to itself, without compiling a template
            return source
        try:
            template = self._inline.get(source)
            if template is None:
                template = self._inline[source] = self.env.from_string(source)
            return template.render(context)
        except jinja2.TemplateError as exc:
            raise RenderError(Problem(location, f"in template {source!r}: {_message(exc)}", field)) from None

    def _problem(self, exc: jinja2.TemplateError, name: str, node: str | None) -> Problem:
        filename, line = _template_position(exc, name)
        shown = self._display(filename) if filename else name
        who = f" (rendering node '{node}')" if node else ""
        return Problem(Location(shown, line, 1 if line else 0), f"{_message(exc)}{who}",
                       hint="every variable a template uses must be defined; see README 'Templates'")

    def _display(self, filename: str) -> str:
        path = Path(filename).resolve()
        try:
            return str(path.relative_to(self.display_root))
        except ValueError:
            return f"<built-in>/{path.name}"


def _bytecode_cache(cache_dir: Path | None) -> jinja2.BytecodeCache | None:
    """Compiled templates kept between runs (keyed by each template's source checksum):
    compiling them is most of an edit build's rendering time."""
    if cache_dir is None:
        return None
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
    except OSError:
        return None
    return jinja2.FileSystemBytecodeCache(str(cache_dir))


def _message(exc: jinja2.TemplateError) -> str:
    if isinstance(exc, jinja2.UndefinedError):
        return f"undefined variable: {exc.message}"
    return exc.message or type(exc).__name__


def _template_position(exc: jinja2.TemplateError, name: str) -> tuple[str | None, int]:
    """Template file and line of the error, from the syntax error or the traceback."""
    if isinstance(exc, jinja2.TemplateSyntaxError):
        return exc.filename, exc.lineno or 0
    for frame in reversed(traceback.extract_tb(exc.__traceback__)):
        if frame.filename.endswith(name) or frame.filename.endswith(".j2"):
            return frame.filename, frame.lineno or 0
    return None, 0


_GRUB_SPECIAL = set(" \t;&|<>{}$\"'\\#")


def grub_quote(arg: str) -> str:
    """Quote one word for grub.cfg: `;`, `$` and friends are syntax there."""
    if arg and not (_GRUB_SPECIAL & set(arg)):
        return arg
    return "'" + arg.replace("'", "'\\''") + "'"
