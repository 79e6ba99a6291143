"""`bootgen explain` and `bootgen list`: what each machine will boot, and why.

Both read the inputs exactly as a build does (load → validate → resolve →
render, writing nothing), so what they print is what the tree says. `explain`
shows one machine per firmware path with the kernel, initrds and command line,
its OS config and files, and every effective setting with the file:line it
came from and the less specific values it replaced.
"""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from pathlib import Path

from .errors import InputError, Location, Problem
from .loaders import first_files
from .naming import normalize_mac


@dataclass(frozen=True)
class Explanation:
    node: str
    hostname: str
    profile: str
    boot: str
    firmware: tuple[dict, ...]
    os_config: dict
    files: tuple[str, ...]
    settings: tuple[dict, ...]

    def as_dict(self) -> dict:
        return {"node": self.node, "hostname": self.hostname, "profile": self.profile, "boot": self.boot,
                "firmware": list(self.firmware), "os_config": self.os_config, "files": list(self.files),
                "settings": list(self.settings)}

    def text(self) -> str:
        lines = [f"node {self.node} (host name {self.hostname}): profile {self.profile}, boot {self.boot}", ""]
        for path in self.firmware:
            lines.append(f"{path['loader']} ({path['firmware']}, {path['first_loader']}): {', '.join(path['files'])}")
            if path["local"]:
                lines.append("  boots the local disk")
                continue
            lines.append(f"  kernel   {path['kernel']}")
            for initrd in path["initrds"]:
                lines.append(f"  initrd   {initrd}")
            lines.append(f"  cmdline  {path['cmdline']}")
        if self.os_config:
            lines += ["", f"OS config ({self.os_config['kind']}): {self.os_config['url']}"]
            if self.os_config.get("final_url") and self.os_config["final_url"] != self.os_config["url"]:
                lines.append(f"  final config: {self.os_config['final_url']}")
        lines += ["", f"files in the tree ({len(self.files)}):"] + [f"  {path}" for path in self.files]
        lines += ["", "settings:"]
        for setting in self.settings:
            source = setting["source"]
            if setting["overrides"]:
                source += ", overrides " + ", ".join(setting["overrides"])
            lines.append(f"  {setting['name']} = {setting['value']}  ({source})")
        return "\n".join(lines)


def _site_context(site_dir: Path, nodes_dir: Path, state_dir: Path):
    """The validated inputs and a render context, images resolved from the cache only."""
    from .build import Paths, _resolve
    from .load import load_inputs
    from .render import make_context

    inputs = load_inputs(site_dir, nodes_dir)
    images = _resolve(inputs, Paths(site_dir, nodes_dir, state_dir.parent / "build"), False, False)
    return inputs, make_context(inputs, images, Path.cwd())


def find_node(inputs, wanted: str):
    """A node by name, by a MAC in any accepted spelling, or by a static IPv4 address."""
    by_name = {node.name: node for node in inputs.nodes}
    if wanted in by_name:
        return by_name[wanted]
    mac = normalize_mac(wanted)
    address = _address(wanted)
    for node in inputs.nodes:
        for iface in node.interfaces:
            if (mac is not None and iface.mac == mac) or (address is not None and iface.address is not None
                                    and iface.address.ip == address):
                return node
    raise InputError(Problem(Location(wanted), f"no node named '{wanted}' and none with that MAC or address",
                             hint="run `bootgen list` to see every machine"))


def _address(text: str):
    try:
        return ipaddress.IPv4Address(text)
    except ValueError:
        return None


def explain(site_dir: Path, nodes_dir: Path, state_dir: Path, wanted: str) -> Explanation:
    from .render import boot_entry, node_spec, osconfig, render_node
    from .render.boot import for_loader, written_loaders

    inputs, ctx = _site_context(site_dir, nodes_dir, state_dir)
    node = find_node(inputs, wanted)
    spec = node_spec(ctx, node)
    config = osconfig.render(ctx, spec)
    entry = boot_entry(ctx, spec, config)
    artifacts = render_node(ctx, node)
    firmware = []
    for loader in written_loaders(spec, inputs.site):
        files = tuple(a.path for a in artifacts if a.target == loader)
        if loader == "raspberrypi":  # the Pi's firmware reads the image set's file names from <serial>/
            firmware.append({"loader": loader, "firmware": "Raspberry Pi", "first_loader": f"{spec.serial}/start4.elf",
                             "files": list(files), "local": entry.local,
                             "kernel": entry.kernel.name if entry.kernel else "",
                             "initrds": [ref.name for ref in entry.initrds], "cmdline": " ".join(entry.args)})
            continue
        spelled = for_loader(entry, loader, inputs.site)
        for kind, first in first_files(loader, spec.arch, spec.secure_boot):
            firmware.append({"loader": loader, "firmware": kind, "first_loader": first, "files": list(files),
                             "local": spelled.local, "kernel": spelled.kernel, "initrds": list(spelled.initrds),
                             "cmdline": " ".join(spelled.args)})
    os_config = {}
    if config is not None:
        os_config = {"kind": spec.profile.os_config, "url": config.url, "final_url": config.final_url or config.url}
    from .secrets import redact_all  # a value from a secret reference is shown as <secret NAME>

    return Explanation(spec.name, spec.hostname, spec.profile.name, spec.boot, redact_all(tuple(firmware)),
                       os_config, tuple(sorted(a.path for a in artifacts)), redact_all(tuple(_settings(spec))))


def _settings(spec):
    """Every effective setting with its source; layered lists item by item."""
    for name, setting in spec.sources():
        yield {"name": name, "value": _shown(setting.value), "source": str(setting.location),
               "overrides": [str(origin.location) for origin in setting.overrides]}
    for arg in spec.kernel_args:
        yield {"name": "kernel_args[]", "value": arg.text, "source": str(arg.origin.location), "overrides": []}
    for layer in spec.os_config_layers:
        yield {"name": "os_config layer", "value": layer.doc.file,
               "source": str(layer.doc.locate(layer.path)), "overrides": []}


def _shown(value) -> str:
    from .secrets import SecretStr

    if isinstance(value, SecretStr):
        return f"<{value.label}>"
    if isinstance(value, str):
        return value
    import json

    return json.dumps(value, sort_keys=True)


@dataclass(frozen=True)
class Machine:
    name: str
    macs: tuple[str, ...]
    addresses: tuple[str, ...]
    profile: str
    boot: str
    images: str
    os_config: str

    def as_dict(self) -> dict:
        return {"name": self.name, "macs": list(self.macs), "addresses": list(self.addresses),
                "profile": self.profile, "boot": self.boot, "images": self.images, "os_config": self.os_config}


def list_machines(site_dir: Path, nodes_dir: Path, *, profile: str | None = None,
                  boot: str | None = None) -> list[Machine]:
    """One Machine per node, in name order, filtered by profile and boot state."""
    from .load import load_inputs
    from .spec import resolve

    inputs = load_inputs(site_dir, nodes_dir)
    machines = []
    for node in inputs.nodes:
        spec = resolve(inputs.site, inputs.profiles, node, inputs.profile_layers)
        if (profile and spec.profile.name != profile) or (boot and spec.boot != boot):
            continue
        machines.append(Machine(
            spec.name, tuple(i.mac for i in spec.interfaces),
            tuple(str(i.address) for i in spec.interfaces if i.address is not None),
            spec.profile.name, spec.boot, spec.profile.image_set(spec.arch), spec.profile.os_config))
    return machines


def machines_table(machines: list[Machine]) -> str:
    rows = [("NAME", "MACS", "ADDRESSES", "PROFILE", "BOOT", "IMAGES", "OS CONFIG")]
    rows += [(m.name, ",".join(m.macs), ",".join(m.addresses) or "dhcp", m.profile, m.boot, m.images, m.os_config)
             for m in machines]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in rows)
