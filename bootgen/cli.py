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


def output_paths(site: str, nodes: str, out: str, env: str | None = None):
    """With an environment, the output link is build-ENV unless --out names another."""
    from .build import Paths

    if env is not None and out == "build":
        out = f"build-{env}"
    return Paths.for_env(Path(site), Path(nodes), Path(out), env)


_env_option = click.option("--env", help="an environment declared in site.yaml (its base_url; output link build-ENV)")


def _report(exc: BootgenError, fmt: str) -> None:
    click.echo(format_problems(exc.problems, fmt), err=fmt == "text")
    sys.exit(EXIT_USER_ERROR)


def _wants_json(args) -> bool:
    args = list(args)
    return "--format=json" in args or any(a == "--format" and b == "json" for a, b in zip(args, args[1:]))


def _say(fmt: str, text: str, data: dict) -> None:
    """A command's result: `text` for people, or `data` as one JSON document for tools."""
    click.echo(json.dumps(data, indent=2, sort_keys=True) if fmt == "json" else text)


def _format_option(func):
    return click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True,
                        help="text, or json: the result on success and the problems on failure, on stdout")(func)


class _Command(click.Command):
    """Turn user errors into problem reports, and bugs into one line plus a hint."""

    def make_context(self, info_name, args, parent=None, **extra):
        try:
            return super().make_context(info_name, list(args), parent=parent, **extra)
        except click.UsageError as exc:  # exit 2 as ever; a tool that asked for JSON still gets JSON
            if _wants_json(args):
                click.echo(json.dumps({"usage_error": exc.format_message()}, sort_keys=True))
            raise

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
        _format_option,
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
@_env_option
@click.option("--offline", is_flag=True, help="do not download images; use only what is cached")
def build(site, nodes, out, fmt, env, offline):
    """Build the tree and switch OUT to it atomically."""
    from . import resident
    from .build import build as run_build
    from .secrets_tree import protection_line

    paths = output_paths(site, nodes, out, env)
    succeeded = False
    try:
        result = run_build(paths, fetch=not offline, state=resident.warm_state(paths))
        succeeded = True
    finally:
        resident.build_done(paths, succeeded)
    if result.nodes >= resident.MIN_NODES:  # the next build of this fleet runs warm (bootgen.resident)
        resident.start(paths.repository_state, ["build", "--site", site, "--nodes", nodes, "--out", out,
                                                *(["--env", env] if env else []), *(["--offline"] if offline else [])])
    line = protection_line(result.write.tree)
    data = result.as_dict()
    if line:
        data["secrets"] = line
    _say(fmt, result.summary() + (f"\n{line}" if line else ""), data)


@main.command(cls=_Command)
@_common
@_env_option
def check(site, nodes, out, fmt, env):
    """Validate site/ and nodes/ and render everything, writing nothing."""
    from .build import plan_build

    inputs, plan = plan_build(output_paths(site, nodes, out, env), fetch=False)
    counts = {"nodes": len(inputs.nodes), "profiles": len(inputs.profiles), "files": len(plan.artifacts)}
    _say(fmt, "ok: {nodes} nodes, {profiles} profiles, {files} files".format(**counts), {"ok": True, **counts})


@main.command(cls=_Command)
@_common
@click.argument("machine")
def explain(site, nodes, out, fmt, machine):
    """What MACHINE (a node name, a MAC in any spelling, or an IP) boots, and where each setting came from."""
    from .explain import explain as run_explain

    paths = output_paths(site, nodes, out)
    result = run_explain(paths.site, paths.nodes, paths.state, machine)
    click.echo(json.dumps(result.as_dict(), indent=2, sort_keys=True) if fmt == "json" else result.text())


@main.command("list", cls=_Command)
@_common
@click.option("--profile", help="only machines with this profile")
@click.option("--boot", type=click.Choice(["install", "live", "local"]), help="only machines in this boot state")
def list_command(site, nodes, out, fmt, profile, boot):
    """One line per machine: name, MACs, addresses, profile, boot state, image set, OS config."""
    from .explain import list_machines, machines_table

    paths = output_paths(site, nodes, out)
    machines = list_machines(paths.site, paths.nodes, profile=profile, boot=boot)
    if fmt == "json":
        click.echo(json.dumps({"machines": [m.as_dict() for m in machines]}, indent=2, sort_keys=True))
    else:
        click.echo(machines_table(machines))


@main.command(cls=_Command)
@click.argument("directory", type=click.Path(file_okay=False))
@click.option("--ssh-key", type=click.Path(dir_okay=False, path_type=Path),
              help="public key every machine authorizes (default: each ~/.ssh/*.pub)")
@_format_option
def init(directory, ssh_key, fmt):
    """Create DIRECTORY with an example site/ and nodes/ to start from."""
    from .scaffold import find_ssh_keys, scaffold

    done = scaffold(Path(directory), find_ssh_keys(ssh_key, Path.home()))
    _say(fmt, _init_text(done), done.as_dict())


def _init_text(done) -> str:
    lines = [f"created {len(done.created)} files in {done.directory}"]
    if done.ssh_keys.sources:
        lines.append(f"machines will authorize the SSH key(s) in {', '.join(done.ssh_keys.sources)}")
    lines += [f"warning: {warning}" for warning in done.warnings()]
    lines.append(f"next: cd {done.directory} && bootgen check && bootgen build")
    return "\n".join(lines)


@main.command("hash-password", cls=_Command)
@click.option("--password", prompt=True, hide_input=True, confirmation_prompt=True,
              help="the password (prompted for when omitted)")
def hash_password(password):
    """Print a SHA-512 crypt hash for `password_hash` fields."""
    from .passwords import hash_password as make_hash

    click.echo(make_hash(password))


@main.command(cls=_Command)
@click.argument("tree", default="build")
def sums(tree):
    """Print the SHA256SUMS of a built tree (path order), for `sha256sum -c` run in the tree."""
    from .publish.manifest import tree_sums

    click.echo(tree_sums(Path(tree)), nl=False)


@main.command(cls=_Command)
@_common
def fetch(site, nodes, out, fmt):
    """Download and verify every mirrored image set into the cache."""
    from .build import fetch_images

    mirrored, referenced = fetch_images(output_paths(site, nodes, out))
    _say(fmt, f"{mirrored} mirrored image sets verified and cached; "
              f"{referenced} referenced by URL (the firmware fetches those)",
         {"mirrored": mirrored, "referenced": referenced})


@main.command(cls=_Command)
@click.argument("destination", required=False)
@_env_option
@click.option("--tree", help="the built tree to publish  [default: build, or build-ENV with --env]")
@click.option("--release", "release_id", help="publish this kept release (an id from `bootgen releases`)")
@click.option("--site", default="site", show_default=True, help="site directory (its environments; stale check)")
@click.option("--nodes", default="nodes", show_default=True, help="directory of per-machine YAML files (stale check)")
@click.option("--endpoint-url", help="S3-compatible server, e.g. http://minio.lan:9000")
@click.option("--dry-run", is_flag=True, help="list what would change; write nothing")
@click.option("--prune", is_flag=True, help="S3: delete objects no recent build refers to")
@click.option("--keep", default=3, show_default=True, help="published builds whose objects are kept")
@click.option("--jobs", default=8, show_default=True, help="parallel uploads")
@click.option("--allow-secrets", is_flag=True, help="S3: upload files that carry secrets too (see the policy printed)")
@_format_option
def publish(destination, env, tree, release_id, site, nodes, endpoint_url, dry_run, prune, keep, jobs, allow_secrets,
            fmt):
    """Publish the tree to DESTINATION: s3://bucket/prefix or a docroot such as /srv/bootgen.

    With --env, the environment's tree goes to its own destination. A tree built
    for another environment, or from inputs edited since, is refused."""
    from .publish import publish_output
    from .secrets_tree import publish_notice

    paths = output_paths(site, nodes, "build", env)
    report = publish_output(paths, destination, release=release_id, tree=tree and Path(tree),
                            endpoint_url=endpoint_url, dry_run=dry_run, prune=prune, keep=keep, jobs=jobs,
                            allow_secrets=allow_secrets)
    notice = publish_notice(Path(report.tree), report.destination, allow_secrets)
    if notice:
        click.echo(notice, err=True)
    if fmt == "json":
        _say(fmt, "", _publish_dict(report))
        return
    for action in report.actions if dry_run else ():
        click.echo(str(action))
    click.echo(report.summary())


@main.command(cls=_Command)
@click.argument("source", required=False)
@click.option("--site", default="site", show_default=True, help="site directory (for the secrets file's checks)")
@click.option("--secrets", expose_value=False, callback=_use_secrets, metavar="FILE",
              help="secrets file whose values are looked for (else $BOOTGEN_SECRETS)")
@click.option("--endpoint-url", help="S3-compatible server, e.g. http://minio.lan:9000")
@_env_option
def audit(source, site, endpoint_url, env):
    """List what a stranger can read that is secret, in a tree, a docroot or s3://bucket/prefix
    (default: the output, build/ or build-ENV); exit 1 if any of it is not fenced."""
    from .audit import audit_bucket, audit_tree, referenced_values, report
    from .errors import Location, OutputError, Problem

    paths = output_paths(site, "nodes", "build", env)
    values = referenced_values(paths.state, Path(site))
    source = source or str(paths.out)  # build/, or build-ENV with --env
    if not source.startswith("s3://") and not os.path.isdir(source):
        raise OutputError(Problem(Location(source), "no built tree or docroot here",
                                  hint="name one: `bootgen audit build`, a docroot, or s3://bucket/prefix"))
    if source.startswith("s3://"):
        hits = audit_bucket(source, values, endpoint_url)
    else:
        hits = audit_tree(Path(source), values)
    click.echo(report(hits))
    if any(not hit.fenced for hit in hits):
        sys.exit(EXIT_USER_ERROR)


def _publish_dict(report) -> dict:
    data = {key: getattr(report, key) for key in ("destination", "build_id", "uploaded", "skipped", "deleted",
                                                  "requests", "bytes", "dry_run")}
    if report.dry_run:
        data["actions"] = [{"verb": a.verb, "path": a.path, "size": a.size} for a in report.actions]
    return data


@main.command(cls=_Command)
@_common
@_env_option
def releases(site, nodes, out, fmt, env):
    """The kept trees, newest first (* marks the live one): id, time, Git commit, what changed."""
    from .releases import list_releases

    kept = list_releases(output_paths(site, nodes, out, env))
    if fmt == "json":
        click.echo(json.dumps({"releases": [r.as_dict() for r in kept]}, indent=2, sort_keys=True))
    else:
        click.echo("\n".join(r.line() for r in kept) if kept else "no releases yet: run `bootgen build`")


@main.command(cls=_Command)
@_common
@_env_option
@click.argument("build_id", required=False)
def rollback(site, nodes, out, fmt, env, build_id):
    """Point OUT back at a kept release, atomically (default: the one built before the live one)."""
    from .releases import rollback as run_rollback

    release = run_rollback(output_paths(site, nodes, out, env), build_id)
    if fmt == "json":
        click.echo(json.dumps({"live": release.as_dict()}, indent=2, sort_keys=True))
    else:
        shown = out if env is None or out != "build" else f"build-{env}"
        click.echo(f"{shown} -> build {release.build_id[:12]} ({release.changes()}); "
                   f"publish it with `bootgen publish{f' --env {env}' if env else ''}`")


@main.command(cls=_Command)
@_common
@_env_option
@click.option("--poll", is_flag=True, help="poll for changes (network file systems, containers)")
@click.option("--offline", is_flag=True, help="do not download images; use only what is cached")
def watch(site, nodes, out, fmt, env, poll, offline):
    """Build, then rebuild on every change under the site and nodes directories."""
    from .watch import watch as run_watch

    paths = output_paths(site, nodes, out, env)  # an unknown one is reported by each build, like any site problem
    if fmt == "json":  # one JSON object per line per event, everything on stdout
        echo, stopped = click.echo, json.dumps({"event": "stopped"})
        echo(json.dumps({"event": "watching", "site": site, "nodes": nodes}))
    else:
        echo, stopped = _echo, "stopped"
        echo(f"watching {site}/ and {nodes}/ (Ctrl-C to stop)")
    _until_interrupted(lambda: run_watch(paths, echo, poll=poll, fetch=not offline, fmt=fmt), stopped)



@main.command(cls=_Command)
@_common
@click.option("--bind", default="127.0.0.1", show_default=True, help="address to serve HTTP on")
@click.option("--port", default=8000, show_default=True, help="port to serve HTTP on (0: any free port)")
@click.option("--url", help="base URL machines reach this server at  [default: http://BIND:PORT/]")
@click.option("--poll", is_flag=True, help="poll for changes (network file systems, containers)")
@click.option("--offline", is_flag=True, help="do not download images; use only what is cached")
def serve(site, nodes, out, fmt, bind, port, url, poll, offline):
    """Watch and serve a development tree over HTTP, like `mkdocs serve` for boot files.

    Its URLs point at this server; the tree `bootgen build` makes is left alone."""
    from .watch import serve as run_serve

    if fmt == "json":  # one JSON object per line per event, as watch prints them
        echo, stopped = click.echo, json.dumps({"event": "stopped"})
    else:
        echo, stopped = _echo, "stopped"
    _until_interrupted(lambda: run_serve(output_paths(site, nodes, out), echo, bind=bind, port=port, url=url,
                                         poll=poll, fetch=not offline, fmt=fmt), stopped)


@main.command(cls=_Command)
@_common
@_env_option
@click.option("--dnsmasq-log", "dnsmasq_logs", multiple=True, default=["/var/log/dnsmasq.log"], show_default=True,
              help="dnsmasq's log (its log-facility file, syslog, or - for standard input); repeatable; none: skip")
@click.option("--nginx-log", "nginx_logs", multiple=True, default=["/var/log/nginx/access.log"], show_default=True,
              help="nginx's access log in the combined format; repeatable; none: skip")
@click.option("--since", help="only what happened since then: 2h, 30m, 7d, or a time such as 2026-11-30T21:00")
@click.option("--all", "include_known", is_flag=True, help="list machines that have a node file too, with its name")
def discover(site, nodes, out, fmt, env, dnsmasq_logs, nginx_logs, since, include_known):
    """Machines that asked for boot files but have no node file, from dnsmasq's and nginx's logs."""
    from .discover import discover as run_discover

    found = run_discover(Path(site), Path(nodes), list(dnsmasq_logs), list(nginx_logs), since=since,
                         include_known=include_known, env=env)
    if fmt == "json":
        click.echo(json.dumps(found.as_dict(), indent=2, sort_keys=True))
        return
    for note in found.notes:
        click.echo(note, err=True)
    click.echo(found.text())


@main.command(cls=_Command)
@_common
@click.argument("machine")
@click.option("--name", help="node name and file name (default: node- and the MAC's last six hex digits)")
@click.option("--profile", help="the node's profile (default: the site's defaults.profile)")
@click.option("--boot", type=click.Choice(["local", "install", "live"]), default="local", show_default=True,
              help="local boots the installed disk: nothing is wiped until you say install")
@click.option("--address", help="static IPv4 address with prefix length, e.g. 192.168.1.4/24")
@click.option("--gateway", help="default gateway (needs --address)")
@click.option("--dns", multiple=True, help="DNS server (needs --address); repeatable")
def add(site, nodes, out, fmt, machine, name, profile, boot, address, gateway, dns):
    """Write nodes/<name>.yaml for the machine with MAC address MACHINE (see `bootgen discover`)."""
    from .enroll import add_node, parse_request

    new = parse_request(machine, name=name, profile=profile, boot=boot, address=address, gateway=gateway,
                        dns=tuple(dns))
    written = add_node(Path(site), Path(nodes), new, Path(out))
    if fmt == "json":
        click.echo(json.dumps({"node": new.name, "file": str(written), "mac": new.mac, "boot": new.boot},
                              sort_keys=True))
    else:
        click.echo(f"wrote {written} (boot: {new.boot}); next: bootgen build")


def _echo(text: str) -> None:
    click.echo(text, err=text.endswith("last good tree"))


def _until_interrupted(run, stopped: str = "stopped") -> None:
    def on_term(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, on_term)  # stop as cleanly as on Ctrl-C (state saved)
    try:
        run()
    except KeyboardInterrupt:
        click.echo(stopped)
    finally:
        signal.signal(signal.SIGTERM, previous)  # a host program (or test) keeps its own handling
