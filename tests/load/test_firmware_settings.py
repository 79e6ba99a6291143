"""Site settings that no firmware can boot are refused at check time, with the fix in the message."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from bootgen.build import plan_build
from bootgen.errors import InputError


def _problems(example) -> list[str]:
    with pytest.raises(InputError) as err:
        plan_build(example, fetch=False)
    return [p.format() for p in err.value.problems]


def _line_of(path, prefix: str) -> int:
    return next(i for i, line in enumerate(path.read_text().splitlines(), 1) if line.startswith(prefix))


def test_grub_behind_proxy_dhcp_is_refused_with_the_fix(example):
    site = example.site / "site.yaml"
    site.write_text(site.read_text().replace("  uefi_loader: ipxe ", "  uefi_loader: grub "))
    line = _line_of(site, "  uefi_loader: grub")
    assert _problems(example) == [
        f"site/site.yaml:{line}:16: error at $.dhcp.uefi_loader: GRUB cannot boot behind proxyDHCP: it fetches "
        "its files from the LAN's DHCP server, not from this boot server\n"
        "  hint: set `uefi_loader: ipxe` (UEFI machines chain through ipxe.efi), or use `mode: full`, or set "
        "next-server to this boot server on the LAN's DHCP server and `mode: none`"]


def test_bootgen_check_exits_1_on_grub_behind_proxy_dhcp(example):
    site = example.site / "site.yaml"
    site.write_text(site.read_text().replace("  uefi_loader: ipxe ", "  uefi_loader: grub "))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    done = subprocess.run([sys.executable, "-m", "bootgen", "check"], capture_output=True, text=True, env=env,
                          timeout=120)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "GRUB cannot boot behind proxyDHCP" in done.stdout + done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize("mode", ["full", "none"])
def test_grub_with_its_own_dhcp_is_accepted(example, mode):
    site = example.site / "site.yaml"
    text = site.read_text().replace("  uefi_loader: ipxe ", "  uefi_loader: grub ")
    text = text.replace("  mode: proxy ", f"  mode: {mode} ")
    if mode == "full":
        text = text.replace("  subnet: 10.0.0.0/24", "  subnet: 10.0.0.0/24\n  range: [10.0.0.100, 10.0.0.199]")
    site.write_text(text)
    plan_build(example, fetch=False)
