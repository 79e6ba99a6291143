"""`bootgen publish`: copy a built tree to an S3 bucket or a local docroot, atomically.

The order of writes that keeps the served site consistent at every moment is
`bootgen.publish.protocol`; each kind of destination is a `Store` in
`bootgen.publish.stores`.
"""
from __future__ import annotations

import contextlib
from dataclasses import replace
from pathlib import Path

from bootgen.errors import Location, Problem, PublishError
from bootgen.plan import PRIVATE
from bootgen.publish.index import Index, shard_finder
from bootgen.publish.lock import destination_lock
from bootgen.publish.progress import Progress, make_progress
from bootgen.publish.protocol import Options, Store, publish_listing
from bootgen.publish.report import Action, PublishReport
from bootgen.publish.stores import open_store, store_module
from bootgen.publish.stores.docroot import render_nginx_server
from bootgen.write import pinned_tree

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

    `keep` is the number of published builds whose files survive: for a bucket
    it applies with `prune`, for a docroot the older releases are always removed.
    `progress=None` shows a bar only when stderr is a terminal.

    A tree with secret-bearing files is published from its full listing, kept
    outside the tree, to a docroot (served by the fenced nginx config); to a
    bucket only with `allow_secrets` (a bucket cannot tell a node from a stranger
    unless its policy says so), else the public listing's files alone.
    """
    if keep < 1:
        raise PublishError(Problem(Location(destination), f"keep must be at least 1, not {keep}"))
    store_module(destination)  # an unknown scheme is refused before anything is read
    with _pinned(Path(tree)) as held, open_store(destination, endpoint_url=endpoint_url, jobs=jobs, tree=held) as store:
        with contextlib.nullcontext() if dry_run else destination_lock(destination, endpoint_url):
            return publish_with_store(store, held, dry_run=dry_run, prune=prune, keep=keep, jobs=jobs,
                                      progress=make_progress(progress), allow_secrets=allow_secrets)


def publish_with_store(store: Store, tree: Path, *, allow_secrets: bool = False, dry_run: bool = False,
                       prune: bool = False, keep: int = 3, jobs: int = 8, progress: Progress | None = None) -> PublishReport:
    """Publish `tree` to an open store (the caller holds the destination's lock)."""
    from bootgen.plan import listing_dir

    public = Index.local(tree)
    full = listing_dir(tree)
    send_full = full not in (tree, tree.resolve()) and (allow_secrets or store.fences_secrets)
    listing = Index.local(full, private=True) if send_full else public
    options = Options(dry_run=dry_run, prune=prune, keep=keep, jobs=max(1, jobs), progress=progress or make_progress(False))
    return publish_listing(store, tree, listing, public, options, shard_finder(_index_dirs(tree, full)))


def _index_dirs(tree: Path, full: Path) -> list[Path]:
    """Where shards of builds published earlier may be on this machine: this tree, its full
    listing, and, for a tree kept under `.bootgen/builds/`, the other kept trees and listings."""
    dirs = [tree, full]
    if tree.parent.name == "builds":
        state = tree.parent.parent
        for kept in (tree.parent, state / PRIVATE):
            with contextlib.suppress(OSError):
                dirs += sorted(p for p in kept.iterdir() if p.is_dir() and not p.name.startswith(".") and p != tree)
    return dirs
