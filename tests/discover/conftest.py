"""Fixtures of the discover/add tests."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from lan_rig import rig  # noqa: E402


@pytest.fixture
def namespaces():
    """Skip where network namespaces cannot be made (dnsmasq needs a private LAN to serve DHCP on)."""
    if not rig.namespaces_work():
        pytest.skip("network namespaces unavailable (needs root): dnsmasq cannot serve DHCP on a private LAN")
