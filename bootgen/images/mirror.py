"""Installer mirror layout for `flatcar-install -b` and `coreos-install -b`.

Both scripts fetch `<base>/<version>/<image>` and `<base>/<version>/<image>.sig`.
flatcar-install, when asked for version `current`, first reads
`<base>/current/version.txt` and takes the line `FLATCAR_VERSION=<version>`;
coreos-install has no such lookup and fetches `<base>/current/<image>` directly,
so the image is served under both the version and `current`.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

from .digests import DigestIndex
from .placed import PlacedFile

MIRROR_ROOT = "mirror"


def mirror_base(set_name: str) -> str:
    """Tree path to pass as `-b <http base>/<this>`."""
    return f"{MIRROR_ROOT}/{set_name}"


def version_txt(image_name: str, version: str) -> str:
    """version.txt like the release servers publish, with the prefix the installer reads."""
    prefix = "COREOS" if image_name.startswith("coreos_") else "FLATCAR"
    lines = [f"{prefix}_VERSION={version}", f"{prefix}_VERSION_ID={version}"]
    match = re.fullmatch(r"(\d+)\.(\d+)\.(\d+)", version)
    if match:
        build, branch, patch = match.groups()
        lines[:0] = [f"{prefix}_BUILD={build}", f"{prefix}_BRANCH={branch}", f"{prefix}_PATCH={patch}"]
    return "\n".join(lines) + "\n"


def installer_files(set_name: str, version: str, name: str, image: Path, signature: Path | None,
                    generated_dir: Path, index: DigestIndex) -> tuple[PlacedFile, ...]:
    """Place the installer image `name` (and its .sig) under <version>/ and current/, plus current/version.txt."""
    base = mirror_base(set_name)
    text_file = _write_if_changed(generated_dir / set_name / "version.txt", version_txt(name, version))
    files = [_mirrored(index, text_file, f"{base}/current/version.txt")]
    for directory in (version, "current"):
        files.append(_mirrored(index, image, f"{base}/{directory}/{name}"))
        if signature is not None:
            files.append(_mirrored(index, signature, f"{base}/{directory}/{name}.sig"))
    return tuple(files)


def _mirrored(index: DigestIndex, source: Path, tree_path: str) -> PlacedFile:
    digests = index.digests(source)  # from the index: the image was digested when fetched
    # Not immutable: version directories are names, not digests, and a site may re-declare a version.
    return PlacedFile(tree_path, source, digests.sha256, digests.size, False, "mirror")


def _write_if_changed(path: Path, text: str) -> Path:
    """Keep the file (and its inode and mtime) when the content is the same, so its digest stays cached."""
    data = text.encode("utf-8")
    try:
        if path.read_bytes() == data:
            return path
    except OSError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.chmod(tmp, 0o444)
    os.replace(tmp, path)
    return path
