"""The one gate for files that site data names: they must be regular files inside the site.

Everything in site/ and nodes/ is data, and data never names a file outside the
site. A path written in an input (an image `file:`, a key file, a Butane
`contents.local`, an `ignition_files` entry, ...) goes through `site_file`,
which refuses, at the input's file:line:col and field path:

- absolute paths, and `..` components that climb out of the site directory;
- symlinks (the file itself or a directory on the way) whose target is outside
  the resolved site directory, dangling symlinks and symlink loops;
- anything that is not a regular file: directories, FIFOs, devices, sockets.

The file is checked with stat() only, never opened, so a FIFO cannot block a
build. `read_site_file` then opens it without following any symlink (one
directory at a time from the site directory, O_NOFOLLOW), confirms it is the
same regular file that was checked, and bounds how much is read.

Messages quote the path as written (shortened, and never a pasted key), and
never the contents of any file.
"""
from __future__ import annotations

import errno
import os
import stat
from pathlib import Path, PurePosixPath

from .errors import InputError, Location, Problem

MAX_READ = 16 * 1024 * 1024  # files embedded in configs; Ignition data URLs beyond this are unreasonable
_SHOWN = 80  # characters of a path quoted in a message

_KINDS = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISLNK, "a symlink"),
)


class SiteFileError(InputError):
    """A path named by site data was refused; `reason` says why in one word.

    Reasons: empty, absolute, parent, outside, missing, loop, not_regular,
    unreadable, changed, too_large. Callers may word the problem their own way
    from it; the problem itself never holds file contents."""

    def __init__(self, problems, reason: str = ""):
        super().__init__(problems)
        self.reason = reason

    def __reduce__(self):
        return type(self), (self.problems, self.reason)


def site_file(site_dir: Path, relative: str, location: Location, field: str, *, what: str = "file") -> Path:
    """The resolved real path of the regular file `relative` names inside `site_dir`.

    Raises SiteFileError (an InputError) with one problem at `location` and
    `field` when the path is absolute, climbs out of the site, resolves (through
    symlinks) outside the resolved site directory, does not exist, loops, or is
    not a regular file. Nothing is opened. `what` names the file in messages,
    e.g. "key file"."""
    return _check(site_dir, relative, location, field, what)[0]


def read_site_file(site_dir: Path, relative: str, location: Location, field: str, max_bytes: int = MAX_READ, *,
                   what: str = "file") -> bytes:
    """The bytes of the site file `relative` names, checked as by `site_file`.

    It is opened beneath the resolved site directory without following a
    symlink on the way, and must be the very regular file that was checked
    (same device and inode); more than `max_bytes` is refused."""
    path, checked, root = _check(site_dir, relative, location, field, what)
    shown = _show(relative)

    def refuse(reason: str, message: str, hint: str = "") -> SiteFileError:
        return SiteFileError(Problem(location, message, field, hint), reason)

    if checked.st_size > max_bytes:
        raise refuse("too_large", f"{what} {shown} is larger than {max_bytes} bytes",
                     "files read into configs must be small; serve large files by URL instead")
    try:
        fd = _open_beneath(root, path)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR, errno.ENOENT, errno.EXDEV):
            raise refuse("changed", f"{what} {shown} changed while it was being read", "build again") from None
        raise refuse("unreadable", f"cannot read {what} {shown}: {exc.strerror}") from None
    with os.fdopen(fd, "rb", buffering=0) as handle:
        opened = os.fstat(handle.fileno())
        if not stat.S_ISREG(opened.st_mode) or (opened.st_dev, opened.st_ino) != (checked.st_dev, checked.st_ino):
            raise refuse("changed", f"{what} {shown} changed while it was being read", "build again")
        try:
            data = _read_at_most(handle, max_bytes + 1)
        except OSError as exc:
            raise refuse("unreadable", f"cannot read {what} {shown}: {exc.strerror}") from None
    if len(data) > max_bytes:
        raise refuse("too_large", f"{what} {shown} is larger than {max_bytes} bytes",
                     "files read into configs must be small; serve large files by URL instead")
    return data


def regular_file_identity(path: Path) -> os.stat_result:
    """lstat() of a path `site_file` returned, refusing (OSError) anything but a regular file now.

    For callers that checked a file earlier and use it again later in the build."""
    st = os.lstat(path)
    if not stat.S_ISREG(st.st_mode):
        raise OSError(errno.EINVAL, "not a regular file", str(path))
    return st


# --- the check -------------------------------------------------------------------


def _check(site_dir: Path, relative: str, location: Location, field: str, what: str):
    """(resolved path, its lstat, resolved site dir), or SiteFileError."""
    text = "" if relative is None else str(relative)
    shown = _show(text)

    def refuse(reason: str, message: str, hint: str = "") -> SiteFileError:
        return SiteFileError(Problem(location, message, field, hint), reason)

    if not text or "\x00" in text:
        raise refuse("empty", f"{what} name is empty" if not text else f"{what} name {shown} holds a NUL character",
                     "name a file relative to the site directory")
    pure = PurePosixPath(text)
    if pure.is_absolute():
        raise refuse("absolute", f"{what} {shown} is an absolute path",
                     "name files relative to the site directory; files outside it cannot be used")
    depth = 0
    for part in pure.parts:
        depth += -1 if part == ".." else 1
        if depth < 0:
            raise refuse("parent", f"{what} {shown} leaves the site directory",
                         "files named in the site must be inside the site directory")
    root = os.path.realpath(site_dir)
    joined = os.path.join(root, *pure.parts)
    real = os.path.realpath(joined)  # not strict: a dangling link still shows where it points
    if os.path.commonpath([root, real]) != root or real == root:
        raise refuse("outside", f"{what} {shown} resolves outside the site directory",
                     "a symlink on the way points out of the site; copy the file into the site instead")
    try:
        st = os.lstat(real)
    except FileNotFoundError:
        dangling = os.path.islink(joined)
        raise refuse("missing", f"{what} {shown} not found in the site directory",
                     "it is a symlink to a file that does not exist" if dangling else "") from None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise refuse("loop", f"{what} {shown} is a symlink loop", "fix or remove the symlink") from None
        if exc.errno == errno.ENOTDIR:
            raise refuse("missing", f"{what} {shown} not found in the site directory",
                         "a part of the path is a file, not a directory") from None
        raise refuse("unreadable", f"cannot read {what} {shown}: {exc.strerror}") from None
    if stat.S_ISLNK(st.st_mode):  # realpath stops at a link it cannot resolve: a loop
        raise refuse("loop", f"{what} {shown} is a symlink loop", "fix or remove the symlink")
    if not stat.S_ISREG(st.st_mode):
        kind = next((name for test, name in _KINDS if test(st.st_mode)), "not a regular file")
        raise refuse("not_regular", f"{what} {shown} is {kind}, not a regular file", "name a regular file")
    return Path(real), st, root


def _open_beneath(root: str, path: Path) -> int:
    """Open `path` (a resolved path under `root`) walking down from `root` without following symlinks."""
    parts = Path(path).relative_to(root).parts
    flags = os.O_RDONLY | os.O_CLOEXEC
    dir_fd = os.open(root, flags | os.O_DIRECTORY)
    try:
        for part in parts[:-1]:
            next_fd = os.open(part, flags | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=dir_fd)
            os.close(dir_fd)
            dir_fd = next_fd
        # O_NONBLOCK: a FIFO swapped in after the check must not block the build.
        return os.open(parts[-1], flags | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY, dir_fd=dir_fd)
    finally:
        os.close(dir_fd)


def _read_at_most(handle, limit: int) -> bytes:
    chunks, total = [], 0
    while total < limit:
        chunk = handle.read(min(1 << 20, limit - total))
        if not chunk:
            break
        chunks.append(chunk)
        total += len(chunk)
    return b"".join(chunks)


def _show(text: str) -> str:
    """The path as written, quoted, short, and never a pasted secret."""
    from .sshkeys import redact

    return redact(text, _SHOWN)
