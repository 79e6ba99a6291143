"""Render: turn validated Inputs into a Plan of artifacts.

Per node, the OS config is rendered first (its content-addressed URL goes on the
kernel command line), then the boot entry, then one file per boot loader and
interface. Site-wide entry points, server configs, images and boot loaders
follow. Problems from all nodes are collected and raised together.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..errors import Problem, RenderError
from ..model import Inputs, Node, Profile
from ..plan import Artifact, Plan
from . import osconfig
from .boot import BootEntry, image_url
from .exports import EXPORTS
from .targets import TARGETS, SITE_TARGETS
from .templating import Templates


@dataclass(frozen=True)
class RenderContext:
    inputs: object  # bootgen.load.SiteInputs or bootgen.model.Inputs: .site, .profiles, .templates_dir
    images: dict  # image set name -> bootgen.images.ResolvedImageSet
    templates: Templates


def make_context(inputs, images: dict, display_root: Path, cache_dir: Path | None = None) -> RenderContext:
    return RenderContext(inputs, images, Templates(inputs.templates_dir, display_root, cache_dir))


def render(inputs: Inputs, images: dict, *, display_root: Path, extra_files=()) -> Plan:
    """Render every node and the site-wide files into a Plan; RenderError lists all problems."""
    ctx = make_context(inputs, images, display_root)
    plan = Plan()
    problems: list[Problem] = []
    for node in inputs.nodes:
        try:
            for artifact in render_node(ctx, node):
                plan.add(artifact)
        except RenderError as exc:
            problems.extend(exc.problems)
    if problems:
        raise RenderError(problems)
    for artifact in render_site_files(ctx, dhcp_hosts(inputs.nodes)):
        plan.add(artifact)
    for placed in extra_files:
        plan.add(placed_artifact(placed))
    plan.check()
    return plan


def render_site_files(ctx: RenderContext, hosts) -> list[Artifact]:
    """Entry points shared by all nodes, and the dnsmasq/nginx configs (which list `hosts`)."""
    return [artifact for target in SITE_TARGETS.values() for artifact in target(ctx, hosts)]


def placed_artifact(placed) -> Artifact:
    """An image or boot loader file (bootgen.images.PlacedFile) as an artifact to link."""
    return Artifact(placed.tree_path, placed.sha256, placed.size, placed.immutable, None, placed.target,
                    source=placed.source)


def dhcp_hosts(nodes) -> tuple[tuple[str, str, str], ...]:
    """(MAC, address, host name) of every static interface, for dnsmasq's dhcp-host lines."""
    return tuple(host for node in nodes for host in node_hosts(node))


def node_hosts(node: Node) -> tuple[tuple[str, str, str], ...]:
    return tuple((iface.mac, str(iface.address.ip), node.hostname) for iface in node.interfaces
                 if iface.address is not None)


def render_node(ctx: RenderContext, node: Node) -> list[Artifact]:
    """All artifacts for one node: OS config objects, then per-loader entry points."""
    profile = ctx.inputs.profiles[node.profile]
    config = osconfig.render(ctx, node, profile)
    entry = boot_entry(ctx, node, profile, config)
    artifacts = list(config.artifacts) if config else []
    for loader in profile.loaders:
        artifacts.extend(TARGETS[loader](ctx, entry))
    for name, export in EXPORTS.items():
        if ctx.inputs.site.exports.get(name):
            artifacts.extend(export(ctx, node, entry, config))
    return artifacts


def boot_entry(ctx: RenderContext, node: Node, profile: Profile, config) -> BootEntry:
    """Resolve images and render the kernel arguments for one node."""
    if node.boot == "local":
        return BootEntry(node, profile, local=True)
    image_set = ctx.images[profile.images]
    if image_set.kernel is None:
        raise RenderError(Problem(profile.doc.locate(("images",)),
                                  f"image set '{profile.images}' has no kernel to boot", "$.images"))
    variables = template_vars(ctx, node, profile, image_set, config)
    args = []
    for source_doc, base, values in _arg_sources(ctx, node, profile):
        for i, value in enumerate(values):
            location = source_doc.locate(base + (i,))
            rendered = ctx.templates.render_string(value, variables, location, _path_text(base, i))
            args.extend(rendered.split())
    return BootEntry(node, profile, local=False, kernel=image_set.kernel, initrds=image_set.initrds,
                     args=tuple(args))


def _arg_sources(ctx: RenderContext, node: Node, profile: Profile):
    """Kernel arguments in order: site defaults, profile, node (later ones win in the kernel)."""
    site = ctx.inputs.site
    return ((site.doc, ("defaults", "kernel_args"), site.defaults.kernel_args),
            (profile.doc, ("kernel_args",), profile.kernel_args),
            (node.doc, ("kernel_args",), node.kernel_args))


def _path_text(base: tuple, index: int) -> str:
    return "$." + ".".join(base) + f"[{index}]"


def template_vars(ctx: RenderContext, node: Node, profile: Profile, image_set, config) -> dict:
    """The variables kernel arguments and templates can use (documented in the README)."""
    site = ctx.inputs.site
    return {
        "node": node,
        "hostname": node.hostname,
        "profile": profile,
        "site": site,
        "base_url": site.base_url,
        "config_url": config.url if config else None,
        "final_config_url": (config.final_url or config.url) if config else None,
        "boot": node.boot,
        "mac": node.interfaces[0].mac,
        "vars": {**profile.vars, **node.vars},
        "install": {**profile.install, **node.install},
        "images": _image_urls(ctx, image_set),
    }


def _image_urls(ctx: RenderContext, image_set) -> dict:
    site = ctx.inputs.site
    return {
        "kernel": image_url(site, image_set.kernel) if image_set.kernel else None,
        "initrds": [image_url(site, ref) for ref in image_set.initrds],
        "iso": image_url(site, image_set.iso) if image_set.iso else None,
        "installer_base": site.url(image_set.installer_base) if image_set.installer_base else None,
        "version": image_set.version,
    }
