"""Problems and the exception types that carry them, one per layer.

Every user-facing failure is a list of `Problem`s: where (file, line, column),
what (the JSON-style field path) and why (message, optional hint). Layers
collect problems and raise once, so a user fixes everything in one pass.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable


@dataclass(frozen=True, order=True)
class Location:
    """A place in a source file; line and column are 1-based, 0 when unknown."""

    file: str
    line: int = 0
    column: int = 0

    def __str__(self) -> str:
        if self.line:
            return f"{self.file}:{self.line}:{self.column}"
        return self.file


@dataclass(frozen=True)
class Problem:
    """One thing wrong with the input, reported to the user as one line."""

    location: Location
    message: str
    path: str = ""  # field path such as $.interfaces[0].mac; empty for whole-file problems
    hint: str = ""

    def __post_init__(self) -> None:
        # A message may quote the value it refuses: never a private key (whatever the check was).
        from .sshkeys import contains_private_key, looks_private

        if looks_private(self.message) or contains_private_key(self.message):
            from .sshkeys import redact_secrets

            object.__setattr__(self, "message", redact_secrets(self.message))
        from .secrets import known, redact_known

        if known():  # a value resolved from a secret reference is shown as its reference
            object.__setattr__(self, "message", redact_known(self.message))
            object.__setattr__(self, "hint", redact_known(self.hint))

    def sort_key(self) -> tuple:
        return (self.location.file, self.location.line, self.location.column, self.path, self.message)

    def format(self) -> str:
        where = f" at {self.path}" if self.path else ""
        text = f"{self.location}: error{where}: {self.message}"
        if self.hint:
            text += f"\n  hint: {self.hint}"
        return text

    def as_dict(self) -> dict:
        return {
            "file": self.location.file,
            "line": self.location.line,
            "column": self.location.column,
            "path": self.path,
            "message": self.message,
            "hint": self.hint,
        }


class BootgenError(Exception):
    """Base of every error a user can cause; carries one or more problems."""

    def __init__(self, problems: Iterable[Problem] | Problem | str):
        if isinstance(problems, str):
            problems = [Problem(Location("bootgen"), problems)]
        elif isinstance(problems, Problem):
            problems = [problems]
        self.problems = sorted(problems, key=Problem.sort_key)
        super().__init__("\n".join(p.format() for p in self.problems))

    def __reduce__(self):  # keep the problems when crossing to a build worker process and back
        return type(self), (self.problems,)


class InputError(BootgenError):
    """Site, profile or node files cannot be loaded or are invalid."""


class RenderError(BootgenError):
    """A template or OS config could not be rendered for a node."""


class OutputError(BootgenError):
    """The output tree could not be written or switched."""


class ImageError(BootgenError):
    """An OS image could not be fetched, verified or placed."""


class PublishError(BootgenError):
    """The tree could not be published."""


class LogError(BootgenError):
    """A server log that `discover` was asked to read cannot be read."""


def format_problems(problems: list[Problem], fmt: str = "text", source_root: Path | None = None) -> str:
    """Render problems for the terminal (with the source line) or as JSON."""
    if fmt == "json":
        return json.dumps({"problems": [p.as_dict() for p in problems]}, indent=2, sort_keys=True)
    blocks = [_with_source_line(p, source_root) for p in problems]
    count = len(problems)
    blocks.append(f"{count} problem{'s' if count != 1 else ''} found")
    return "\n".join(blocks)


def _with_source_line(problem: Problem, source_root: Path | None) -> str:
    """Add the offending source line and a caret under the column, as Butane does."""
    text = problem.format()
    loc = problem.location
    if not loc.line:
        return text
    path = Path(loc.file) if source_root is None else source_root / loc.file
    try:
        line = path.read_text(encoding="utf-8", errors="replace").splitlines()[loc.line - 1]
    except (OSError, IndexError):
        return text
    from .sshkeys import redact_line

    line = redact_line(line, column=loc.column)  # a private key pasted as one quoted string is refused, never shown
    caret = " " * max(loc.column - 1, 0) + "^"
    first, _, rest = text.partition("\n")
    lines = [first, f"  | {line}", f"  | {caret}"]
    if rest:
        lines.append(rest)
    return "\n".join(lines)
