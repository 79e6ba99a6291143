"""Secret references: values that live outside the repository and outside every public file.

Any string in a site, profile, node or Butane file may instead be a reference:

    {secret: NAME}         the entry NAME under `secrets:` in the secrets file
    {env: NAME}            the environment variable NAME
    {command: [argv...]}   what a program prints (no shell; bounded in time and
                           output; only programs the secrets file allows)

The secrets file is named by `--secrets FILE` or BOOTGEN_SECRETS (else
`~/.config/bootgen/secrets.yaml` is used if it exists). It must be
readable by its owner only and lie outside the repository. It holds

    secrets: {NAME: value, ...}
    path_key: <random text>         # keys the unguessable paths of secret-bearing files
    allow_commands: [pass, sops]    # programs {command:} may run (node files are data)

A resolved value is a `SecretStr`: a str that remembers its reference, so
`explain` shows `<secret NAME>`. Every value resolved in this process is kept
in `_KNOWN`, so a problem that would quote one shows the reference instead,
and outputs whose bytes carry one are found by `carries_secret`.
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import stat
import subprocess
from pathlib import Path
from urllib.parse import quote

from .errors import Problem

ENV_FILE = "BOOTGEN_SECRETS"
COMMAND_TIMEOUT = 10.0  # seconds a {command:} may take
COMMAND_OUTPUT = 64 * 1024  # bytes of output a {command:} may print
KINDS = ("secret", "env", "command")


class SecretStr(str):
    """A resolved secret value; `label` names its reference (never the value)."""

    label: str

    def __new__(cls, value: str, label: str) -> "SecretStr":
        made = super().__new__(cls, value)
        made.label = label
        return made

    def __reduce__(self):  # keep the label across worker processes
        return SecretStr, (str(self), self.label)


def _representable() -> None:
    """YAML writers (cloud-init user-data) write a SecretStr as the string it is."""
    import yaml

    for dumper in (yaml.SafeDumper, getattr(yaml, "CSafeDumper", yaml.SafeDumper)):
        dumper.add_representer(SecretStr, lambda self, value: self.represent_str(str(value)))


_representable()

_KNOWN: dict[str, str] = {}  # value -> label of every secret resolved in this process
_COMMANDS: dict[tuple, str] = {}  # argv -> output, so a command runs once per build


def reset() -> None:
    """Forget every value, command output and secrets file read so far."""
    _KNOWN.clear()
    _COMMANDS.clear()
    _FILES.clear()


def known() -> dict[str, str]:
    """Every secret value resolved so far -> its label."""
    return _KNOWN


def redact_known(text: str) -> str:
    """`text` with every known secret value replaced by `<LABEL>`."""
    for value in sorted(_KNOWN, key=len, reverse=True):
        if len(value) >= 3 and value in text:
            text = text.replace(value, f"<{_KNOWN[value]}>")
    return text


def redact_all(value):
    """`value` (text, or lists and dicts of it) with every known secret value shown as its reference."""
    if isinstance(value, SecretStr):
        return f"<{value.label}>"
    if isinstance(value, str):
        return redact_known(value) if _KNOWN else value
    if isinstance(value, (list, tuple)):
        return type(value)(redact_all(item) for item in value)
    if isinstance(value, dict):
        return {key: redact_all(item) for key, item in value.items()}
    return value


def reference(value) -> tuple[str, object] | None:
    """(kind, argument) if `value` is written as a reference, else None."""
    if isinstance(value, dict) and len(value) == 1:
        kind, argument = next(iter(value.items()))
        if kind in KINDS:
            return kind, argument
    return None


def label_of(kind: str, argument) -> str:
    if kind == "command":
        shown = argument[0] if isinstance(argument, list) and argument and isinstance(argument[0], str) else "?"
        return f"secret from command {shown}"
    return f"{'secret' if kind == 'secret' else 'env'} {argument}"


# Where a site, profile or node file may hold a reference: values that end up inside configs.
# Elsewhere (host names, MACs, addresses, profile and image names, URLs) a value becomes a
# file name, a dnsmasq line or a public URL, so a secret there would be published.
REFERABLE = frozenset({"vars", "cloud_init", "ignition", "kernel_args", "install", "ssh_authorized_keys"})


def _referable(path: tuple, kind: str) -> bool:
    if kind not in ("site", "profile", "node"):
        return True  # a Butane file: all of it is the OS config
    if kind == "site":
        return len(path) > 1 and path[0] == "defaults" and path[1] in REFERABLE
    return bool(path) and path[0] in REFERABLE


def resolve_doc(doc, site_dir: Path | None = None, kind: str = "") -> list[Problem]:
    """Replace every reference in `doc.data` by its value (a SecretStr); problems for those that
    cannot be resolved. The references found are recorded in `doc.secret_refs` (path -> (kind, argument))."""
    from .source import format_path

    problems: list[Problem] = []
    refs: dict[tuple, str] = {}

    def walk(value, path: tuple):
        found = reference(value)
        if found is not None:
            ref_kind, argument = found
            if not _referable(path, kind):
                problems.append(Problem(doc.locate(path), "a secret reference cannot stand here: this value "
                                        "becomes part of file names, addresses or public configs", format_path(path),
                                        f"references are for {', '.join(sorted(REFERABLE))}"))
                return None
            try:
                resolved = _resolve(ref_kind, argument, site_dir)
            except _Refused as exc:
                problems.append(Problem(doc.locate(path), str(exc), format_path(path), exc.hint))
                return None
            refs[path] = (ref_kind, argument)
            return resolved
        if isinstance(value, dict):
            for key in list(value):
                value[key] = walk(value[key], path + (key,))
        elif isinstance(value, list):
            for index, item in enumerate(value):
                value[index] = walk(item, path + (index,))
        return value

    if _might_refer(doc.data):
        doc.data = walk(doc.data, ())
    doc.secret_refs = refs
    return problems


def _might_refer(data) -> bool:
    """Cheap test before walking: a document without any one-key mapping named like a reference."""
    text = repr(data)
    return any(f"{{'{kind}': " in text for kind in KINDS)


class _Refused(Exception):
    def __init__(self, message: str, hint: str = ""):
        super().__init__(message)
        self.hint = hint


def _resolve(kind: str, argument, site_dir: Path | None) -> SecretStr:
    if kind == "secret":
        if not isinstance(argument, str) or not argument:
            raise _Refused("a {secret: NAME} reference needs a name")
        value = _secrets_file(site_dir).values.get(argument)
        if value is None:
            raise _Refused(f"no secret '{argument}' in the secrets file ({_secrets_file(site_dir).shown})",
                           "add it under `secrets:` there")
    elif kind == "env":
        if not isinstance(argument, str) or not argument:
            raise _Refused("an {env: NAME} reference needs a variable name")
        value = os.environ.get(argument)
        if value is None:
            raise _Refused(f"environment variable {argument} is not set", "export it before building")
    else:
        value = _command_output(argument, site_dir)
    label = label_of(kind, argument)
    _KNOWN.setdefault(value, label)
    return SecretStr(value, label)


def _command_output(argv, site_dir: Path | None) -> str:
    if not isinstance(argv, list) or not argv or not all(isinstance(a, str) and a for a in argv):
        raise _Refused("a {command: [...]} reference needs a list of arguments, the program first")
    allowed = _secrets_file(site_dir).commands
    if argv[0] not in allowed and os.path.basename(argv[0]) not in allowed:
        raise _Refused(f"command {argv[0]!r} is not allowed by the secrets file",
                       "list the program under `allow_commands:` in the secrets file (inputs are data and "
                       "run nothing the secrets file does not allow)")
    key = tuple(argv)
    if key not in _COMMANDS:
        _COMMANDS[key] = _run(argv)
    return _COMMANDS[key]


def _run(argv: list[str]) -> str:
    """Run a program without a shell; its standard output, bounded in time and size."""
    try:
        process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, start_new_session=True)
    except OSError as exc:
        raise _Refused(f"cannot run {argv[0]!r}: {exc.strerror}") from None
    try:
        out, err = process.communicate(timeout=COMMAND_TIMEOUT)
    except subprocess.TimeoutExpired:
        process.kill()
        process.communicate()
        raise _Refused(f"command {argv[0]!r} did not finish within {COMMAND_TIMEOUT:g} s") from None
    if process.returncode != 0:
        last = err.decode("utf-8", "replace").strip().splitlines()[-1:] or [""]
        said = f": {last[0][:200]}" if last[0] else ""
        raise _Refused(f"command {argv[0]!r} exited with status {process.returncode}{said}")
    if len(out) > COMMAND_OUTPUT:
        raise _Refused(f"command {argv[0]!r} printed more than {COMMAND_OUTPUT} bytes")
    try:
        text = out.decode("utf-8")
    except UnicodeDecodeError:
        raise _Refused(f"command {argv[0]!r} printed something that is not UTF-8 text") from None
    return text[:-1] if text.endswith("\n") else text


class SecretsFile:
    """The parsed secrets file (empty when none is configured)."""

    def __init__(self, shown: str, values: dict[str, str], path_key: str, commands: frozenset):
        self.shown, self.values, self.path_key, self.commands = shown, values, path_key, commands


_FILES: dict[tuple, SecretsFile] = {}


def configured_path() -> Path | None:
    """--secrets (which sets BOOTGEN_SECRETS), else BOOTGEN_SECRETS, else the user's
    `~/.config/bootgen/secrets.yaml` if there is one (scripts/setup.sh makes it for the example)."""
    name = os.environ.get(ENV_FILE)
    if name:
        return Path(name)
    default = default_path()
    return default if default.is_file() else None


def default_path() -> Path:
    config = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return Path(config) / "bootgen" / "secrets.yaml"


def _secrets_file(site_dir: Path | None) -> SecretsFile:
    path = configured_path()
    if path is None:
        raise _Refused("no secrets file: pass --secrets FILE or set BOOTGEN_SECRETS",
                       "keep it outside the repository, readable by you only (chmod 600)")
    try:
        info = os.stat(path)
        key = (str(path), str(site_dir), info.st_mtime_ns, info.st_size, info.st_ino)  # watch sees an edit
    except OSError:
        key = (str(path), str(site_dir))
    if key not in _FILES:
        _FILES[key] = load_secrets_file(path, site_dir)
    return _FILES[key]


def load_secrets_file(path: Path, site_dir: Path | None) -> SecretsFile:
    """Read and check the secrets file; raise _Refused (never quoting its contents)."""
    shown = str(path)
    try:
        info = os.stat(path)
    except OSError as exc:
        raise _Refused(f"cannot read the secrets file {shown}: {exc.strerror}") from None
    if not stat.S_ISREG(info.st_mode):
        raise _Refused(f"the secrets file {shown} is not a regular file")
    if info.st_mode & 0o077:
        raise _Refused(f"the secrets file {shown} can be read by others (mode {stat.S_IMODE(info.st_mode):04o})",
                       f"chmod 600 {shown}")
    repository = repository_of(site_dir)
    if repository is not None and _inside(path, repository):
        raise _Refused(f"the secrets file {shown} is inside the repository ({repository})",
                       "move it out, where Git cannot pick it up, and rotate what it held")
    return _parse(path.read_bytes(), shown)


def _parse(data: bytes, shown: str) -> SecretsFile:
    import yaml

    try:
        doc = yaml.safe_load(data.decode("utf-8"))
    except (UnicodeDecodeError, yaml.YAMLError):
        doc = None  # the parser's message may quote the file: never shown
    secrets = doc.get("secrets", {}) if isinstance(doc, dict) else None
    commands = doc.get("allow_commands", []) if isinstance(doc, dict) else None
    path_key = doc.get("path_key", "") if isinstance(doc, dict) else None
    if not isinstance(secrets, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in secrets.items()) \
            or not isinstance(commands, list) or not isinstance(path_key, str) \
            or set(doc) - {"secrets", "allow_commands", "path_key"}:
        raise _Refused(f"the secrets file {shown} is not in the expected shape",
                       "a YAML mapping: `secrets:` (names to quoted strings), optional `path_key:` "
                       "and `allow_commands:`")
    return SecretsFile(shown, secrets, path_key, frozenset(str(c) for c in commands))


def repository_of(site_dir: Path | None) -> Path | None:
    """The Git work tree holding the site, else the directory that holds site/."""
    if site_dir is None:
        return None
    start = Path(os.path.abspath(site_dir))
    for directory in (start, *start.parents):
        if (directory / ".git").exists():
            return directory
    return start.parent


def _inside(path: Path, directory: Path) -> bool:
    resolved, root = Path(os.path.realpath(path)), Path(os.path.realpath(directory))
    return resolved == root or root in resolved.parents


def current_values(site_dir: Path, refs) -> dict[str, str]:
    """Label -> value of every entry of the secrets file and of `refs` ((kind, argument) pairs)
    that resolves now; what cannot be resolved is left out."""
    values: dict[str, str] = {}
    if configured_path() is not None:
        try:
            values.update((f"secret {name}", value) for name, value in _secrets_file(site_dir).values.items())
        except _Refused:
            pass
    for kind, argument in refs:
        try:
            resolved = _resolve(kind, list(argument) if isinstance(argument, tuple) else argument, site_dir)
        except _Refused:
            continue
        values.setdefault(resolved.label, str(resolved))
    return values


# --- where secret-bearing files go, and how they are recognised -------------------------------

def path_key(site_dir: Path | None, values=()) -> bytes:
    """The key of unguessable paths: the secrets file's `path_key`, else one derived from `values`
    (the secret values in question); either way nothing in the repository or the public tree gives it."""
    try:
        configured = _secrets_file(site_dir).path_key if configured_path() else ""
    except _Refused:
        configured = ""
    if configured:
        return configured.encode()
    return hashlib.sha256(json.dumps(sorted(map(str, values))).encode()).digest()


def private_name(site_dir: Path | None, node: str, values=()) -> str:
    """The directory name standing for `node` in the paths of its secret-bearing files."""
    return hmac.new(path_key(site_dir, values), b"node\0" + node.encode(), hashlib.sha256).hexdigest()[:32]


def spec_values(spec, ctx) -> list[str]:
    """The values of every reference in the layers a node is made from (resolved once per process)."""
    values = []
    for doc in _layer_docs(spec, ctx):
        for kind, argument in getattr(doc, "secret_refs", {}).values():
            try:
                values.append(str(_resolve(kind, argument, ctx.inputs.site.directory)))
            except _Refused:
                continue
    return sorted(set(values))


def _layer_docs(spec, ctx) -> list:
    return [spec.doc, spec.profile.doc, ctx.inputs.site.doc] + [layer.doc for layer in spec.os_config_layers]


def uses_secrets(spec, ctx) -> bool:
    """Whether any layer a node is made from (its file, its profile and its Butane layers, the
    site) holds a reference."""
    return any(getattr(doc, "secret_refs", None) for doc in _layer_docs(spec, ctx))


def encodings(value: str) -> list[bytes]:
    """The forms a value takes in the files bootgen writes: as it is, JSON-escaped, URL-escaped
    (Ignition data URLs) and base64 at each of the three alignments."""
    raw = value.encode()
    forms = {raw, json.dumps(value)[1:-1].encode(), quote(value, safe="").encode(),
             quote(value, safe="/:=,;@!$&'()*+").encode()}
    for shift in range(3):
        encoded = base64.b64encode(b"\0" * shift + raw)
        core = encoded[4 if shift else 0:]  # drop the quantum that holds the padding bytes
        core = core[:len(core) - 4] if len(raw) > 6 else core
        if len(core) >= 4:
            forms.add(core)
    return [form for form in forms if len(form) >= 3]


def carries_secret(data: bytes | None, values=None) -> bool:
    """Whether `data` holds any known secret value in any of its encodings."""
    if data is None:
        return False
    for value in (values if values is not None else _KNOWN):
        if any(form in data for form in encodings(value)):
            return True
    return False


_PROCESS_KEY = os.urandom(32)


def _stamp_key(site_dir: Path) -> bytes:
    """`path_key` from the secrets file; without one, a key of this process only, so nothing
    stored can be checked against a guess (and a fresh process renders the nodes again)."""
    try:
        configured = _secrets_file(site_dir).path_key if configured_path() else ""
    except _Refused:
        configured = ""
    return configured.encode() if configured else _PROCESS_KEY


def stamp_digest(site_dir: Path, labels) -> str:
    """A keyed hash of the current values of the references named by `labels` (as recorded by
    the last build): it enters the build's stamps so a changed secret rebuilds, while neither
    the values nor an unkeyed hash of them is ever stored."""
    if not labels:
        return ""
    values = []
    for kind, argument in labels:
        try:
            values.append(_resolve(kind, argument, site_dir))
        except _Refused:
            values.append(None)  # the build itself reports it
    return hmac.new(_stamp_key(site_dir), json.dumps([kind for kind, _ in labels] + values).encode(),
                    hashlib.sha256).hexdigest()
