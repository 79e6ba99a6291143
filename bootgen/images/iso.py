"""Take files out of an ISO image (an Ubuntu live-server's casper/vmlinuz and casper/initrd).

Extraction happens once per ISO digest: the files land in
`<cache>/extracted/<iso sha256[:16]>/` and later builds find them there
(resolve.py records what was made, and makes it again if it changed).
"""
from __future__ import annotations

import os
from pathlib import Path, PurePosixPath



class IsoError(Exception):
    """A file could not be taken out of an ISO; str() is the reason."""


def member_path(member: str) -> PurePosixPath:
    """Where `member` lands under the output directory (its directories kept: casper/initrd and
    boot/initrd must not collide). Raises IsoError for a path with '..'."""
    if ".." in PurePosixPath(member).parts:
        raise IsoError(f"member path {member!r} must not contain '..'")
    return PurePosixPath(member.lstrip("/"))


def extract_files(iso_path: Path, members: list[str], out_dir: Path, *, reuse: bool = True) -> dict[str, Path]:
    """Copy `members` (paths inside the ISO) into `out_dir`; return member -> file.

    Files already extracted are reused unless `reuse` is False. Each is
    written to a temporary name of this process, made read-only and renamed,
    so an interrupted extraction never leaves a short file behind.
    """
    wanted = {m: out_dir.joinpath(*member_path(m).parts) for m in members}
    missing = {m: p for m, p in wanted.items() if not (reuse and p.is_file())}
    if not missing:
        return wanted
    import pycdlib  # here: a build whose files are extracted already never loads it
    from pycdlib.pycdlibexception import PyCdlibException

    iso = pycdlib.PyCdlib()
    try:
        iso.open(str(iso_path))
    except (PyCdlibException, OSError) as exc:
        raise IsoError(f"not a readable ISO 9660 image: {exc}") from None
    try:
        for member, dest in missing.items():
            _extract_one(iso, member, dest)
    finally:
        iso.close()
    return wanted


def _extract_one(iso, member: str, dest: Path) -> None:
    from pycdlib.pycdlibexception import PyCdlibException

    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.tmp")
    for facet in _facets(iso, member):
        try:
            with open(tmp, "wb") as out:
                iso.get_file_from_iso_fp(out, **facet)
        except PyCdlibException:
            continue
        os.chmod(tmp, 0o444)
        os.replace(tmp, dest)
        return
    tmp.unlink(missing_ok=True)
    raise IsoError(f"{member} not found in the ISO")


def _facets(iso, member: str) -> list[dict]:
    """Ways to name `member`: Rock Ridge and Joliet keep real names; plain ISO 9660 upper-cases them."""
    path = "/" + member.lstrip("/")
    facets = []
    if iso.has_rock_ridge():
        facets.append({"rr_path": path})
    if iso.has_joliet():
        facets.append({"joliet_path": path})
    if iso.has_udf():
        facets.append({"udf_path": path})
    facets.append({"iso_path": _iso9660_name(path)})
    return facets


def _iso9660_name(path: str) -> str:
    """/casper/vmlinuz -> /CASPER/VMLINUZ.;1 (level-1 style name with version)."""
    parts = path.upper().split("/")
    last = parts[-1] if "." in parts[-1] else parts[-1] + "."
    return "/".join(parts[:-1] + [last + ";1"])
