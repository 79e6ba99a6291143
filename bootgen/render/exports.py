"""Exports for other provisioning engines, from the same nodes (seed 004).

- Pixiecore's API mode asks `GET <api>/v1/boot/<mac>` and wants JSON with
  `kernel`, `initrd` and `cmdline`: a static tree can answer that, so each
  netbooting interface gets `pixiecore/v1/boot/<mac>`. Point pixiecore at
  `<base_url>pixiecore`. Machines booting locally get no file (pixiecore then
  ignores them).
- Tinkerbell: per node, `tinkerbell/<node>.yaml` with a Hardware object
  (interfaces, addresses, `allowPXE`/`allowWorkflow`, iPXE URL of the node's
  script in our tree) and, for Flatcar nodes being installed, a Template with
  the seed's flatcar-install actions (fetching the node's final Ignition config
  from our tree and checking its sha512) and a Workflow binding it to the MAC.
  Current Tinkerbell reads these as Kubernetes objects (`kubectl apply -f`).
"""
from __future__ import annotations

import yaml

from .. import prettyjson
from ..model import Profile
from .osconfig import NO_FOLDING
from ..spec import NodeSpec
from ..naming import mac_hyphens
from ..quoting import shell
from ..plan import Artifact
from .boot import BootEntry, image_url
from .yamldump import BlockDumper as _DUMPER  # the Template's workflow as a readable `|` block

TINKERBELL_API = "tinkerbell.org/v1alpha1"


def pixiecore(ctx, node: NodeSpec, entry: BootEntry, config) -> list[Artifact]:
    if entry.local:
        return []
    site = ctx.inputs.site
    answer = {"kernel": image_url(site, entry.kernel),
              "initrd": [image_url(site, ref) for ref in entry.initrds],
              "cmdline": " ".join(entry.args)}
    data = (prettyjson.dumps(answer) + "\n").encode()
    return [Artifact.from_bytes(f"pixiecore/v1/boot/{iface.mac}", data, target="pixiecore", node=node.name)
            for iface in node.interfaces if iface.pxe]


def tinkerbell(ctx, node: NodeSpec, entry: BootEntry, config) -> list[Artifact]:
    settings = ctx.inputs.site.exports["tinkerbell"]
    namespace = settings.get("namespace", "default")
    profile: Profile = entry.profile
    documents = [hardware(ctx, node, namespace, settings.get("facility", "onprem"), installing=not entry.local)]
    if node.boot == "install" and profile.os_config == "ignition" and profile.variant == "flatcar" and config:
        image = settings.get("installer_image", "flatcar-install")
        documents += [template(node, namespace, image, config), workflow(node, namespace)]
    text = "".join("---\n" + yaml.dump(doc, Dumper=_DUMPER, sort_keys=True, default_flow_style=False, width=NO_FOLDING)
                   for doc in documents)
    return [Artifact.from_bytes(f"tinkerbell/{node.name}.yaml", text.encode(), target="tinkerbell",
                                node=node.name)]


def hardware(ctx, node: NodeSpec, namespace: str, facility: str, *, installing: bool) -> dict:
    site = ctx.inputs.site
    interfaces = []
    for iface in node.interfaces:
        dhcp: dict = {"arch": "x86_64", "hostname": node.hostname, "mac": iface.mac, "uefi": False}
        if iface.address is not None:
            dhcp["ip"] = {"address": str(iface.address.ip), "netmask": str(iface.address.netmask)}
            if iface.gateway:
                dhcp["ip"]["gateway"] = str(iface.gateway)
        if iface.dns:
            dhcp["name_servers"] = [str(a) for a in iface.dns]
        netboot = {"allowPXE": iface.pxe and installing, "allowWorkflow": installing,
                   "ipxe": {"url": site.url(f"ipxe/{mac_hyphens(iface.mac)}.ipxe")}}
        interfaces.append({"dhcp": dhcp, "netboot": netboot})
    return {"apiVersion": TINKERBELL_API, "kind": "Hardware",
            "metadata": {"name": node.name, "namespace": namespace},
            "spec": {"interfaces": interfaces,
                     "metadata": {"facility": {"facility_code": facility},
                                  "instance": {"hostname": node.hostname, "id": node.interfaces[0].mac}}}}


def template(node: NodeSpec, namespace: str, image: str, config) -> dict:
    """The seed's two actions: put the Ignition config on the state dir, run flatcar-install."""
    digest = config.final_sha512.removeprefix("sha512-")
    fetch = (shell(["wget", "-O", "/statedir/ignition.json", config.final_url]) + " && "
             + f"echo {shell([digest + '  /statedir/ignition.json'])} | sha512sum -c -")
    workflow_template = {
        "version": "0.1", "name": "flatcar-install", "global_timeout": 1800,
        "tasks": [{
            "name": "flatcar-install", "worker": "{{.device_1}}",
            "volumes": ["/dev:/dev", "/statedir:/statedir"],
            "actions": [
                {"name": "fetch-ignition", "image": image, "timeout": 300, "command": ["sh", "-c", fetch]},
                {"name": "flatcar-install", "image": image, "timeout": 1500,
                 "command": ["/usr/local/bin/flatcar-install", "-s", "-i", "/statedir/ignition.json"]},
            ],
        }],
    }
    data = yaml.dump(workflow_template, Dumper=_DUMPER, sort_keys=False, default_flow_style=False, width=NO_FOLDING)
    return {"apiVersion": TINKERBELL_API, "kind": "Template",
            "metadata": {"name": f"{node.name}-flatcar-install", "namespace": namespace}, "spec": {"data": data}}


def workflow(node: NodeSpec, namespace: str) -> dict:
    return {"apiVersion": TINKERBELL_API, "kind": "Workflow",
            "metadata": {"name": node.name, "namespace": namespace},
            "spec": {"templateRef": f"{node.name}-flatcar-install", "hardwareRef": node.name,
                     "hardwareMap": {"device_1": node.interfaces[0].mac}}}


EXPORTS = {"pixiecore": pixiecore, "tinkerbell": tinkerbell}
