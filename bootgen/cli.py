"""Command line: thin click commands over the library.

Each command parses options, calls one library function and maps errors to
exit codes: 0 success, 1 a problem with the input (all problems listed), 2 a
usage error (click's own).
"""
from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path

import click

from . import __version__
from .errors import BootgenError, format_problems

EXIT_USER_ERROR = 1
EXIT_INTERNAL = 3


def _paths(site: str, nodes: str, out: str):
    from .build import Paths

    return Paths(Path(site), Path(nodes), Path(out))


def _report(exc: BootgenError, fmt: str) -> None:
    click.echo(format_problems(exc.problems, fmt), err=fmt == "text")
    sys.exit(EXIT_USER_ERROR)


class _Command(click.Command):
    """Turn user errors into problem reports, and bugs into one line plus a hint."""

    def invoke(self, ctx):
        fmt = ctx.params.get("fmt", "text")
        try:
            return super().invoke(ctx)
        except BootgenError as exc:
            _report(exc, fmt)
        except KeyboardInterrupt:
            click.echo("interrupted; the previous tree is untouched", err=True)
            sys.exit(130)
        except Exception as exc:  # a bug: say so briefly, full traceback on request
            if os.environ.get("BOOTGEN_DEBUG"):
                raise
            from .secrets import redact_known

            message = redact_known(f"internal error: {type(exc).__name__}: {exc}")  # never a secret value
            if fmt == "json":  # tools reading stdout get JSON whatever happened
                click.echo(json.dumps({"internal_error": message}, sort_keys=True))
            click.echo(message + "\n  this is a bug in bootgen; rerun with BOOTGEN_DEBUG=1 for details and report it",
                       err=True)
            sys.exit(EXIT_INTERNAL)


def _use_secrets(ctx, param, value):
    """--secrets FILE: as BOOTGEN_SECRETS, which build workers and every later step then see."""
    if value:
        os.environ["BOOTGEN_SECRETS"] = os.path.abspath(value)


def _common(func):
    for decorator in reversed((
        click.option("--site", default="site", show_default=True, help="site directory (site.yaml, profiles/, templates/)"),
        click.option("--nodes", default="nodes", show_default=True, help="directory of per-machine YAML files"),
        click.option("--out", default="build", show_default=True, help="output link; trees live in .bootgen/builds/"),
        click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True,
                     help="how problems are printed (json for editors and CI)"),
        click.option("--secrets", expose_value=False, callback=_use_secrets, metavar="FILE",
                     help="secrets file for {secret: NAME} references (else $BOOTGEN_SECRETS)"),
    )):
        func = decorator(func)
    return func


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="bootgen")
def main() -> None:
    """Build network-boot trees (pxelinux, GRUB, iPXE, Ignition, cloud-init) from site/ and nodes/."""


@main.command(cls=_Command)
@_common
@click.option("--offline", is_flag=True, help="do not download images; use only what is cached")
def build(site, nodes, out, fmt, offline):
    """Build the tree and switch OUT to it atomically."""
    from .build import build as run_build

    result = run_build(_paths(site, nodes, out), fetch=not offline)
    click.echo(result.summary())
    from .secrets_tree import protection_line

    line = protection_line(Path(out))
    if line:
        click.echo(line)


@main.command(cls=_Command)
@_common
def check(site, nodes, out, fmt):
    """Validate site/ and nodes/ and render everything, writing nothing."""
    from .build import plan_build

    inputs, plan = plan_build(_paths(site, nodes, out), fetch=False)
    click.echo(f"ok: {len(inputs.nodes)} nodes, {len(inputs.profiles)} profiles, {len(plan.artifacts)} files")


@main.command(cls=_Command)
@_common
@click.argument("machine")
def explain(site, nodes, out, fmt, machine):
    """What MACHINE (a node name, a MAC in any spelling, or an IP) boots, and where each setting came from."""
    from .explain import explain as run_explain

    paths = _paths(site, nodes, out)
    result = run_explain(paths.site, paths.nodes, paths.state, machine)
    click.echo(json.dumps(result.as_dict(), indent=2, sort_keys=True) if fmt == "json" else result.text())


@main.command("list", cls=_Command)
@_common
@click.option("--profile", help="only machines with this profile")
@click.option("--boot", type=click.Choice(["install", "live", "local"]), help="only machines in this boot state")
def list_command(site, nodes, out, fmt, profile, boot):
    """One line per machine: name, MACs, addresses, profile, boot state, image set, OS config."""
    from .explain import list_machines, machines_table

    paths = _paths(site, nodes, out)
    machines = list_machines(paths.site, paths.nodes, profile=profile, boot=boot)
    if fmt == "json":
        click.echo(json.dumps({"machines": [m.as_dict() for m in machines]}, indent=2, sort_keys=True))
    else:
        click.echo(machines_table(machines))


@main.command(cls=_Command)
@click.argument("directory", type=click.Path(file_okay=False))
def init(directory):
    """Create DIRECTORY with an example site/ and nodes/ to start from."""
    from .scaffold import scaffold

    created = scaffold(Path(directory))
    click.echo(f"created {len(created)} files in {directory}; next: cd {directory} && bootgen build")


@main.command("hash-password", cls=_Command)
@click.option("--password", prompt=True, hide_input=True, confirmation_prompt=True,
              help="the password (prompted for when omitted)")
def hash_password(password):
    """Print a SHA-512 crypt hash for `password_hash` fields."""
    from .passwords import hash_password as make_hash

    click.echo(make_hash(password))


@main.command(cls=_Command)
@_common
def fetch(site, nodes, out, fmt):
    """Download and verify every mirrored image set into the cache."""
    from .build import fetch_images

    mirrored, referenced = fetch_images(_paths(site, nodes, out))
    click.echo(f"{mirrored} mirrored image sets verified and cached; "
               f"{referenced} referenced by URL (the firmware fetches those)")


@main.command(cls=_Command)
@click.argument("destination")
@click.option("--tree", default="build", show_default=True, help="the built tree to publish")
@click.option("--endpoint-url", help="S3-compatible server, e.g. http://minio.lan:9000")
@click.option("--dry-run", is_flag=True, help="list what would change; write nothing")
@click.option("--prune", is_flag=True, help="S3: delete objects no recent build refers to")
@click.option("--keep", default=3, show_default=True, help="published builds whose objects are kept")
@click.option("--jobs", default=8, show_default=True, help="parallel uploads")
@click.option("--allow-secrets", is_flag=True, help="S3: upload files that carry secrets too (see the policy printed)")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True,
              help="how problems are printed")
def publish(destination, tree, endpoint_url, dry_run, prune, keep, jobs, allow_secrets, fmt):
    """Publish the tree to DESTINATION: s3://bucket/prefix or a docroot such as /srv/bootgen."""
    from .publish import publish as run_publish
    from .secrets_tree import publish_notice

    report = run_publish(Path(tree), destination, endpoint_url=endpoint_url, dry_run=dry_run, prune=prune,
                         keep=keep, jobs=jobs, allow_secrets=allow_secrets)
    for action in report.actions if dry_run else ():
        click.echo(str(action))
    click.echo(report.summary())
    notice = publish_notice(Path(tree), destination, allow_secrets)
    if notice:
        click.echo(notice, err=True)


@main.command(cls=_Command)
@click.argument("source", default="build")
@click.option("--site", default="site", show_default=True, help="site directory (for the secrets file's checks)")
@click.option("--secrets", expose_value=False, callback=_use_secrets, metavar="FILE",
              help="secrets file whose values are looked for (else $BOOTGEN_SECRETS)")
@click.option("--endpoint-url", help="S3-compatible server, e.g. http://minio.lan:9000")
def audit(source, site, endpoint_url):
    """List what a stranger can read that is secret, in a tree, a docroot or s3://bucket/prefix;
    exit 1 if any of it is not fenced."""
    from .audit import audit_bucket, audit_tree, referenced_values, report

    values = referenced_values(Path(".bootgen"), Path(site))
    if source.startswith("s3://"):
        hits = audit_bucket(source, values, endpoint_url)
    else:
        hits = audit_tree(Path(source), values)
    click.echo(report(hits))
    if any(not hit.fenced for hit in hits):
        sys.exit(EXIT_USER_ERROR)


@main.command(cls=_Command)
@_common
@click.option("--poll", is_flag=True, help="poll for changes (network file systems, containers)")
@click.option("--offline", is_flag=True, help="do not download images; use only what is cached")
def watch(site, nodes, out, fmt, poll, offline):
    """Build, then rebuild on every change under the site and nodes directories."""
    from .watch import watch as run_watch

    click.echo(f"watching {site}/ and {nodes}/ (Ctrl-C to stop)")
    _until_interrupted(lambda: run_watch(_paths(site, nodes, out), _echo, poll=poll, fetch=not offline))


@main.command(cls=_Command)
@_common
@click.option("--bind", default="127.0.0.1", show_default=True, help="address to serve HTTP on")
@click.option("--port", default=8000, show_default=True, help="port to serve HTTP on")
@click.option("--poll", is_flag=True, help="poll for changes (network file systems, containers)")
@click.option("--offline", is_flag=True, help="do not download images; use only what is cached")
def serve(site, nodes, out, fmt, bind, port, poll, offline):
    """Watch and serve the tree over HTTP, like `mkdocs serve` for boot files."""
    from .watch import serve as run_serve

    _until_interrupted(lambda: run_serve(_paths(site, nodes, out), _echo, bind=bind, port=port, poll=poll,
                                         fetch=not offline))


def _echo(text: str) -> None:
    click.echo(text, err=text.endswith("last good tree"))


def _until_interrupted(run) -> None:
    def on_term(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)  # stop as cleanly as on Ctrl-C (state saved)
    try:
        run()
    except KeyboardInterrupt:
        click.echo("stopped")
