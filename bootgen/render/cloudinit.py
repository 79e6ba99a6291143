"""cloud-init NoCloud files for Ubuntu autoinstall (seed 003).

The node gets a content-addressed directory holding `user-data`,
`meta-data`, `vendor-data` and `network-config`; the kernel argument
`ds=nocloud;s=<that directory's URL>` points at it (the URL ends in `/`, as
NoCloud requires). user-data carries `autoinstall:` version 1 with identity,
SSH (keys only), a netplan v2 network built from the node's interfaces,
storage and late-commands.
"""
from __future__ import annotations

import yaml

from ..errors import Problem, RenderError
from ..model import Profile
from ..spec import NodeSpec
from .osconfig import NO_FOLDING, OsConfig, content_addressed
from .yamldump import Dumper as _DUMPER  # libyaml's emitter, a fast representer

# K3s needs the legacy iptables backend (seed 003 switches it after install).
IPTABLES_LEGACY = [
    "curtin in-target --target=/target -- update-alternatives --set iptables /usr/sbin/iptables-legacy",
    "curtin in-target --target=/target -- update-alternatives --set ip6tables /usr/sbin/ip6tables-legacy",
]


def render_cloud_init(ctx, node: NodeSpec, profile: Profile) -> OsConfig:
    _check(node)
    files = {
        "user-data": _cloud_config_bytes(user_data(node)),
        "meta-data": _yaml_bytes({"instance-id": f"bootgen-{node.name}", "local-hostname": node.hostname}),
        "vendor-data": _cloud_config_bytes({}),
        "network-config": _yaml_bytes(network_config(node)),
    }
    url, artifacts = content_addressed(ctx, node, files, target="cloud-init")
    return OsConfig(url, artifacts)


def user_data(node: NodeSpec) -> dict:
    """The autoinstall document: what subiquity needs to install unattended."""
    settings = node.cloud_init
    late_commands = settings.late_commands if settings.late_commands is not None else IPTABLES_LEGACY
    autoinstall = {
        "version": 1,
        "identity": {"hostname": node.hostname, "username": settings.user, "password": settings.password_hash},
        "ssh": {"install-server": True, "allow-pw": False, "authorized-keys": list(node.ssh_authorized_keys)},
        "network": network_config(node),
        "storage": settings.storage if settings.storage is not None else {"layout": {"name": "lvm"}},
        "late-commands": list(late_commands),
    }
    if settings.packages:
        autoinstall["packages"] = list(settings.packages)
    autoinstall.update(settings.user_data)
    return {"autoinstall": autoinstall}


def network_config(node: NodeSpec) -> dict:
    """Netplan v2: static interfaces by MAC, the others on DHCP."""
    ethernets = {}
    for index, iface in enumerate(node.interfaces):
        config: dict = {"match": {"macaddress": iface.mac}, "set-name": iface.name or f"eth{index}"}
        if iface.address is None:
            config["dhcp4"] = True
        else:
            config["addresses"] = [str(iface.address)]
            if iface.gateway:
                config["routes"] = [{"to": "default", "via": str(iface.gateway)}]
            if iface.dns:
                config["nameservers"] = {"addresses": [str(a) for a in iface.dns]}
        ethernets[iface.name or f"eth{index}"] = config
    return {"version": 2, "ethernets": ethernets}


def _check(node: NodeSpec) -> None:
    from ..passwords import crypt_hash_problem

    problems = []
    password = node.cloud_init.password_hash
    if password is None:
        problems.append(Problem(node.doc.locate(()), "Ubuntu autoinstall needs cloud_init.password_hash",
                                "$.cloud_init.password_hash",
                                "make one with `bootgen hash-password` (SSH stays key-only: allow-pw is false)"))
    elif not str(password).startswith(("$6$", "$5$", "$y$")):
        origin = node.origin("cloud_init.password_hash")  # the layer it came from: reported once, there
        problems.append(Problem(origin.location, "password_hash is not a crypt hash ($6$, $5$ or $y$)",
                                origin.field, "never put a plaintext password here: use `bootgen hash-password`"))
    elif crypt_hash_problem(password, name="password_hash"):  # `$6$` alone, no salt, a cut hash
        origin = node.origin("cloud_init.password_hash")
        problems.append(Problem(origin.location, crypt_hash_problem(password, name="password_hash"),
                                origin.field, "use the whole line `bootgen hash-password` prints"))
    if problems:
        raise RenderError(problems)


def _yaml_bytes(data: dict) -> bytes:
    return yaml.dump(data, Dumper=_DUMPER, sort_keys=True, default_flow_style=False, allow_unicode=True,
                     width=NO_FOLDING).encode()


def _cloud_config_bytes(data: dict) -> bytes:
    return b"#cloud-config\n" + _yaml_bytes(data)
