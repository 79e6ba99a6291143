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
from ..model import Inputs, Node
from .. import loaders
from ..spec import NodeSpec, resolve, secure_boot_differs
from ..plan import Artifact, Plan, producer
from . import osconfig
from .boot import BootEntry, image_url, node_image_set, written_loaders
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
    for artifact in render_site_files(ctx, dhcp_hosts(inputs.nodes, inputs)):
        plan.add(artifact)
    for placed in extra_files:
        plan.add(placed_artifact(placed))
    plan.check()
    return plan


def render_site_files(ctx: RenderContext, hosts) -> list[Artifact]:
    """Entry points shared by all nodes (of the boot configs the site writes), and the dnsmasq/nginx
    configs (which list `hosts`)."""
    return [artifact for target in SITE_TARGETS.values() for artifact in target(ctx, hosts)
            if artifact.target not in TARGETS or artifact.target in ctx.inputs.site.boot_configs]


def placed_artifact(placed) -> Artifact:
    """An image or boot loader file (bootgen.images.PlacedFile) as an artifact to link."""
    return Artifact(placed.tree_path, placed.sha256, placed.size, placed.immutable, None, placed.target,
                    source=placed.source)


def dhcp_hosts(nodes, inputs) -> tuple[tuple[str, str, str, str], ...]:
    """(MAC, address, host name, tag) of every interface dnsmasq must know, for its dhcp-host lines."""
    return tuple(host for node in nodes for host in node_hosts(node, inputs))


def node_hosts(node: Node, inputs) -> tuple[tuple[str, str, str, str], ...]:
    """The node's interfaces with a static address ("" if none) or a dnsmasq tag ("" if none): an
    x86-64 machine whose profile's secure_boot differs from the site's is tagged, so that DHCP
    hands it the other chain (bootgen.loaders.site_offers)."""
    tag = _secure_boot_tag(node, inputs)
    return tuple((iface.mac, str(iface.address.ip) if iface.address is not None else "", node.hostname, tag)
                 for iface in node.interfaces if iface.address is not None or (tag and iface.pxe))


def _secure_boot_tag(node: Node, inputs) -> str:
    profile = inputs.profiles.get(node.profile)
    if node.arch != "x86_64" or profile is None or not secure_boot_differs(inputs.site, profile):
        return ""
    return loaders.secure_boot_host_tag(inputs.site)


def node_spec(ctx: RenderContext, node: Node) -> NodeSpec:
    """The node's effective settings (site defaults < profile < node), resolved once."""
    inputs = ctx.inputs
    return resolve(inputs.site, inputs.profiles, node, inputs.profile_layers)


def render_node(ctx: RenderContext, node: Node) -> list[Artifact]:
    """All artifacts for one node: OS config objects, then per-loader entry points."""
    spec = node_spec(ctx, node)
    config = osconfig.render(ctx, spec)
    entry = boot_entry(ctx, spec, config)
    artifacts = list(config.artifacts) if config else []
    for loader in written_loaders(spec, ctx.inputs.site):
        artifacts.extend(TARGETS[loader](ctx, entry))
    for name, export in EXPORTS.items():
        if ctx.inputs.site.exports.get(name):
            artifacts.extend(export(ctx, spec, entry, config))
    return _one_file_per_path(spec, artifacts)


def _one_file_per_path(spec: NodeSpec, artifacts: list[Artifact]) -> list[Artifact]:
    """The node's files, each path once. Two different files of one node on one path are an error
    (the build compares paths across nodes, not within one): placing both would write the second
    over the first, and through the first's link into the mirrored image file it came from."""
    by_path: dict[str, Artifact] = {}
    for artifact in artifacts:
        first = by_path.setdefault(artifact.path, artifact)
        if first.sha256 != artifact.sha256:
            raise RenderError(Problem(spec.doc.locate(()), f"node '{spec.name}': two of its files claim "
                                      f"{artifact.path}: {producer(first)} and {producer(artifact)}",
                                      hint="file names come from MACs, addresses, serials and image file names; "
                                           "make them unique"))
    return list(by_path.values())


def boot_entry(ctx: RenderContext, spec: NodeSpec, config) -> BootEntry:
    """Resolve images and render the kernel arguments for one node."""
    profile = spec.profile
    if spec.boot == "local":
        return BootEntry(spec, profile, local=True)
    image_set = node_image_set(ctx, spec)
    if image_set.kernel is None:
        field = "images_arm64" if spec.arch == "arm64" else "images"
        raise RenderError(Problem(profile.doc.locate((field,)),
                                  f"image set '{image_set.name}' has no kernel to boot", f"$.{field}"))
    variables = template_vars(ctx, spec, image_set, config)
    args = []
    for arg in spec.kernel_args:
        origin = arg.origin
        args.extend(ctx.templates.render_string(arg.text, variables, origin.location, origin.field).split())
    return BootEntry(spec, profile, local=False, kernel=image_set.kernel, initrds=image_set.initrds,
                     args=tuple(args))


def template_vars(ctx: RenderContext, spec: NodeSpec, image_set, config) -> dict:
    """The variables kernel arguments and templates can use (documented in the README)."""
    site = ctx.inputs.site
    return {
        "node": spec,
        "hostname": spec.hostname,
        "profile": spec.profile,
        "site": site,
        "base_url": site.base_url,
        "config_url": config.url if config else None,
        "final_config_url": (config.final_url or config.url) if config else None,
        "boot": spec.boot,
        "mac": spec.interfaces[0].mac,
        "vars": spec.vars,
        "install": _as_dict(spec.install),
        "images": _image_urls(ctx, image_set),
    }


def _as_dict(install) -> dict:
    """`install` as templates see it: disk and mirror always (with their defaults), channel and
    version only when set, so a template that needs them fails loudly without them."""
    values = {"disk": install.disk, "mirror": install.mirror}
    values.update((name, getattr(install, name)) for name in ("channel", "version") if getattr(install, name))
    return values


def _image_urls(ctx: RenderContext, image_set) -> dict:
    site = ctx.inputs.site
    return {
        "kernel": image_url(site, image_set.kernel) if image_set.kernel else None,
        "initrds": [image_url(site, ref) for ref in image_set.initrds],
        "iso": image_url(site, image_set.iso) if image_set.iso else None,
        "installer_base": site.url(image_set.installer_base) if image_set.installer_base else None,
        "version": image_set.version,
    }
