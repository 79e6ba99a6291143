"""Butane local files (contents.local, contents_local, ssh_authorized_keys_local) go through the site gate."""
from __future__ import annotations

import json
import os

import pytest

from bootgen.osconfig.butane import build_ignition

MARKER = "SECRET-MARKER-butane-91e2"

pytestmark = pytest.mark.timeout(60)

LOCAL = "ignition:\n  storage:\n    files:\n      - path: /etc/x\n        contents:\n          local: {v}\n"
UNIT = "ignition:\n  systemd:\n    units:\n      - name: x.service\n        contents_local: {v}\n"
KEYS = "ignition:\n  passwd:\n    users:\n      - name: core\n        ssh_authorized_keys_local: [{v}]\n"


@pytest.fixture
def files(tmp_path):
    site = tmp_path / "site"
    site.mkdir()
    secret = tmp_path / "shadow"
    secret.write_text(f"root:{MARKER}:19000::::::\n")
    (site / "esc").symlink_to(secret)
    os.mkfifo(site / "fifo")
    (site / "dir").mkdir()
    (site / "loop").symlink_to("loop")
    (site / "dang").symlink_to("gone")
    (site / "out").symlink_to(tmp_path, target_is_directory=True)
    return site


@pytest.mark.parametrize("template,field", [
    (LOCAL, "$.ignition.storage.files[0].contents.local"),
    (UNIT, "$.ignition.systemd.units[0].contents_local"),
    (KEYS, "$.ignition.passwd.users[0].ssh_authorized_keys_local[0]"),
])
@pytest.mark.parametrize("value,message", [
    ("esc", "local file 'esc' resolves outside the files directory"),
    ("out/shadow", "local file 'out/shadow' resolves outside the files directory"),
    ("fifo", "local file 'fifo' is a FIFO (named pipe), not a regular file"),
    ("dir", "local file 'dir' is a directory, not a regular file"),
    ("loop", "local file 'loop' is a symlink loop"),
    ("dang", "local file 'dang' not found"),
])
def test_refused_at_the_value(layer, problems_of, files, template, field, value, message):
    text = template.format(v=value)
    (problem,) = problems_of([layer(text)], files_dir=files, version="3.4.0")
    line_no = len(text.splitlines())
    line = text.splitlines()[-1]
    assert (problem.location.file, problem.location.line, problem.location.column) == (
        "nodes/node-1.yaml", line_no, line.rindex(value) + 1)
    assert problem.path == field
    assert problem.message == message
    assert MARKER not in problem.format() + problem.hint


def test_in_site_symlink_is_read(layer, files):
    (files / "b").write_text("inside\n")
    (files / "a").symlink_to("b")
    config = build_ignition([layer(LOCAL.format(v="a"))], files_dir=files)
    assert config["storage"]["files"][0]["contents"]["source"] == "data:,inside%0A"


def test_private_key_pasted_as_a_file_name_is_described_not_printed(layer, problems_of, files):
    body = "b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZW" * 3
    key = f"-----BEGIN OPENSSH PRIVATE KEY-----\n{body}\n-----END OPENSSH PRIVATE KEY-----\n"
    (problem,) = problems_of([layer(LOCAL.format(v=json.dumps(key)))], files_dir=files)
    assert "local file <OpenSSH private key, " in problem.message
    assert body[:24] not in problem.format()


def test_private_key_body_as_a_public_key_is_refused_without_quoting_it(layer, problems_of):
    body = "b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZW"
    text = f"ignition:\n  passwd:\n    users:\n      - name: core\n        ssh_authorized_keys: [{body}]\n"
    (problem,) = problems_of([layer(text)])
    assert problem.message == "this is a private key, not a public key"
    assert body[:20] not in problem.format()
