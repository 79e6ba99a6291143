"""Turn declared image sets into verified files to place and references for boot configs.

Cache layout (under the project's `.bootgen/cache`):
    index.json                          digests by file identity, verified and derived records
    downloads/<sha256(url)[:16]>/<name> fetched images and their signatures (read-only)
    downloads/<sha256(url)[:16]>.lock   held while one process fetches or checks that entry
    extracted/<iso sha256[:16]>/<name>  kernel and initrds taken out of a verified ISO
    generated/<set>/version.txt         installer mirror version files

A download goes to `<name>.part` under the entry's lock; the bytes on disk are
then hashed and checked against the pins and the signature (gpg reads the
file itself), made read-only and renamed into place. A second process waits
for the lock and then checks what the first one published. The files this
module returns are copied into the tree and hashed again on the way (see
bootgen.write), so the tree never shares an inode with the cache and never
holds a byte other than the verified ones.

Every failure is collected as one line naming the image, its URL and the
reason; resolve_images raises once with all of them and returns nothing, so
the build writes no tree.
"""
from __future__ import annotations

import fcntl
import functools
import hashlib
import json
import os
import shutil
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Callable, Iterator
from urllib.parse import urlsplit

from ..confine import regular_file_identity
from ..errors import ImageError, Location, Problem
from .digests import DigestIndex, Digests, file_identity, hash_identified
from .fetch import Fetcher, FetchError, FetchPolicy, discard_partial
from .iso import IsoError, extract_files, member_path
from .mirror import installer_files, mirror_base
from .model import ImageConfig, ImageSet, ImageSource
from .placed import ImageRef, PlacedFile, ResolvedImageSet, image_tree_path
from .progress import progress_factory
from .verify import MAX_SIGNATURE, Keyring

LOCK_POLL = 0.05  # seconds between tries of a cache entry's lock


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
    policy: FetchPolicy

    @functools.cached_property
    def fetcher(self) -> Fetcher:
        """Made when first needed: a build with every image cached never sets up HTTP."""
        return self.make_fetcher()


def resolve_images(config: ImageConfig, *, site_dir: Path, cache_dir: Path, needed: set[str], fetch: bool = True,
                   progress: bool | None = None, policy: FetchPolicy | None = None) -> dict[str, ResolvedImageSet]:
    """Fetch (when `fetch`), verify and describe the image sets in `needed`.

    Mirrored sets are downloaded into `cache_dir` when missing, checked against
    their pins and signatures, and returned with the files to place. Sets that
    are not mirrored only carry their URLs. Raises ImageError with one line per
    failed image; on failure nothing is returned. `policy` defaults to
    FetchPolicy.from_env() (BOOTGEN_FETCH_DEADLINE, BOOTGEN_MAX_IMAGE_SIZE).
    """
    unknown = sorted(set(needed) - set(config.images))
    if unknown:
        raise ImageError(f"unknown image set(s): {', '.join(unknown)}")
    if policy is None:
        try:
            policy = FetchPolicy.from_env()
        except FetchError as exc:
            raise ImageError([Problem(Location("environment"), str(exc))]) from None
    index = DigestIndex(cache_dir)
    problems: list[Problem] = []
    results: dict[str, ResolvedImageSet] = {}
    with Keyring(config.keys) as keyring:
        ctx = _Context(site_dir, cache_dir, index, keyring,
                       lambda: Fetcher(policy, progress_factory(progress, policy.stall_after)), fetch, policy)
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
        if source.absent is not None:
            problems.append(source.absent)
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
    firmware = [attempt(s, lambda s: _image(ctx, s, files)) for s in image_set.firmware]
    if len(problems) > before:
        return None
    if iso is not None:
        iso, extracted_kernel, extracted_initrds = iso
        kernel = kernel or extracted_kernel
        initrds = initrds + list(extracted_initrds)
    return ResolvedImageSet(image_set.name, kernel, tuple(initrds), iso, installer_base, image_set.version,
                            tuple(sorted(set(files), key=lambda f: f.tree_path)), tuple(firmware))


def declared_images(config: ImageConfig, needed: set[str]) -> dict[str, ResolvedImageSet]:
    """The image sets in `needed` as their declarations describe them, reading no image byte and
    making no connection (for `bootgen check`: bytes are checked by `fetch` and `build`).

    A mirrored image gets a tree path under its pinned sha256, or `unverified` without a pin, so
    boot configs render exactly as they will; the files themselves are not placed."""
    unknown = sorted(set(needed) - set(config.images))
    if unknown:
        raise ImageError(f"unknown image set(s): {', '.join(unknown)}")
    return {name: _declared(config.images[name]) for name in sorted(needed)}


def _declared(image_set: ImageSet) -> ResolvedImageSet:
    if not image_set.mirror:
        return _referenced(image_set)

    def ref(source: ImageSource | None, name: str | None = None) -> ImageRef | None:
        if source is None:
            return None
        return ImageRef(name or source.name, image_tree_path(source.sha256 or "unverified", name or source.name), None)

    extract = image_set.extract
    kernel = ref(image_set.kernel)
    initrds = tuple(ref(s) for s in image_set.initrds)
    if extract is not None and image_set.iso is not None:
        kernel = kernel or (ref(image_set.iso, Path(extract.kernel).name) if extract.kernel else None)
        initrds += tuple(ref(image_set.iso, Path(m).name) for m in extract.initrds)
    installer = mirror_base(image_set.name) if image_set.installer is not None else None
    return ResolvedImageSet(image_set.name, kernel, initrds, ref(image_set.iso), installer, image_set.version, (),
                            tuple(ref(s) for s in image_set.firmware))


def _referenced(image_set: ImageSet) -> ResolvedImageSet:
    """A set served by its upstream: boot configs point at the URLs."""
    def ref(source: ImageSource | None) -> ImageRef | None:
        return None if source is None else ImageRef(source.name, None, source.url)
    return ResolvedImageSet(image_set.name, ref(image_set.kernel), tuple(ref(s) for s in image_set.initrds),
                            ref(image_set.iso), None, image_set.version, (),
                            tuple(ref(s) for s in image_set.firmware))


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
    paths = _extracted(ctx, local, members)
    refs = {m: _place(_Local(p, ctx.index.digests(p)), p.name, files) for m, p in paths.items()}
    kernel = refs[extract.kernel] if extract.kernel else None
    return iso_ref, kernel, tuple(refs[m] for m in extract.initrds)


def _extracted(ctx: _Context, iso: _Local, members: list[str]) -> dict[str, Path]:
    """Files taken out of the verified ISO, reused only while they are the very files made from it."""
    sha256 = iso.digests.sha256
    out_dir = ctx.cache_dir / "extracted" / sha256[:16]
    try:
        wanted = {m: out_dir / member_path(m) for m in members}
    except IsoError as exc:
        raise _Failed(f"cannot extract from ISO: {exc}") from None
    def key(member: str) -> str:
        return f"{sha256}/{member}"

    if all(ctx.index.derived_ok(key(m), p) for m, p in wanted.items()):
        return wanted
    with _entry_lock(ctx, out_dir):
        stale = [m for m, p in wanted.items() if not ctx.index.derived_ok(key(m), p)]
        if not stale:
            return wanted
        try:
            extract_files(iso.path, stale, out_dir, reuse=False)
            if ctx.index.digests(iso.path).sha256 != sha256:
                raise _Failed("the ISO in the cache changed while files were taken out of it")
            for member in stale:
                digests, identity = hash_identified(wanted[member])
                ctx.index.remember(wanted[member], digests, identity)
                ctx.index.set_derived(key(member), wanted[member], identity)
        except (IsoError, OSError) as exc:
            raise _Failed(f"cannot extract from ISO: {exc}") from None
    return wanted


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
    if source.file is not None:
        return _verified_site_file(ctx, source)
    path = _download_path(ctx, source.url or "")
    with _entry_lock(ctx, path.parent):
        return _verified_download(ctx, source, path)


def _already_verified(ctx: _Context, source: ImageSource) -> _Local | None:
    """The cached file when it and its signature are unchanged since they passed.

    File identities come from stat() and the digest index, so this reads no
    image bytes and runs no gpg: a no-op build stays cheap. A cache file that
    another name shares (a tree made by an older bootgen hard-linked it) is
    never trusted here; it is made private first, under the entry's lock.
    """
    path = source.file if source.file is not None else _download_path(ctx, source.url or "")
    sig_path = _signature_path(ctx, source) if source.signature is not None else None
    if not _regular(path) or (sig_path is not None and not _regular(sig_path)):
        return None
    try:
        if source.file is None and os.stat(path).st_nlink != 1:
            return None
        local = _Local(path, ctx.index.digests(path, sha512=bool(source.sha512)))
        return local if ctx.index.verified.get(source.origin) == _record(ctx, source, local, sig_path) else None
    except OSError:
        return None  # looked at again, with the reason, by _verified


def _verified_site_file(ctx: _Context, source: ImageSource) -> _Local:
    """A file of the site, checked against its pins and signature (site files are never deleted)."""
    sig_path = Path(source.signature) if source.signature is not None else None
    if sig_path is not None and not _regular(sig_path):
        raise _Failed(f"signature file {sig_path} is no longer a regular file in the site directory")
    if not _regular(source.file):
        raise _Failed("is no longer a regular file in the site directory")
    try:
        local = _Local(source.file, ctx.index.digests(source.file, sha512=bool(source.sha512)))
        record = _record(ctx, source, local, sig_path)
    except OSError as exc:
        raise _Failed(f"cannot read: {exc.strerror}") from None
    if ctx.index.verified.get(source.origin) != record:
        try:
            _check(ctx, source, local, sig_path)
        except _Failed:
            ctx.index.forget_verified(source.origin)
            raise
        ctx.index.set_verified(source.origin, record)
    return local


def _verified_download(ctx: _Context, source: ImageSource, path: Path) -> _Local:
    """Under the entry's lock: the cached file checked, or a fresh download checked and published.

    A cached file whose bytes fail (changed in the cache since it was
    fetched, or a stale pair with its signature) is removed and, when
    fetching is allowed, fetched again in the same run."""
    sig_path = _signature_path(ctx, source) if source.signature is not None else None
    if _regular(path):
        try:
            return _checked_cached(ctx, source, path, sig_path)
        except _Failed as exc:
            if not (exc.bad_bytes and ctx.fetch):
                raise _Failed(f"{exc} (the cached copy was removed; `bootgen fetch` gets it again)",
                              bad_bytes=True) if exc.bad_bytes else exc from None
    elif not ctx.fetch:
        raise _Failed("not in the cache; run `bootgen fetch` first")
    return _fetched_checked(ctx, source, path, sig_path)


def _checked_cached(ctx: _Context, source: ImageSource, path: Path, sig_path: Path | None) -> _Local:
    try:
        _make_private(path)
        if sig_path is not None and not _regular(sig_path):
            if not ctx.fetch:
                raise _Failed("signature not in the cache; run `bootgen fetch` first")
            _download_signature(ctx, source, sig_path)
        local = _Local(path, ctx.index.digests(path, sha512=bool(source.sha512)))
        record = _record(ctx, source, local, sig_path)
    except FetchError as exc:
        raise _Failed(str(exc)) from None
    except OSError as exc:
        raise _Failed(f"cannot use the cache: {exc.strerror or exc}") from None
    if ctx.index.verified.get(source.origin) != record:
        try:
            _check(ctx, source, local, sig_path)
        except _Failed as exc:
            _discard(ctx, source, path, exc.bad_bytes)
            raise
        ctx.index.set_verified(source.origin, record)
    return local


def _fetched_checked(ctx: _Context, source: ImageSource, path: Path, sig_path: Path | None) -> _Local:
    """Download into `<name>.part`, check the bytes on disk, publish by rename.

    A fresh download always comes with a freshly fetched signature: a
    signature cached beside an earlier file says nothing about a new one."""
    part = path.with_name(path.name + ".part")
    try:
        if sig_path is not None:
            _download_signature(ctx, source, sig_path)
        ctx.fetcher.download(source.url or "", part, size=source.size)
        os.chmod(part, 0o444)
        digests, identity = hash_identified(part, sha512=bool(source.sha512))  # the bytes on disk
        local = _Local(part, digests)
        record = _record(ctx, source, local, sig_path)
    except FetchError as exc:
        raise _Failed(str(exc)) from None
    except OSError as exc:
        raise _Failed(f"cannot use the cache: {exc.strerror or exc}") from None
    try:
        _check(ctx, source, local, sig_path)
    except _Failed as exc:
        _discard(ctx, source, part, exc.bad_bytes)
        if not exc.bad_bytes:
            _publish(ctx, part, path, digests, identity)  # fine bytes, wrong site keys: fixing site.yaml costs no download
        raise
    try:
        _publish(ctx, part, path, digests, identity)
    except OSError as exc:
        discard_partial(part)
        raise _Failed(f"cannot use the cache: {exc.strerror or exc}") from None
    ctx.index.set_verified(source.origin, record)
    return _Local(path, digests)


def _publish(ctx: _Context, part: Path, path: Path, digests: Digests, identity: str) -> None:
    """Rename the checked partial file into place and remember its digests under its new identity.

    The rename changes only the file's ctime: the other fields must be those
    it had when it was hashed, or something wrote to it since."""
    os.replace(part, path)
    discard_partial(part)  # its resume record
    now = file_identity(path)
    if now.split(":")[:4] != identity.split(":")[:4]:
        path.unlink(missing_ok=True)
        raise _Failed("the downloaded file changed after it was checked")
    ctx.index.remember(path, digests, now)


def _make_private(path: Path) -> None:
    """Give a cache file that shares its inode with another name (a tree made by an older
    bootgen hard-linked it) an inode of its own, so a write through that other name can
    never change what the cache holds, nor the reverse."""
    if os.stat(path).st_nlink == 1:
        return
    tmp = path.with_name(f".{path.name}.private-{os.getpid()}")
    shutil.copyfile(path, tmp)
    os.chmod(tmp, 0o444)
    os.replace(tmp, path)


def _download_signature(ctx: _Context, source: ImageSource, sig_path: Path) -> None:
    part = sig_path.with_name(sig_path.name + ".part")
    try:
        ctx.fetcher.download(source.signature or "", part, limit=MAX_SIGNATURE)
    except FetchError as exc:
        raise _Failed(f"signature {source.signature}: {exc}") from None
    os.chmod(part, 0o444)
    os.replace(part, sig_path)
    discard_partial(part)


@contextmanager
def _entry_lock(ctx: _Context, directory: Path) -> Iterator[None]:
    """One process at a time works on a cache entry (a URL's directory, an ISO's extraction).

    Another process waits for it, at most as long as the holder may take
    for a download (its deadline), then says which entry is held."""
    directory.mkdir(parents=True, exist_ok=True)
    lock_path = directory.with_name(directory.name + ".lock")
    give_up = time.monotonic() + 2 * ctx.policy.deadline + 60  # its signature, then the file
    with open(lock_path, "a") as handle:
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > give_up:
                    raise _Failed(f"another process has held {lock_path} for longer than the "
                                  f"{ctx.policy.deadline:g} s deadline") from None
                time.sleep(LOCK_POLL)
        yield


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


def _discard(ctx: _Context, source: ImageSource, path: Path, bad_bytes: bool) -> None:
    """Forget a failed image; drop fetched files that are wrong so the next run fetches them afresh."""
    ctx.index.forget_verified(source.origin)
    if bad_bytes:
        discard_partial(path) if path.name.endswith(".part") else path.unlink(missing_ok=True)
    if source.signature is not None:
        _signature_path(ctx, source).unlink(missing_ok=True)


def _check_keys_usable(ctx: _Context, source: ImageSource) -> None:
    """Fail before downloading GBs when no allowed key can be trusted anyway."""
    if source.signature is None:
        return
    for name in source.keys:
        if name in ctx.keyring.rejected:
            raise _Failed(f"cannot verify: key {name} unusable: {ctx.keyring.rejected[name]}")


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
    key_files = sorted(ctx.keyring.key_digest(name) for name in source.keys)  # a key file replaced: check again
    sig_sha256 = ctx.index.digests(sig_path).sha256 if sig_path is not None else None
    data = {"signature": source.signature, "signature_sha256": sig_sha256, "keys": fingerprints, "key_files": key_files,
            "sha256": source.sha256, "sha512": source.sha512, "unsigned": source.unsigned}
    return json.dumps(data, sort_keys=True)


def _check(ctx: _Context, source: ImageSource, local: _Local, sig_path: Path | None) -> None:
    """Size and pins first (cheap once digests are known), then the signature."""
    if source.size is not None and local.digests.size != source.size:
        raise _Failed(f"is {local.digests.size} bytes but `size:` declares {source.size}", bad_bytes=True)
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
