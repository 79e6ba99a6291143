"""Fixtures of the end-to-end boot tests: the Debian kernel, the test initramfs, the rig mode.

The kernel comes from scripts/e2e-deps.sh's cache; if it is missing the
script is run once here (it is idempotent), so `python -m pytest tests/e2e`
works on its own on a Debian machine where apt works.
"""
from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE / "payload"))

import checks  # noqa: E402
import rig  # noqa: E402
from initramfs import build_initramfs  # noqa: E402

DEPS_SCRIPT = HERE.parent.parent / "scripts" / "e2e-deps.sh"


@dataclass(frozen=True)
class Payload:
    """The kernel and initramfs every test site boots."""

    kernel: Path
    initrd: Path


def _kernel_dir() -> Path:
    kernel_dir = rig.CACHE / "kernel"
    if not (kernel_dir / "READY").exists():
        subprocess.run(["sh", str(DEPS_SCRIPT)], check=True, timeout=1200)
    return kernel_dir


@pytest.fixture(scope="session")
def payload(tmp_path_factory) -> Payload:
    """The Debian kernel (vmlinuz) and the test initramfs built for it."""
    kernel_dir = _kernel_dir()
    kernels = sorted((kernel_dir / "boot").glob("vmlinuz-*"))
    assert len(kernels) == 1, f"expected one vmlinuz in {kernel_dir}/boot, found {kernels}"
    initrd = build_initramfs(kernel_dir, tmp_path_factory.mktemp("payload") / "initrd.img")
    return Payload(kernels[0], initrd)


@pytest.fixture(scope="session")
def arm64_payload(tmp_path_factory, payload) -> Payload:
    """Debian's arm64 kernel (scripts/e2e-deps.sh unpacks it) and an initramfs with arm64 busybox."""
    arm64 = rig.CACHE / "arm64"
    kernels = sorted((arm64 / "boot").glob("vmlinuz-*"))
    assert len(kernels) == 1, f"run scripts/e2e-deps.sh: expected one arm64 vmlinuz in {arm64}/boot, found {kernels}"
    initrd = build_initramfs(arm64, tmp_path_factory.mktemp("arm64-payload") / "initrd.img", arm64 / "bin" / "busybox")
    return Payload(kernels[0], initrd)


@pytest.fixture(scope="session")
def use_namespaces() -> bool:
    """Whether the rig can make network namespaces (BOOTGEN_E2E_NO_NETNS=1 says no);
    if not, tests fall back to QEMU user-mode networking and say so."""
    works = not os.environ.get("BOOTGEN_E2E_NO_NETNS") and rig.namespaces_work()
    if not works:
        checks.note("network namespaces unavailable: serving through QEMU user-mode networking instead")
    return works


def pytest_terminal_summary(terminalreporter):
    for text in dict.fromkeys(checks.FALLBACK_NOTES):
        terminalreporter.write_line(f"E2E-FALLBACK: {text}")
