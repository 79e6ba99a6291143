"""The LAN the discover tests run pretend machines on: the e2e rig's namespace, plus a port for clients."""
from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "e2e"))  # rig.py and sites.py: one LAN rig for every server test

import rig  # noqa: E402

CLIENT = HERE / "lan_client.py"
FIXTURES = HERE / "fixtures"


@dataclass
class ClientPort:
    """A namespace cabled to the LAN's bridge by a veth pair: where pretend machines send from."""

    netns: str
    iface: str = "eth0"

    @classmethod
    def attach(cls, lan: rig.NamespaceLan) -> "ClientPort":
        name = rig._netns_name()
        subprocess.run(["ip", "netns", "add", name], check=True, capture_output=True, timeout=30)
        lan.extra_netns.append(name)  # deleted with the LAN
        for cmd in (lan.wrap(["ip", "link", "add", "veth-clients", "type", "veth", "peer", "name", "eth0",
                              "netns", name]),
                    lan.wrap(["ip", "link", "set", "veth-clients", "master", "br0", "up"]),
                    ["ip", "netns", "exec", name, "ip", "link", "set", "lo", "up"],
                    ["ip", "netns", "exec", name, "ip", "link", "set", "eth0", "up"]):
            subprocess.run(cmd, check=True, capture_output=True, timeout=30)
        return cls(name)

    def run(self, steps: list[dict]) -> list[dict]:
        """Run lan_client.py's steps inside the namespace; one result per step, in order."""
        done = subprocess.run(["ip", "netns", "exec", self.netns, sys.executable, str(CLIENT), json.dumps(steps)],
                              capture_output=True, text=True, timeout=30 + 10 * len(steps))
        assert done.returncode == 0, done.stderr
        results = [json.loads(line) for line in done.stdout.splitlines()]
        failed = [r for r in results if "failed" in next(iter(r.values()))]
        assert not failed, f"a pretend machine's request failed: {failed}"
        return results
