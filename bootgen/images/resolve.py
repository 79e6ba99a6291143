"""Turn declared image sets into verified files to place and references for boot configs.

Cache layout (under the project's `.bootgen/cache`):
    index.json                          digests by file identity, verified records
    downloads/<sha256(url)[:16]>/<name> fetched images and their signatures
    extracted/<iso sha256[:16]>/<name>  kernel and initrds taken out of an ISO
    generated/<set>/version.txt         installer mirror version files

Every failure is collected as one line naming the image, its URL and the
reason; resolve_images raises once with all of them and returns nothing, so
the build writes no tree.
"""
from __future__ import annotations

import functools
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Callable
from urllib.parse import urlsplit

from ..confine import regular_file_identity
from ..errors import ImageError, Problem
from .digests import DigestIndex, Digests
from .fetch import Fetcher, FetchError, FetchPolicy
from .iso import IsoError, extract_files
from .mirror import installer_files, mirror_base
from .model import ImageConfig, ImageSet, ImageSource
from .placed import ImageRef, PlacedFile, ResolvedImageSet, image_tree_path
from .progress import progress_factory
from .verify import Keyring


class _Failed(Exception):
    """One image failed; str() is the reason.

    `bad_bytes` says the file itself is shown wrong (pin mismatch, signature
    not matching the data): it is deleted so the next run fetches it again.
    Failures about keys keep the file, so fixing site.yaml costs no download.
    """

    def __init__(self, reason: str, *, bad_bytes: bool = False):
        super().__init__(reason)
        self.bad_bytes = bad_bytes


@dataclass(frozen=True)
class _Local:
    """A fetched (or site) file with its digests."""

    path: Path
    digests: Digests


@dataclass
class _Context:
    site_dir: Path
    cache_dir: Path
    index: DigestIndex
    keyring: Keyring
    make_fetcher: Callable[[], Fetcher]
    fetch: bool

    @functools.cached_property
    def fetcher(self) -> Fetcher:
        """Made when first needed: a build with every image cached never sets up HTTP."""
        return self.make_fetcher()


def resolve_images(config: ImageConfig, *, site_dir: Path, cache_dir: Path, needed: set[str], fetch: bool = True,
                   progress: bool | None = None, policy: FetchPolicy = FetchPolicy()) -> dict[str, ResolvedImageSet]:
    """Fetch (when `fetch`), verify and describe the image sets in `needed`.

    Mirrored sets are downloaded into `cache_dir` when missing, checked against
    their pins and signatures, and returned with the files to place. Sets that
    are not mirrored only carry their URLs. Raises ImageError with one line per
    failed image; on failure nothing is returned.
    """
    unknown = sorted(set(needed) - set(config.images))
    if unknown:
        raise ImageError(f"unknown image set(s): {', '.join(unknown)}")
    index = DigestIndex(cache_dir)
    problems: list[Problem] = []
    results: dict[str, ResolvedImageSet] = {}
    with Keyring(config.keys) as keyring:
        ctx = _Context(site_dir, cache_dir, index, keyring, lambda: Fetcher(policy, progress_factory(progress)), fetch)
        for name in sorted(needed):
            resolved = _resolve_set(ctx, config.images[name], problems)
            if resolved is not None:
                results[name] = resolved
    index.save()  # digests of what did download stay useful even when something failed
    if problems:
        raise ImageError(problems)
    return results


def _resolve_set(ctx: _Context, image_set: ImageSet, problems: list[Problem]) -> ResolvedImageSet | None:
    if not image_set.mirror:
        return _referenced(image_set)
    files: list[PlacedFile] = []
    before = len(problems)

    def attempt(source: ImageSource | None, action):
        if source is None:
            return None
        try:
            return action(source)
        except _Failed as exc:
            problems.append(Problem(source.location, f"{source.origin}: {exc}", source.role))
            return None

    kernel = attempt(image_set.kernel, lambda s: _image(ctx, s, files))
    initrds = [attempt(s, lambda s: _image(ctx, s, files)) for s in image_set.initrds]
    iso = attempt(image_set.iso, lambda s: _iso(ctx, image_set, s, files))
    installer_base = attempt(image_set.installer, lambda s: _installer(ctx, image_set, s, files))
    if len(problems) > before:
        return None
    if iso is not None:
        iso, extracted_kernel, extracted_initrds = iso
        kernel = kernel or extracted_kernel
        initrds = initrds + list(extracted_initrds)
    return ResolvedImageSet(image_set.name, kernel, tuple(initrds), iso, installer_base, image_set.version,
                            tuple(sorted(set(files), key=lambda f: f.tree_path)))


def _referenced(image_set: ImageSet) -> ResolvedImageSet:
    """A set served by its upstream: boot configs point at the URLs."""
    def ref(source: ImageSource | None) -> ImageRef | None:
        return None if source is None else ImageRef(source.name, None, source.url)
    return ResolvedImageSet(image_set.name, ref(image_set.kernel), tuple(ref(s) for s in image_set.initrds),
                            ref(image_set.iso), None, image_set.version, ())


def _image(ctx: _Context, source: ImageSource, files: list[PlacedFile]) -> ImageRef:
    local = _verified(ctx, source)
    return _place(local, source.name, files)


def _place(local: _Local, name: str, files: list[PlacedFile]) -> ImageRef:
    tree_path = image_tree_path(local.digests.sha256, name)
    files.append(PlacedFile(tree_path, local.path, local.digests.sha256, local.digests.size, True, "image"))
    return ImageRef(name, tree_path, None)


def _iso(ctx: _Context, image_set: ImageSet, source: ImageSource, files: list[PlacedFile]):
    """Serve the ISO and, when asked, the kernel and initrds inside it."""
    local = _verified(ctx, source)
    iso_ref = _place(local, source.name, files)
    extract = image_set.extract
    if extract is None:
        return iso_ref, None, ()
    members = ([extract.kernel] if extract.kernel else []) + list(extract.initrds)
    out_dir = ctx.cache_dir / "extracted" / local.digests.sha256[:16]
    try:
        paths = extract_files(local.path, members, out_dir)
    except (IsoError, OSError) as exc:
        raise _Failed(f"cannot extract from ISO: {exc}") from None
    refs = {m: _place(_Local(p, ctx.index.digests(p)), p.name, files) for m, p in paths.items()}
    kernel = refs[extract.kernel] if extract.kernel else None
    return iso_ref, kernel, tuple(refs[m] for m in extract.initrds)


def _installer(ctx: _Context, image_set: ImageSet, source: ImageSource, files: list[PlacedFile]) -> str:
    """Lay out the installer mirror; return its base tree path."""
    local = _verified(ctx, source)
    signature = _signature_path(ctx, source) if source.signature is not None else None
    files.extend(installer_files(image_set.name, image_set.version or "", source.name, local.path, signature,
                                 ctx.cache_dir / "generated", ctx.index))
    return mirror_base(image_set.name)


def _verified(ctx: _Context, source: ImageSource) -> _Local:
    """The image's local file, fetched if needed, checked against pins and signature.

    Its verified record is dropped when it fails (see _discard for the files).
    """
    known = _already_verified(ctx, source)
    if known is not None:
        return known
    _check_keys_usable(ctx, source)
    # The small signature first: a missing one should not cost an image download.
    sig_path = _fetch_signature(ctx, source) if source.signature is not None else None
    local = _obtain(ctx, source)
    try:
        record = _record(ctx, source, local, sig_path)
        if ctx.index.verified.get(source.origin) == record:
            return local  # verified before under the same rules
        _check(ctx, source, local, sig_path)
    except _Failed as exc:
        _discard(ctx, source, local, exc.bad_bytes)
        raise
    ctx.index.verified[source.origin] = record
    return local


def _already_verified(ctx: _Context, source: ImageSource) -> _Local | None:
    """The cached file when it and its signature are unchanged since they passed.

    File identities come from stat() and the digest index, so this reads no
    image bytes and runs no gpg: a no-op build stays cheap.
    """
    path = source.file if source.file is not None else _download_path(ctx, source.url or "")
    sig_path = _signature_path(ctx, source) if source.signature is not None else None
    if not _regular(path) or (sig_path is not None and not _regular(sig_path)):
        return None
    try:
        local = _Local(path, ctx.index.digests(path, sha512=bool(source.sha512)))
        return local if ctx.index.verified.get(source.origin) == _record(ctx, source, local, sig_path) else None
    except OSError:
        return None  # looked at again, with the reason, by _obtain


def _regular(path: Path) -> bool:
    """A regular file itself, not a symlink, FIFO or device (stat only: nothing is opened).

    Site files were checked by the site gate when site.yaml was loaded and
    are resolved paths; this notices one replaced since."""
    try:
        regular_file_identity(path)
        return True
    except OSError:
        return False


def _record(ctx: _Context, source: ImageSource, local: _Local, sig_path: Path | None) -> dict:
    """What a verified record must equal for the image to count as verified."""
    return {"sha256": local.digests.sha256, "policy": _policy(ctx, source, sig_path)}


def _discard(ctx: _Context, source: ImageSource, local: _Local, bad_bytes: bool) -> None:
    """Forget a failed image; drop fetched files that are wrong so the next run fetches them afresh."""
    ctx.index.forget_verified(source.origin)
    if source.url is None:
        return  # never delete the user's site files
    if bad_bytes:
        local.path.unlink(missing_ok=True)
    if source.signature is not None:
        _signature_path(ctx, source).unlink(missing_ok=True)


def _check_keys_usable(ctx: _Context, source: ImageSource) -> None:
    """Fail before downloading GBs when no allowed key can be trusted anyway."""
    if source.signature is None:
        return
    for name in source.keys:
        if name in ctx.keyring.rejected:
            raise _Failed(f"cannot verify: key {name} unusable: {ctx.keyring.rejected[name]}")


def _obtain(ctx: _Context, source: ImageSource) -> _Local:
    if source.file is not None:
        if not _regular(source.file):
            raise _Failed("is no longer a regular file in the site directory")
        try:
            return _Local(source.file, ctx.index.digests(source.file, sha512=bool(source.sha512)))
        except OSError as exc:
            raise _Failed(f"cannot read: {exc.strerror}") from None
    path = _download_path(ctx, source.url or "")
    if path.is_file():
        return _Local(path, ctx.index.digests(path, sha512=bool(source.sha512)))
    if not ctx.fetch:
        raise _Failed("not in the cache; run `bootgen fetch` first")
    return _Local(path, _download(ctx, source.url or "", path))


def _download(ctx: _Context, url: str, path: Path) -> Digests:
    try:
        digests = ctx.fetcher.fetch(url, path)
    except FetchError as exc:
        raise _Failed(str(exc)) from None
    except OSError as exc:
        raise _Failed(f"cannot write to the cache: {exc.strerror}") from None
    ctx.index.remember(path, digests)
    return digests


def _download_path(ctx: _Context, url: str) -> Path:
    """One directory per URL keeps the original file name without collisions."""
    key = hashlib.sha256(url.encode("utf-8")).hexdigest()[:16]
    name = PurePosixPath(urlsplit(url).path).name or "download"
    return ctx.cache_dir / "downloads" / key / name


def _signature_path(ctx: _Context, source: ImageSource) -> Path:
    """The detached signature on disk, fetched beside the image when it is a URL."""
    if source.file is not None:
        return Path(source.signature or "")
    return _download_path(ctx, source.url or "").with_name(source.name + ".sig")


def _policy(ctx: _Context, source: ImageSource, sig_path: Path | None) -> str:
    """Everything a verification depends on besides the image bytes."""
    fingerprints = sorted(ctx.keyring.fingerprint(name) for name in source.keys)
    sig_sha256 = ctx.index.digests(sig_path).sha256 if sig_path is not None else None
    data = {"signature": source.signature, "signature_sha256": sig_sha256, "keys": fingerprints,
            "sha256": source.sha256, "sha512": source.sha512, "unsigned": source.unsigned}
    return json.dumps(data, sort_keys=True)


def _check(ctx: _Context, source: ImageSource, local: _Local, sig_path: Path | None) -> None:
    """Pins first (cheap once digests are known), then the signature."""
    if source.sha256 and local.digests.sha256 != source.sha256:
        raise _Failed(f"sha256 mismatch: got {local.digests.sha256}, pinned {source.sha256}", bad_bytes=True)
    if source.sha512:
        sha512 = local.digests.sha512 or ctx.index.digests(local.path, sha512=True).sha512
        if sha512 != source.sha512:
            raise _Failed(f"sha512 mismatch: got {sha512}, pinned {source.sha512}", bad_bytes=True)
    if sig_path is None:
        return  # the model guarantees `unsigned: true` here
    verdict = ctx.keyring.check(local.path, sig_path, source.keys)
    if not verdict.ok:
        raise _Failed(verdict.reason, bad_bytes=verdict.bad_data)


def _fetch_signature(ctx: _Context, source: ImageSource) -> Path:
    sig_path = _signature_path(ctx, source)
    if _regular(sig_path):
        return sig_path
    if source.file is not None:
        raise _Failed(f"signature file {sig_path} is no longer a regular file in the site directory")
    if not ctx.fetch:
        raise _Failed("signature not in the cache; run `bootgen fetch` first")
    try:
        ctx.index.remember(sig_path, ctx.fetcher.fetch(source.signature or "", sig_path))
    except FetchError as exc:
        raise _Failed(f"signature {source.signature}: {exc}") from None
    return sig_path
