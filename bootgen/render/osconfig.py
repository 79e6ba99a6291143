"""OS configs: the files a booted OS fetches (Ignition, cloud-init, cloud-config).

Each renderer returns an `OsConfig`: content-addressed artifacts plus the URL
that goes on the kernel command line (`config_url` in templates). Configs are
built as data and serialised with sorted keys; only the boot-loader formats are
templated text.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..plan import Artifact, content_path

# YAML line width that never folds a value: a folded secret would no longer match its bytes, and
# bootgen recognises the files that carry a secret by them (bootgen.secrets.carries_secret).
NO_FOLDING = 1 << 30


@dataclass(frozen=True)
class OsConfig:
    url: str  # what the booted kernel fetches first (`config_url`)
    artifacts: tuple[Artifact, ...]
    final_url: str | None = None  # the node's final config, when `url` is an installer stage
    final_sha512: str | None = None  # of the final config's bytes (Ignition), for installers to check


def content_addressed(ctx, node, files: dict[str, bytes], target: str) -> tuple[str, tuple[Artifact, ...]]:
    """Place `files` in configs/<node>/<digest>/ and return (directory URL, artifacts).

    A node made from secret references gets a directory named by a keyed hash of
    its name instead (see bootgen.secrets.private_name): nothing public gives it."""
    directory = content_path(f"configs/{config_dir_name(ctx, node)}", files)
    artifacts = tuple(Artifact.from_bytes(f"{directory}/{name}", data, target=target, node=node.name,
                                          immutable=True) for name, data in sorted(files.items()))
    return ctx.inputs.site.url(directory + "/"), artifacts


def config_dir_name(ctx, spec) -> str:
    """The node's directory under configs/: its name, or a keyed hash of it if it uses secrets."""
    from ..secrets import known, private_name, spec_values, uses_secrets

    if known() and uses_secrets(spec, ctx):
        return private_name(ctx.inputs.site.directory, spec.name, spec_values(spec, ctx))
    return spec.name


def render(ctx, spec) -> OsConfig | None:
    """The node's OS config (spec: a bootgen.spec.NodeSpec), or None when the profile has none
    (or the node boots locally)."""
    profile = spec.profile
    if spec.boot == "local" or profile.os_config == "none":
        return None
    return RENDERERS[profile.os_config](ctx, spec, profile)


def _ignition(ctx, node, profile):
    from .ignition import render_ignition
    return render_ignition(ctx, node, profile)


def _cloud_init(ctx, node, profile):
    from .cloudinit import render_cloud_init
    return render_cloud_init(ctx, node, profile)


def _cloud_config(ctx, node, profile):
    from .cloudconfig import render_cloud_config
    return render_cloud_config(ctx, node, profile)


RENDERERS = {"ignition": _ignition, "cloud-init": _cloud_init, "cloud-config": _cloud_config}
