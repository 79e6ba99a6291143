"""Assertions shared by the e2e boot tests, and the record of rig fallbacks."""
from __future__ import annotations

import rig

FALLBACK_NOTES: list[str] = []


def note(text: str) -> None:
    """Print and record a rig fallback so it shows in the test summary, never silently."""
    print(f"E2E-FALLBACK: {text}")
    FALLBACK_NOTES.append(text)


def assert_booted(tree, node: str, result: rig.BootResult) -> None:
    """The kernel ran with exactly the node's command line and fetched the node's config."""
    assert result.cmdline is not None, (
        f"{result.machine.name}: our kernel never ran (timed out: {result.timed_out}, "
        f"{result.seconds:.0f} s); serial log ends:\n{result.tail()}")
    assert result.cmdline_words() == tree.expected_args(node), f"full command line: {result.cmdline}"
    entry = tree.config_entry(node)
    assert result.config == (entry["sha256"], entry["size"]), (
        f"config fetched by the VM differs from manifest.json's {entry['path']}; log ends:\n{result.tail()}")


def assert_local_boot(result: rig.BootResult, markers: tuple[str, ...] = ("No bootable device",)) -> None:
    """No kernel of ours ran, and the firmware went on to boot from a local device
    (SeaBIOS says "No bootable device" when it found none: the VM has no disk)."""
    assert result.cmdline is None, f"{result.machine.name} booted our kernel: {result.cmdline}"
    assert result.stopped_on in markers, (
        f"{result.machine.name} never tried a local boot (timed out: {result.timed_out}); "
        f"serial log ends:\n{result.tail()}")
