"""Publish what `bootgen init` + `bootgen build --offline` really produce (contract check with build)."""
from __future__ import annotations

import os
import subprocess
import sys

from publish_synth import is_index, references

from bootgen.publish import publish
from bootgen.publish.manifest import load_tree, verify_tree


def _build_example(tmp_path):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    for args in (["init", "site"], ["build", "--offline"]):
        cwd = tmp_path if args[0] == "init" else tmp_path / "site"
        subprocess.run([sys.executable, "-m", "bootgen", *args], cwd=cwd, env=env, check=True,
                       capture_output=True, timeout=120)
    return (tmp_path / "site" / "build").resolve()


def test_a_real_build_publishes_to_a_docroot_with_every_reference_served(tmp_path):
    tree = _build_example(tmp_path)
    manifest = load_tree(tree)
    verify_tree(tree, manifest)  # build and publish agree on manifest.json and SHA256SUMS
    report = publish(tree, str(tmp_path / "www"))
    assert sum(not is_index(a.path) for a in report.actions if a.verb == "copy") == len(manifest.files)
    current = tmp_path / "www" / "current"
    checked = 0
    for entry in (f for f in manifest.files if not f.immutable and f.path.startswith(("ipxe/", "pxelinux.cfg/"))):
        for ref in references((current / entry.path).read_text()):
            assert (current / ref).is_file(), f"{entry.path} names missing {ref}"
            checked += 1
    assert checked, "no entry point named a content-addressed object; the check proved nothing"
    assert publish(tree, str(tmp_path / "www")).uploaded == 0
