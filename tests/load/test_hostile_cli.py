"""`bootgen build` on hostile node files: exit 1 with located problems, never a traceback or
"bug in bootgen", never a change to the live tree; alias bombs and deep nesting finish at once."""
from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CORPUS = ROOT / "tests" / "corpus" / "invalid"

pytestmark = pytest.mark.timeout(120)


def _cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("BOOTGEN_DEBUG", None)
    return subprocess.run([sys.executable, "-m", "bootgen", *args], capture_output=True, text=True,
                          timeout=timeout, env=env)


def _tree(out: Path) -> tuple[str, dict[str, bytes]]:
    target = os.readlink(out)
    tree = out.resolve()
    return target, {str(p.relative_to(tree)): p.read_bytes() for p in sorted(tree.rglob("*")) if p.is_file()}


@pytest.fixture
def live(example):
    """The example built once: (link target, every file of the live tree)."""
    result = _cli("build", "--offline")
    assert result.returncode == 0, result.stderr
    return _tree(example.out)


def _refused(example, live, fmt: str = "text") -> tuple[subprocess.CompletedProcess, float]:
    started = time.perf_counter()
    result = _cli("build", "--offline", "--format", fmt)
    elapsed = time.perf_counter() - started
    assert result.returncode == 1, result.stdout + result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    assert "bug in bootgen" not in result.stdout + result.stderr
    assert _tree(example.out) == live
    return result, elapsed


CASES = ["alias-bomb", "recursive-alias", "deep-nesting", "host-address", "trailing-newline",
         "secret-inline-key", "secret-user-data"]


@pytest.mark.parametrize("case", CASES)
def test_corpus_case_is_refused_from_the_command_line(example, live, case):
    source = CORPUS / f"{case}.yaml"
    (example.nodes / source.name).write_bytes(source.read_bytes())
    expected = [line[len("# expect: "):] for line in source.read_text().splitlines() if line.startswith("# expect: ")]
    result, _ = _refused(example, live)
    for line in expected:
        assert line in result.stderr


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_alias_bomb_is_refused_at_once_with_little_memory(example, live, fmt):
    (example.nodes / "alias-bomb.yaml").write_bytes((CORPUS / "alias-bomb.yaml").read_bytes())
    result, elapsed = _refused(example, live, fmt)
    assert elapsed < 10  # a whole process start; the check itself takes milliseconds (test_yaml_limits)
    assert resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss < 512 * 1024  # KiB: far from 4 GiB
    if fmt == "json":
        (problem,) = json.loads(result.stdout)["problems"]
        assert (problem["file"], problem["line"], problem["column"], problem["path"]) == (
            "nodes/alias-bomb.yaml", 11, 10, "$.vars.f[0]")


def test_nesting_that_crashed_the_yaml_composer(example, live):
    (example.nodes / "deep.yaml").write_text("interfaces:\n  - mac: 52:54:00:aa:00:90\nvars: " + "[" * 100_000 + "\n")
    result, _ = _refused(example, live)
    assert "nodes/deep.yaml:3:70: error: YAML nesting is deeper than 64 levels" in result.stderr


def test_a_node_file_name_with_a_trailing_newline(example, live):
    (example.nodes / "web\n.yaml").write_text("interfaces:\n  - mac: 52:54:00:aa:00:91\n")
    result, _ = _refused(example, live)
    assert "is not a valid node name" in result.stderr


KEY_BODY = "b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZW"


def test_secrets_are_never_echoed(example, live):
    (example.nodes / "secret-inline-key.yaml").write_bytes((CORPUS / "secret-inline-key.yaml").read_bytes())
    (example.nodes / "u.yaml").write_text(
        "profile: ubuntu-autoinstall\ninterfaces:\n  - mac: 52:54:00:aa:00:92\ncloud_init:\n"
        "  password_hash: hunter1\n  user_data:\n    identity: {username: ops, password: hunter2}\n"
        "    user-data:\n      users:\n        - {name: a, plain_text_passwd: 'hunter3'}\n"
        "        - name: b\n          passwd: \"hunter4\"  # oops\n")
    for fmt in ("text", "json"):
        result, _ = _refused(example, live, fmt)
        output = result.stdout + result.stderr
        assert "hunter" not in output and KEY_BODY not in output and "MIIEowIBAAK" not in output
        assert output.count("nodes/u.yaml:") == (3 if fmt == "text" else 0)


def test_a_chpasswd_entry_is_not_echoed(example, live):
    (example.nodes / "u.yaml").write_text(
        "profile: ubuntu-autoinstall\ninterfaces:\n  - mac: 52:54:00:aa:00:93\ncloud_init:\n"
        "  user_data:\n    user-data:\n      chpasswd:\n        list:\n          - root:hunter5\n")
    result, _ = _refused(example, live)
    assert "nodes/u.yaml:9:13: error at $.cloud_init.user_data.user-data.chpasswd.list[0]" in result.stderr
    assert "hunter5" not in result.stderr
