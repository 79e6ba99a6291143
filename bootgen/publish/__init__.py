"""`bootgen publish`: copy a built tree to an S3 bucket or a local docroot, atomically.

The tree is verified against its manifest first, so a corrupted tree is never
published. See `bootgen.publish.s3` and `bootgen.publish.docroot` for the order
of writes that keeps the served site consistent at every moment.
"""
from __future__ import annotations

import contextlib
import re
from dataclasses import replace
from pathlib import Path

from bootgen.errors import Location, Problem, PublishError
from bootgen.publish.docroot import publish_docroot, render_nginx_server
from bootgen.publish.lock import destination_lock
from bootgen.publish.manifest import load_full, load_tree, verify_tree
from bootgen.publish.progress import make_progress
from bootgen.publish.report import Action, PublishReport
from bootgen.write import pinned_tree

_URL_LIKE = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*:")  # a scheme, not a docroot path

__all__ = ["publish", "publish_output", "PublishReport", "Action", "render_nginx_server"]


def publish_output(paths, destination: str | None = None, *, release: str | None = None, tree: Path | None = None,
                   endpoint_url: str | None = None, **options) -> PublishReport:
    """`bootgen publish`: choose the tree and destination, check the tree may go out, publish it.

    `paths` is the output (its environment, if any, gives the destination and
    endpoint unless they are named). The tree is the output's live one,
    `tree`, or the kept release `release`; see bootgen.releases.check_publishable
    for what is refused."""
    from bootgen.releases import check_publishable, find_release

    if paths.env is not None:
        environment = _environment(paths)
        destination = destination or environment.publish
        endpoint_url = endpoint_url or environment.endpoint_url
    if not destination:
        where = f"environment {paths.env!r} in {paths.site}/site.yaml" if paths.env else "the command line"
        raise PublishError(Problem(Location(where), "no destination to publish to",
                                   hint="name one (s3://bucket/prefix or a docroot path)"
                                        + (f", or set `publish:` under environments.{paths.env}" if paths.env else "")))
    if release is not None:
        tree = paths.state / "builds" / find_release(paths, release).build_id
    tree = Path(tree) if tree is not None else paths.out
    check_publishable(tree, paths, env=paths.env, chosen=release is not None)
    return replace(publish(tree, destination, endpoint_url=endpoint_url, **options), tree=str(tree))


@contextlib.contextmanager
def _pinned(tree: Path):
    """For a tree kept under `.bootgen/builds/`, a pin that keeps builds from recycling or
    pruning it while it is read. Yields the tree's directory."""
    resolved = tree.resolve()
    with contextlib.ExitStack() as stack:
        if resolved.parent.name == "builds" and resolved.is_dir():
            if not stack.enter_context(pinned_tree(resolved)):
                raise PublishError(Problem(Location(str(tree)), "the tree was removed by a build as it was chosen",
                                           hint="run the publish again"))
        yield resolved


def _environment(paths):
    """The environment `paths.env` as site.yaml declares it (every problem of site.yaml raised first)."""
    from bootgen.load import Reader, load_site

    return load_site(paths.site, paths.nodes, Reader(Path.cwd()), env=paths.env).environments[paths.env]


def publish(tree: Path, destination: str, *, endpoint_url: str | None = None, dry_run: bool = False,
            prune: bool = False, keep: int = 3, jobs: int = 8, progress: bool | None = None,
            allow_secrets: bool = False) -> PublishReport:
    """Publish `tree` (output of `bootgen build`) to `s3://bucket/prefix` or a docroot path.

    `keep` is the number of published builds whose objects survive: for S3 it
    applies with `prune`, for a docroot the older releases are always removed.
    `progress=None` shows a bar only when stderr is a terminal.

    A tree with secret-bearing files is published from its full manifest, kept
    outside the tree, to a docroot (served by the fenced nginx config); to S3
    only with `allow_secrets` (a bucket cannot tell a node from a stranger
    unless its policy says so), else the public manifest's files alone.
    """
    if keep < 1:
        raise PublishError(Problem(Location(destination), f"keep must be at least 1, not {keep}"))
    if _URL_LIKE.match(destination) and not destination.startswith("s3://"):  # e.g. s3:/bucket, a typo
        raise PublishError(Problem(Location(destination), "unsupported destination scheme",
                                   hint="use s3://bucket/prefix or a directory path"))
    with _pinned(Path(tree)) as held:
        return _publish(held, destination, endpoint_url=endpoint_url, dry_run=dry_run, prune=prune, keep=keep,
                        jobs=jobs, progress=progress, allow_secrets=allow_secrets)


def _publish(tree: Path, destination: str, *, endpoint_url, dry_run, prune, keep, jobs, progress,
             allow_secrets) -> PublishReport:
    public = load_tree(tree)
    full = load_full(tree)
    s3 = destination.startswith("s3://")
    manifest, sums_dir = full if full is not None and (allow_secrets or not s3) else (public, None)
    verify_tree(tree, manifest, jobs=min(jobs, 4), sums_dir=sums_dir)
    with contextlib.nullcontext() if dry_run else destination_lock(destination, endpoint_url):
        return _write(tree, manifest, destination, public, full is not None, endpoint_url=endpoint_url,
                      dry_run=dry_run, prune=prune, keep=keep, jobs=jobs, progress=progress)


def _write(tree: Path, manifest, destination: str, public, private: bool, *, endpoint_url, dry_run, prune, keep,
           jobs, progress) -> PublishReport:
    """The writes, under the destination's lock (one publish there at a time)."""
    if destination.startswith("s3://"):
        from bootgen.publish.s3 import make_client, publish_s3, translate_errors  # lazy: boto3 is slow

        with translate_errors(destination):
            client = make_client(endpoint_url, jobs)
        return publish_s3(tree, manifest, destination, client, dry_run=dry_run, prune=prune, keep=keep,
                          jobs=jobs, progress=make_progress(progress), public=public)
    return publish_docroot(tree, manifest, Path(destination), dry_run=dry_run, keep=keep, private=private)
