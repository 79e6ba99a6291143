"""The syntax checks Ignition runs on strings: systemd unit files, URLs and `data:` URLs.

Ignition (v2.20, spec 3.0.0 to 3.4.0) parses unit contents with go-systemd's
unit deserialiser, URLs with Go's net/url, and `data:` URLs with
vincent-petithory/dataurl. A config that fails any of them is refused by
Ignition at first boot, so bootgen runs the same checks, reimplemented here
from their behaviour (including where they are odd: a section name may span
lines, a unit line is "too long" only when 2048 bytes without a newline are
buffered at once), and tested against Ignition's own validator.

Each check returns None when Ignition accepts the value, else Ignition's message.
"""
from __future__ import annotations

import base64
import functools
import re

# --- systemd unit files (go-systemd unit.Deserialize) ------------------------

_LINE_MAX = 2048  # SYSTEMD_LINE_MAX: a longer line is refused
_BUF_SIZE = 4096  # bufio.Reader's default buffer
# unicode.IsSpace: Latin-1 spaces plus the Unicode White_Space property
_GO_SPACES = frozenset("\t\n\v\f\r \x85\xa0\u1680\u2028\u2029\u202f\u205f\u3000"
                       + "".join(chr(c) for c in range(0x2000, 0x200B)))


class _BufReader:
    """bufio.Reader over a whole byte string, tracking how much of it is buffered.

    The underlying reader always returns as much as asked, so the buffer is
    always the window data[pos:end] and a fill makes it data[pos:pos+4096]."""

    def __init__(self, data: bytes):
        self.data = data
        self.pos = 0
        self.end = 0
        self.last_rune = 0

    def buffered(self) -> int:
        return self.end - self.pos

    def _fill(self) -> None:
        self.end = min(len(self.data), self.pos + _BUF_SIZE)

    def read_rune(self) -> str | None:
        """The next rune (invalid UTF-8 reads as one U+FFFD byte), None at the end."""
        while self.end - self.pos < 4 and not _full_rune(self.data[self.pos:self.end]) \
                and self.end < len(self.data):
            self._fill()
        if self.pos == self.end:
            self.last_rune = 0
            return None
        rune, size = _decode_rune(self.data, self.pos, self.end)
        self.pos += size
        self.last_rune = size
        return rune

    def unread_rune(self) -> None:
        self.pos -= self.last_rune
        self.last_rune = 0

    def read_bytes(self, delim: int) -> tuple[bytes, bool]:
        """Up to and including delim; (rest, True) when the data ends first."""
        start = self.pos
        while True:
            index = self.data.find(bytes([delim]), self.pos, self.end)
            if index >= 0:
                self.pos = index + 1
                return self.data[start:self.pos], False
            if self.end == len(self.data):
                self.pos = self.end
                return self.data[start:self.pos], True
            if self.end - self.pos >= _BUF_SIZE:  # ErrBufferFull: hand over the buffer, keep reading
                self.pos = self.end
            self._fill()


def _full_rune(data: bytes) -> bool:
    if not data:
        return False
    first = data[0]
    need = 1 if first < 0xC0 else 2 if first < 0xE0 else 3 if first < 0xF0 else 4
    if first >= 0xF8 or 0x80 <= first < 0xC0:
        return True  # invalid leading byte: decodes as one error rune
    if len(data) >= need:
        return True
    # a short sequence is complete when a following byte is not a continuation byte
    return any(not 0x80 <= b < 0xC0 for b in data[1:])


def _decode_rune(data: bytes, pos: int, end: int) -> tuple[str, int]:
    for size in (1, 2, 3, 4):
        if pos + size > end:
            break
        try:
            return data[pos:pos + size].decode("utf-8"), size
        except UnicodeDecodeError:
            continue
    return "\ufffd", 1


def unit_syntax(text: str) -> tuple[list[tuple[str, str, str]] | None, str | None]:
    """Parse a unit the way Ignition does: (options as (section, name, value), error message)."""
    reader = _BufReader(text.encode("utf-8", "surrogatepass"))
    options: list[tuple[str, str, str]] = []

    def to_eol() -> tuple[bytes, bool]:
        line, eof = reader.read_bytes(0x0A)
        if line.endswith(b"\n"):
            line = line[:-1]
        if line.endswith(b"\r"):
            line = line[:-1]
        return line, eof

    def next_section():
        rune = reader.read_rune()
        if rune is None:
            return None
        if rune == "[":
            return section_name
        if rune in "#;":
            return ignore_line(next_section)
        return next_section

    def section_name():
        name, eof = reader.read_bytes(ord("]"))
        if eof:
            raise _UnitError("unable to find end of section")
        return section_suffix(name[:-1].decode("utf-8", "replace"))

    def section_suffix(section: str):
        def step():
            garbage, _ = to_eol()
            shown = _go_trim(garbage)
            if shown:
                raise _UnitError("found garbage after section name: " + shown)
            return section_or_option(section)
        return step

    def ignore_line(following):
        def step():
            while True:
                line, _ = to_eol()
                if not line.removesuffix(b" ").endswith(b"\\"):
                    return following
        return step

    def section_or_option(section: str):
        def step():
            rune = reader.read_rune()
            if rune is None:
                return None
            if rune in _GO_SPACES:
                return section_or_option(section)
            if rune == "[":
                return section_name
            if rune in "#;":
                return ignore_line(section_or_option(section))
            reader.unread_rune()
            return option_name(section)
        return step

    def option_name(section: str):
        def step():
            chars = []
            while True:
                rune = reader.read_rune()
                if rune is None:
                    raise _UnitError("EOF")
                if rune in "\r\n":
                    raise _UnitError("unexpected newline encountered while parsing option name")
                if rune == "=":
                    break
                chars.append(rune)
            return option_value(section, "".join(chars).strip(), b"")
        return step

    def option_value(section: str, name: str, partial: bytes):
        def step():
            value = partial
            line, eof = to_eol()
            if _go_trim(line):
                value += line
                index = line.rfind(b"\\")
                if index != -1 and index == len(line) - 1:
                    return option_value(section, name, value + (b"" if eof else b"\n"))
            options.append((section, name, value.decode("utf-8", "replace").strip()))
            return section_or_option(section)
        return step

    step = next_section
    try:
        while step is not None:
            if reader.buffered() >= _LINE_MAX:
                window = reader.data[reader.pos:reader.pos + _LINE_MAX]
                if b"\r" not in window and b"\n" not in window:
                    raise _UnitError(f"line too long (max {_LINE_MAX} bytes)")
            step = step()
    except _UnitError as exc:
        return None, str(exc)
    return options, None


class _UnitError(Exception):
    pass


def _go_trim(line: bytes) -> str:
    """bytes.TrimSpace, decoded for a message."""
    return line.decode("utf-8", "replace").strip("".join(_GO_SPACES))


# Most nodes of a profile carry the same unit texts: parse each text once per process.
@functools.lru_cache(maxsize=512)
def unit_problem(text: str) -> str | None:
    """Ignition's message for unit (or drop-in) contents it cannot parse, else None."""
    _, error = unit_syntax(text)
    return None if error is None else "invalid unit content: " + error


@functools.lru_cache(maxsize=512)
def has_install_section(text: str) -> bool:
    """Whether a parsable unit has an option in [Install] (what `enabled` acts on)."""
    options, _ = unit_syntax(text)
    return options is None or any(section == "Install" for section, _, _ in options)


# --- URLs (Go net/url.Parse, then Ignition's scheme rules) -------------------

_HEX = "0123456789abcdefABCDEF"
_HOST_OK = frozenset("!$&'()*+,;=:[]<>\"-_.~")
_USERINFO_OK = frozenset("-._:~!$&'()*+,;=%@")


class _UrlError(ValueError):
    pass


def _is_alnum(ch: str) -> bool:
    return ch.isascii() and ch.isalnum()


def _unescape(text: str, mode: str) -> None:
    """net/url's unescape checks, for mode path, fragment, user, host or zone."""
    i = 0
    while i < len(text):
        ch = text[i]
        if ch == "%":
            if i + 2 >= len(text) or text[i + 1] not in _HEX or text[i + 2] not in _HEX:
                raise _UrlError(f"invalid URL escape {text[i:i + 3]!r}")
            value = int(text[i + 1:i + 3], 16)
            if mode == "host" and value < 0x80 and text[i:i + 3] != "%25":
                raise _UrlError(f"invalid URL escape {text[i:i + 3]!r}")
            if mode == "zone" and text[i:i + 3] != "%25" and value != 0x20 and value < 0x80 \
                    and not (_is_alnum(chr(value)) or chr(value) in _HOST_OK):
                raise _UrlError(f"invalid URL escape {text[i:i + 3]!r}")
            i += 3
            continue
        if mode in ("host", "zone") and ord(ch) < 0x80 and not (_is_alnum(ch) or ch in _HOST_OK):
            raise _UrlError(f"invalid character {ch!r} in host name")
        i += 1


def _valid_optional_port(port: str) -> bool:
    return port == "" or (port[0] == ":" and all("0" <= c <= "9" for c in port[1:]))


def _parse_host(host: str) -> None:
    if host.startswith("["):
        i = host.rfind("]")
        if i < 0:
            raise _UrlError("missing ']' in host")
        if not _valid_optional_port(host[i + 1:]):
            raise _UrlError(f"invalid port {host[i + 1:]!r} after host")
        zone = host[:i].find("%25")
        if zone >= 0:
            _unescape(host[:zone], "host")
            _unescape(host[zone:i], "zone")
            _unescape(host[i:], "host")
            return
    else:
        i = host.rfind(":")
        if i != -1 and not _valid_optional_port(host[i:]):
            raise _UrlError(f"invalid port {host[i:]!r} after host")
    _unescape(host, "host")


def _parse_authority(authority: str) -> None:
    i = authority.rfind("@")
    _parse_host(authority[i + 1:] if i >= 0 else authority)
    if i < 0:
        return
    userinfo = authority[:i]
    if not all(_is_alnum(c) or c in _USERINFO_OK for c in userinfo):
        raise _UrlError("net/url: invalid userinfo")
    for part in userinfo.split(":", 1):
        _unescape(part, "user")


def parse_url(raw: str) -> tuple[str, str, str]:
    """Go's url.Parse: (lower-case scheme, opaque part, raw query); raises _UrlError."""
    without_fragment, _, fragment = raw.partition("#")
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in without_fragment):
        raise _UrlError("net/url: invalid control character in URL")
    scheme, rest = "", without_fragment
    for i, ch in enumerate(without_fragment):
        if ch.isascii() and ch.isalpha():
            continue
        if ch.isascii() and (ch.isdigit() or ch in "+-."):
            if i == 0:
                break
            continue
        if ch == ":":
            if i == 0:
                raise _UrlError("missing protocol scheme")
            scheme, rest = without_fragment[:i].lower(), without_fragment[i + 1:]
        break
    query = ""
    if rest.endswith("?") and rest.count("?") == 1:
        rest = rest[:-1]
    else:
        rest, _, query = rest.partition("?")
    opaque = ""
    if not rest.startswith("/"):
        if scheme:
            opaque = rest
        elif ":" in rest.split("/", 1)[0]:
            raise _UrlError("first path segment in URL cannot contain colon")
    if not opaque:
        if (scheme or not rest.startswith("///")) and rest.startswith("//"):
            authority, slash, path = rest[2:].partition("/")
            _parse_authority(authority)
            rest = slash + path
        _unescape(rest, "path")
    if fragment:
        _unescape(fragment, "fragment")
    return scheme, opaque, query


def _query_values(query: str, key: str) -> list[str] | None:
    """url.Values lookup as Go's ParseQuery builds it (bad pairs are skipped)."""
    values = None
    for pair in query.split("&"):
        if not pair or ";" in pair:
            continue
        name, _, value = pair.partition("=")
        try:
            name, value = _query_unescape(name), _query_unescape(value)
        except _UrlError:
            continue
        if name == key:
            values = (values or []) + [value]
    return values


def _query_unescape(text: str) -> str:
    out = bytearray()
    i = 0
    while i < len(text):
        ch = text[i]
        if ch == "%":
            if i + 2 >= len(text) or text[i + 1] not in _HEX or text[i + 2] not in _HEX:
                raise _UrlError("bad escape")
            out.append(int(text[i + 1:i + 3], 16))
            i += 3
            continue
        out += b" " if ch == "+" else ch.encode("utf-8")
        i += 1
    return out.decode("utf-8", "replace")


SCHEMES_SINCE = {"http": (3, 0, 0), "https": (3, 0, 0), "tftp": (3, 0, 0), "s3": (3, 0, 0), "data": (3, 0, 0),
                 "gs": (3, 2, 0), "arn": (3, 4, 0)}


def url_problem(raw: str, version: tuple = (3, 4, 0)) -> str | None:
    """Ignition's validateURL for a source at spec `version`; None when accepted ("" is accepted)."""
    if raw == "":
        return None
    try:
        scheme, opaque, query = parse_url(raw)
    except _UrlError:
        return "unable to parse url"
    if scheme not in SCHEMES_SINCE or version < SCHEMES_SINCE[scheme]:
        return "invalid url scheme"
    if scheme in ("s3", "arn"):
        if scheme == "arn":
            problem = _arn_problem("arn:" + opaque)
            if problem:
                return problem
        versions = _query_values(query, "versionId")
        if versions is not None and (not versions or versions[0] == ""):
            return "invalid S3 object VersionId"
    if scheme == "data":
        try:
            decode_data_url(raw)
        except ValueError as exc:
            return str(exc)
    return None


def _arn_problem(full: str) -> str | None:
    if full.count(":") < 5:
        return "invalid S3 ARN format"
    sections = full.split(":", 5)
    if sections[2] != "s3":
        return "invalid S3 ARN format"
    parts = full.split("/")
    if sections[5].startswith("accesspoint/") and len(parts) < 3 or len(parts) < 2:
        return "invalid S3 ARN format"
    return None


# --- data: URLs (vincent-petithory/dataurl) -----------------------------------

_TSPECIALS = frozenset('()<>@,;:\\"/[]?=')
_URL_UNSAFE = frozenset(' <>#"{}|\\^[]`')
_B64 = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=")


def _token(ch: str) -> bool:
    return ord(ch) < 0x80 and not (ord(ch) < 0x20 or ord(ch) == 0x7F) and ch not in _GO_SPACES \
        and ch not in _TSPECIALS


def _url_char(ch: str) -> bool:
    return ord(ch) < 0x80 and ord(ch) >= 0x20 and ord(ch) != 0x7F and ch not in _URL_UNSAFE


def decode_data_url(url: str) -> tuple[bytes, str]:
    """(data, media type) of a `data:` URL as Ignition decodes it; ValueError with its message."""
    if not url.startswith("data:"):
        raise ValueError("missing data prefix")
    text = url[5:]
    n = len(text)
    i = 0
    base64_data = False
    media = "text/plain"

    def at(k: int) -> str | None:
        return text[k] if k < n else None

    ch = at(i)
    if ch is None:
        raise ValueError("missing comma before data")
    if ch not in ";,":
        start = i
        extension = ch in "xX" and at(i + 1) == "-"
        if not (_token(ch) or extension):
            raise ValueError("invalid character after data prefix")
        i += 2 if extension else 1
        while True:
            ch = at(i)
            if ch == "/":
                kind = text[start:i]
                if not extension and not kind.startswith(("text", "image", "audio", "video", "application",
                                                          "message", "multipart")):
                    raise ValueError("invalid media type")
                break
            if ch is None:
                raise ValueError("missing media type slash")
            if not _token(ch):
                raise ValueError("invalid character for media type")
            i += 1
        i += 1
        while True:
            ch = at(i)
            if ch in (";", ","):
                break
            if ch is None:
                raise ValueError("incomplete media type")
            if not _token(ch):
                raise ValueError("invalid character for media subtype")
            i += 1
        media = text[start:i]
    while at(i) == ";":
        i += 1
        ch = at(i)
        if ch is None or ch in "=,":
            raise ValueError("unterminated parameter sequence")
        if not _token(ch):
            raise ValueError("invalid character for parameter attribute")
        start = i
        while True:
            ch = at(i)
            if ch == "=":
                break
            if ch == ",":
                if text[start:i] != "base64":
                    raise ValueError(f"expected base64, got {text[start:i]}")
                base64_data = True
                break
            if ch is None:
                raise ValueError("unterminated parameter sequence")
            if not _token(ch):
                raise ValueError("invalid character for parameter attribute")
            i += 1
        if base64_data:
            break
        i += 1  # '='
        ch = at(i)
        if ch == '"':
            i += 1
            value_start = i
            while True:
                ch = at(i)
                if ch is None:
                    raise ValueError("unclosed quoted string")
                if ch == "\\":
                    i += 1
                    ch = at(i)
                    if ch is None:
                        raise ValueError("unexpected eof")
                    if ord(ch) >= 0x80:
                        raise ValueError("invalid escaped character")
                elif ch == '"':
                    break
                elif ord(ch) >= 0x80:
                    raise ValueError("invalid character for parameter value")
                i += 1
            _go_unquote(text[value_start:i])
            i += 1
        elif ch is None:
            raise ValueError("missing comma before data")
        elif _token(ch):
            value_start = i
            while True:
                ch = at(i)
                if ch in (";", ","):
                    break
                if ch is None:
                    raise ValueError("missing comma before data")
                if not _token(ch):
                    raise ValueError("invalid character for parameter value")
                i += 1
            _rfc2396_unescape(text[value_start:i])
        else:
            raise ValueError("invalid character for parameter value")
        ch = at(i)
        if ch is None:
            raise ValueError("missing comma before data")
        if ch not in ";,":
            raise ValueError("expected semicolon or comma")
    if at(i) != ",":
        ch = at(i)
        raise ValueError("missing comma before data" if ch is None else "expected semicolon or comma")
    data = text[i + 1:]
    if base64_data:
        if any(c not in _B64 for c in data):
            raise ValueError("invalid data character")
        return _go_base64(data), media
    if any(not _url_char(c) for c in data):
        raise ValueError("invalid data character")
    return _rfc2396_unescape(data), media


def _rfc2396_unescape(text: str) -> bytes:
    out = bytearray()
    i = 0
    while i < len(text):
        ch = text[i]
        if ord(ch) >= 0x80:
            raise ValueError("rfc2396: non-ASCII char detected")
        if ch == "%":
            if i + 1 >= len(text):
                raise ValueError("rfc2396: unexpected end of unescape sequence")
            if text[i + 1] not in _HEX:
                raise ValueError("rfc2396: invalid char 0x25 in unescape sequence")
            if i + 2 >= len(text):
                raise ValueError("rfc2396: unexpected end of unescape sequence")
            if text[i + 2] not in _HEX:
                raise ValueError("rfc2396: invalid char 0x25 in unescape sequence")
            out.append(int(text[i + 1:i + 3], 16))
            i += 3
            continue
        out.append(ord(ch))
        i += 1
    return bytes(out)


def _go_unquote(text: str) -> None:
    """strconv.Unquote of a double-quoted string: the escapes Go knows, no raw newline."""
    i = 0
    while i < len(text):
        ch = text[i]
        if ch == "\n":
            raise ValueError("invalid syntax")
        if ch != "\\":
            i += 1
            continue
        nxt = text[i + 1] if i + 1 < len(text) else ""
        if nxt in 'abfnrtv\\"':
            i += 2
        elif nxt == "x" and re.fullmatch(r"[0-9a-fA-F]{2}", text[i + 2:i + 4]):
            i += 4
        elif nxt == "u" and re.fullmatch(r"[0-9a-fA-F]{4}", text[i + 2:i + 6]) \
                and not 0xD800 <= int(text[i + 2:i + 6], 16) < 0xE000:
            i += 6
        elif nxt == "U" and re.fullmatch(r"[0-9a-fA-F]{8}", text[i + 2:i + 10]) \
                and int(text[i + 2:i + 10], 16) <= 0x10FFFF and not 0xD800 <= int(text[i + 2:i + 10], 16) < 0xE000:
            i += 10
        elif nxt in "01234567" and re.fullmatch(r"[0-7]{3}", text[i + 1:i + 4]) and int(text[i + 1:i + 4], 8) < 256:
            i += 4
        else:
            raise ValueError("invalid syntax")


_B64_PADDED = re.compile(r"(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?")


def _go_base64(data: str) -> bytes:
    """base64.StdEncoding.DecodeString: padded, '=' only at the very end."""
    if not _B64_PADDED.fullmatch(data):
        raise ValueError("illegal base64 data")
    return base64.b64decode(data)
