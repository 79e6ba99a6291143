"""Quoting for every syntax bootgen writes values into.

Validation (bootgen/schemas/) refuses values that do not belong in a field, so
these functions normally see only plain words. They still make each generated
file safe by construction: a value is spelled so that its destination reads it
back as exactly one value, or, where that syntax has no way to write it,
`UnsafeValue` is raised and the build reports it instead of writing the file.

One function per destination:

- `comment`: text inside a `#` comment line (any format)
- `pxelinux_arg`: a word on a pxelinux KERNEL/INITRD/APPEND line
- `ipxe_arg`: a word on an iPXE command line (`${...}` expansion, `#`, `||`...)
- `grub_word`: a word in grub.cfg
- `dnsmasq_value`, `dnsmasq_token`: a field of a dnsmasq.conf option
- `nginx_value`, `nginx_path`, `nginx_names`, `nginx_port`: nginx parameters
- `systemd_exec`: an ExecStart= command line (systemd.syntax, systemd.service)
- `shell`: a POSIX shell command
"""
from __future__ import annotations

import re
import shlex
from typing import Iterable

# Longest line each reader takes in one piece: longer ones are read as two
# lines, so the rest of a long value would become a line of its own.
PXELINUX_MAX_LINE = 4094  # syslinux: fgets() into char[4096], newline included
DNSMASQ_MAX_LINE = 1023  # dnsmasq: fgets() into char[MAXDNAME = 1025], newline included


class UnsafeValue(ValueError):
    """A value that the destination syntax cannot carry as one value."""

    def __init__(self, value, destination: str, reason: str):
        self.value = value
        self.destination = destination
        self.reason = reason
        super().__init__(f"{value!r} cannot be written in {destination}: {reason}")


# C0/C1 controls and DEL (general category Cc, fixed by Unicode's stability
# policy) and the line and paragraph separators (Zl, Zp: one character each).
# A character class, not unicodedata per character: every word of every file
# passes through here, and the class is about 50 times faster.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")
# Whitespace as str.isspace() sees it (re's \s for str patterns is the same test).
_SPACE = re.compile(r"\s")


def _is_control(char: str) -> bool:
    """C0/C1 controls, DEL and the Unicode line and paragraph separators."""
    return _CONTROL.match(char) is not None


def has_control(text: str) -> bool:
    return _CONTROL.search(text) is not None


def has_space(text: str) -> bool:
    return _SPACE.search(text) is not None


def _refuse_control(value: str, destination: str) -> None:
    if has_control(value):
        raise UnsafeValue(value, destination, "it contains a control character or line break")


def _refuse_space(value: str, destination: str) -> None:
    if has_space(value):
        raise UnsafeValue(value, destination, "it contains whitespace")


def _text(value) -> str:
    return "" if value is None else str(value)


# --- comments --------------------------------------------------------------

def comment(value) -> str:
    """Text for the rest of a `#` comment line: line breaks and other control
    characters are shown as escapes (\\n, \\x1b, \\u2028), so the comment stays one line."""
    text = _text(value)
    if not has_control(text):
        return text
    out = []
    for char in text:
        if not _is_control(char):
            out.append(char)
        elif char == "\n":
            out.append("\\n")
        elif char == "\r":
            out.append("\\r")
        elif char == "\t":
            out.append("\\t")
        elif ord(char) < 0x100:
            out.append(f"\\x{ord(char):02x}")
        else:
            out.append(f"\\u{ord(char):04x}")
    return "".join(out)


# --- pxelinux ----------------------------------------------------------------

def pxelinux_arg(value) -> str:
    """A word on a pxelinux KERNEL, INITRD or APPEND line. pxelinux has no quoting:
    a line ends at a newline or carriage return and words are split at spaces."""
    text = _text(value)
    _refuse_control(text, "a pxelinux config line")
    _refuse_space(text, "a pxelinux config line")
    return text


def pxelinux_initrd(value) -> str:
    """One entry of a pxelinux INITRD list (entries are separated by commas)."""
    text = pxelinux_arg(value)
    if "," in text:
        raise UnsafeValue(text, "a pxelinux INITRD line", "',' separates the initrd files there")
    return text


# --- iPXE ----------------------------------------------------------------------

_IPXE_EMPTY = "${}"  # an empty setting name expands to nothing
_IPXE_TERMINATORS = ("||", "&&", ";")


def ipxe_arg(value) -> str:
    """A word on an iPXE script line (iPXE 1.0.0+git-20190125 and later: core/exec.c,
    image/script.c). iPXE splits lines at whitespace with no quoting, takes a word
    that starts with `#` as the start of a comment and the words `||`, `&&` and `;`
    as command separators (before expanding settings), joins a line ending in `\\`
    with the next, and expands `${name}` inside every word, again and again until
    none is left: a `${` has no literal spelling, so it is refused."""
    text = _text(value)
    _refuse_control(text, "an iPXE script line")
    _refuse_space(text, "an iPXE script line")
    if "${" in text:
        raise UnsafeValue(text, "an iPXE script line", "iPXE reads '${' as the start of a setting to expand")
    if text.startswith("#") or text in _IPXE_TERMINATORS:
        text = _IPXE_EMPTY + text
    if text.endswith("\\"):
        text += _IPXE_EMPTY
    return text


# --- GRUB ----------------------------------------------------------------------

_GRUB_SAFE = re.compile(r"^[A-Za-z0-9_@%+=:,./()-]+\Z")


def grub_word(value) -> str:
    """One word in grub.cfg: bare when it has no special character (a device path
    such as (http,10.0.0.5:8080)/vmlinuz included), else in single quotes, inside
    which no character is special (a quote is written '\\''). GRUB has no escape
    for a line break, so control characters are refused."""
    text = _text(value)
    _refuse_control(text, "a grub.cfg line")
    if _GRUB_SAFE.match(text):
        return text
    return "'" + text.replace("'", "'\\''") + "'"


# --- dnsmasq -------------------------------------------------------------------

_DNSMASQ_SAFE = re.compile(r"^[A-Za-z0-9_@%+=:./*~!?&()\[\]-]+\Z")
_DNSMASQ_TOKEN = re.compile(r"^[A-Za-z0-9_.:-]+\Z")
_DNSMASQ_ESCAPES = {"\\": "\\\\", '"': '\\"', "\t": "\\t", "\n": "\\n", "\r": "\\r", "\b": "\\b",
                    "\x1b": "\\e"}


def dnsmasq_value(value) -> str:
    """A free-text field of a dnsmasq option (a path or URL): bare when plain, else in
    double quotes, inside which dnsmasq reads `#`, `,` and spaces literally and
    \\\\ \\" \\t \\n \\r \\b \\e as escapes (option.c read_file)."""
    text = _text(value)
    if _DNSMASQ_SAFE.match(text):
        return text
    out = []
    for char in text:
        if char in _DNSMASQ_ESCAPES:
            out.append(_DNSMASQ_ESCAPES[char])
        elif _is_control(char):
            raise UnsafeValue(text, "dnsmasq.conf", "it contains a control character")
        else:
            out.append(char)
    return '"' + "".join(out) + '"'


def dnsmasq_token(value) -> str:
    """A name-like field of a dnsmasq option (interface, host name, MAC, address):
    written bare, so only letters, digits and `._:-` are accepted."""
    text = _text(value)
    if not _DNSMASQ_TOKEN.match(text):
        raise UnsafeValue(text, "dnsmasq.conf", "only letters, digits and '._:-' are accepted here")
    return text


# --- nginx ---------------------------------------------------------------------

_NGINX_SAFE = re.compile(r"^[A-Za-z0-9_@%+=:,./*~!?&-]+\Z")
_NGINX_ESCAPES = {"\\": "\\\\", '"': '\\"', "\t": "\\t", "\n": "\\n", "\r": "\\r"}


def nginx_value(value) -> str:
    """One parameter of an nginx directive: bare when plain, else in double quotes,
    inside which `;`, `{`, `}`, `#` and spaces are literal and \\\\ \\" \\t \\n \\r
    are escapes (ngx_conf_file.c)."""
    text = _text(value)
    if _NGINX_SAFE.match(text):
        return text
    out = []
    for char in text:
        if char in _NGINX_ESCAPES:
            out.append(_NGINX_ESCAPES[char])
        elif _is_control(char):
            raise UnsafeValue(text, "nginx.conf", "it contains a control character")
        else:
            out.append(char)
    return '"' + "".join(out) + '"'


def nginx_path(value) -> str:
    """A parameter of a directive that expands variables (`root`): nginx has no
    escape for `$`, so a `$` is refused."""
    text = _text(value)
    if "$" in text:
        raise UnsafeValue(text, "nginx.conf", "nginx would read '$' as the start of a variable")
    return nginx_value(text)


def nginx_names(value) -> str:
    """server_name's parameters: the space-separated names, each one parameter. A name
    nginx would read as a regular expression (`~...`) or as a wildcard it does not
    accept (`*` other than a leading `*.` or a trailing `.*`) is refused."""
    names = _text(value).split()
    if not names:
        return '""'
    for name in names:
        plain = name[2:] if name.startswith("*.") else name[1:] if name.startswith(".") else name
        plain = plain[:-2] if plain.endswith(".*") else plain
        if name.startswith("~") or "*" in plain or (name != "_" and not plain):
            raise UnsafeValue(name, "nginx.conf", "nginx does not accept it as a server name")
    return " ".join(nginx_value(name) for name in names)


def nginx_port(value) -> str:
    """A TCP port for `listen`."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value < 65536:
        raise UnsafeValue(value, "nginx.conf", "a port is a number from 1 to 65535")
    return str(value)


# --- systemd -------------------------------------------------------------------

_SYSTEMD_SAFE = re.compile(r"^[A-Za-z0-9_@+=:,./-]+\Z")
_SYSTEMD_ESCAPES = {"\\": "\\\\", '"': '\\"', "\n": "\\n", "\t": "\\t", "\r": "\\r", "\a": "\\a",
                    "\b": "\\b", "\f": "\\f", "\v": "\\v"}


def systemd_word(value) -> str:
    """One word of a systemd command line (ExecStart=): bare when plain, else in
    double quotes with C escapes. `%` is written `%%` (specifiers) and `$` is
    written `$$` (environment variables): systemd expands both even inside quotes."""
    text = _text(value)
    if "\0" in text:
        raise UnsafeValue(text, "a systemd unit", "it contains a NUL character")
    escaped = text.replace("%", "%%").replace("$", "$$")
    if _SYSTEMD_SAFE.match(text):
        return escaped
    out = []
    for char in escaped:
        if char in _SYSTEMD_ESCAPES:
            out.append(_SYSTEMD_ESCAPES[char])
        elif _is_control(char) or not char.isprintable():
            code = ord(char)
            out.append(f"\\x{code:02x}" if code < 0x80 else f"\\u{code:04x}" if code < 0x10000
                       else f"\\U{code:08x}")
        else:
            out.append(char)
    return '"' + "".join(out) + '"'


def systemd_exec(argv: Iterable) -> str:
    """The value of ExecStart= that runs exactly `argv` (no prefix characters)."""
    words = [_text(a) for a in argv]
    if not words:
        raise UnsafeValue(words, "a systemd unit", "a command needs at least the program")
    if words[0][:1] in ("@", "-", ":", "+", "!"):
        raise UnsafeValue(words[0], "a systemd unit", "the program name starts with a prefix character")
    return " ".join(systemd_word(word) for word in words)


# --- POSIX shell ---------------------------------------------------------------

def shell(argv: Iterable) -> str:
    """A POSIX shell command line that runs exactly `argv` (a line break inside an
    argument stays inside its single quotes)."""
    words = [_text(a) for a in argv]
    for word in words:
        if "\0" in word:
            raise UnsafeValue(word, "a shell command", "it contains a NUL character")
    return " ".join(shlex.quote(word) for word in words)


# --- checks on whole files ------------------------------------------------------

def long_lines(data: bytes, limit: int) -> list[int]:
    """1-based numbers of the lines of `data` longer than `limit` bytes."""
    return [number for number, line in enumerate(data.split(b"\n"), 1) if len(line) > limit]


# --- Raspberry Pi firmware files -------------------------------------------------

def pi_word(value) -> str:
    """A value in config.txt (`kernel=NAME`): the firmware reads to the end of the line and has
    no quoting, so whitespace, `#` and control characters are refused."""
    text = _text(value)
    if not text or has_control(text) or any(c.isspace() or c == "#" for c in text):
        raise UnsafeValue(text, "config.txt", "it must be one word without '#'")
    return text


def pi_cmdline_arg(value) -> str:
    """One kernel argument in cmdline.txt, which the firmware reads as a single line."""
    text = _text(value)
    if not text or has_control(text) or any(c.isspace() for c in text):
        raise UnsafeValue(text, "cmdline.txt", "a kernel argument there is one word on one line")
    return text


FILTERS = {
    "comment": comment,
    "pxelinux_arg": pxelinux_arg,
    "pxelinux_initrd": pxelinux_initrd,
    "ipxe_arg": ipxe_arg,
    "grub_word": grub_word,
    "dnsmasq_value": dnsmasq_value,
    "dnsmasq_token": dnsmasq_token,
    "nginx_value": nginx_value,
    "nginx_path": nginx_path,
    "nginx_names": nginx_names,
    "nginx_port": nginx_port,
    "pi_word": pi_word,
}
