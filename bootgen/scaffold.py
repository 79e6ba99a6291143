"""`bootgen init`: a commented example site to start from.

The scaffold is copied as it is, except for two things that depend on the
user: the SSH public keys every machine authorizes (from `--ssh-key FILE`, else
`~/.ssh/*.pub`; none found means none authorized, and the caller says so) and
the `.gitignore`, which is merged into one that already exists.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from .errors import InputError, Location, OutputError, Problem
from .sshkeys import key_problem

KEYS_MARKER = "@SSH_KEYS@"
GITIGNORE = Path(".gitignore")
_RENAMED = {Path("dot-gitignore"): GITIGNORE}  # a dot file would not survive packaging as package data


@dataclass(frozen=True)
class SshKeys:
    """The public keys to authorize and the files they came from."""

    keys: tuple[str, ...]
    sources: tuple[str, ...]


@dataclass(frozen=True)
class Scaffolded:
    """What `bootgen init` wrote."""

    directory: Path
    created: tuple[Path, ...]
    ssh_keys: SshKeys

    def warnings(self) -> list[str]:
        if self.ssh_keys.keys:
            return []
        return ["no SSH public key found (--ssh-key FILE or ~/.ssh/*.pub): machines will authorize none; "
                f"add yours under defaults.ssh_authorized_keys in {self.directory / 'site' / 'site.yaml'} "
                "(make one with `ssh-keygen -t ed25519`)"]

    def as_dict(self) -> dict:
        return {"directory": str(self.directory), "created": [str(p) for p in self.created],
                "ssh_keys_from": list(self.ssh_keys.sources), "warnings": self.warnings()}


def find_ssh_keys(key_file: Path | None, home: Path) -> SshKeys:
    """The key in `key_file` (refused unless it is one public key), else every valid ~/.ssh/*.pub."""
    if key_file is not None:
        return SshKeys((_public_key(key_file),), (str(key_file),))
    found = [(path, _first_line(path)) for path in sorted((home / ".ssh").glob("*.pub")) if path.is_file()]
    usable = [(path, key) for path, key in found if key is not None and key_problem(key) is None]
    return SshKeys(tuple(key for _, key in usable), tuple(str(path) for path, _ in usable))


def _first_line(path: Path) -> str | None:
    try:
        lines = path.read_text(encoding="utf-8").strip().splitlines()
    except (OSError, UnicodeDecodeError):
        return None
    return lines[0].strip() if len(lines) == 1 else None


def _public_key(path: Path) -> str:
    try:
        text = path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise InputError(Problem(Location(str(path)), f"cannot read the SSH key file: {reason}")) from None
    problem = key_problem(text)
    if problem:
        raise InputError(Problem(Location(str(path)), problem[0], "--ssh-key", problem[1]))
    return text


def scaffold(directory: Path, ssh_keys: SshKeys) -> Scaffolded:
    """Copy the example site/ and nodes/ into `directory`; never overwrite a file."""
    root = resources.files("bootgen").joinpath("scaffold")
    files = [(_RENAMED.get(rel, rel), source) for rel, source in _walk(root, Path())]
    clashes = [directory / rel for rel, _ in files if rel != GITIGNORE and (directory / rel).exists()]
    if clashes:
        raise OutputError([Problem(Location(str(p)), "already exists; bootgen init never overwrites a file")
                           for p in clashes])
    created = []
    for rel, source in files:
        target = directory / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        text = source.read_text(encoding="utf-8").replace(" " + KEYS_MARKER, _keys_yaml(ssh_keys.keys))
        if rel == GITIGNORE and target.exists():
            _merge_gitignore(target, text)
        else:
            target.write_text(text, encoding="utf-8")
        created.append(target)
    return Scaffolded(directory, tuple(created), ssh_keys)


def _keys_yaml(keys: tuple[str, ...]) -> str:
    """The value of `ssh_authorized_keys:` as block YAML (JSON strings are YAML strings)."""
    if not keys:
        return " []   # no public key was found: add yours, e.g. the line in ~/.ssh/id_ed25519.pub"
    return "".join(f"\n    - {json.dumps(key)}" for key in keys)


def _merge_gitignore(target: Path, ours: str) -> None:
    """Add the lines of ours that an existing .gitignore lacks, keeping everything it has."""
    existing = target.read_text(encoding="utf-8")
    have = {line.strip() for line in existing.splitlines()}
    missing = [line for line in ours.splitlines() if line.strip() and not line.startswith("#")
               and line.strip() not in have]
    if missing:
        separator = "" if existing.endswith("\n") or not existing else "\n"
        target.write_text(existing + separator + "\n".join(missing) + "\n", encoding="utf-8")


def _walk(node, rel: Path):
    for child in sorted(node.iterdir(), key=lambda c: c.name):
        if child.is_dir():
            if child.name != "__pycache__":
                yield from _walk(child, rel / child.name)
        elif not child.name.endswith(".pyc"):
            yield rel / child.name, child
