"""Secret references: {secret:}, {env:}, {command:} in input files; what a missing or unusable
one reports; and that a value never reaches problems, explain, state or the public listing."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from click.testing import CliRunner

from bootgen import secrets
from bootgen.build import build
from bootgen.cli import main
from bootgen.secrets_tree import secret_paths
from bootgen.errors import BootgenError
from bootgen.publish.manifest import load_tree

NODE = Path("nodes/ubuntu-4f62c7.yaml")
REFERENCE = "{secret: ubuntu_password_hash}"


def _problems(paths) -> list[str]:
    with pytest.raises(BootgenError) as caught:
        build(paths, fetch=False)
    return [problem.format() for problem in caught.value.problems]


def _write_secrets(path: Path, text: str, mode: int = 0o600) -> Path:
    path.write_text(text)
    path.chmod(mode)
    return path


def test_a_missing_secret_is_an_error_at_the_reference(example):
    NODE.write_text(NODE.read_text().replace(REFERENCE, "{secret: no_such_name}"))
    problems = _problems(example)
    assert len(problems) == 1
    assert problems[0].startswith("nodes/ubuntu-4f62c7.yaml:13:18: error at $.cloud_init.password_hash: "
                                  "no secret 'no_such_name' in the secrets file")


def test_no_secrets_file(example, monkeypatch, tmp_path):
    monkeypatch.setenv("BOOTGEN_SECRETS", "")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "empty"))
    assert _problems(example) == [
        "nodes/ubuntu-4f62c7.yaml:13:18: error at $.cloud_init.password_hash: no secrets file: pass --secrets FILE "
        "or set BOOTGEN_SECRETS\n  hint: keep it outside the repository, readable by you only (chmod 600)"]


def test_a_secrets_file_others_can_read_is_refused(example, example_secrets, monkeypatch, tmp_path):
    loose = _write_secrets(tmp_path.parent / f"{tmp_path.name}-loose.yaml", example_secrets.read_text(), 0o640)
    monkeypatch.setenv("BOOTGEN_SECRETS", str(loose))
    (problem,) = _problems(example)
    assert f"the secrets file {loose} can be read by others (mode 0640)" in problem
    assert "$6$" not in problem


def test_a_secrets_file_inside_the_repository_is_refused(example, example_secrets, monkeypatch):
    inside = _write_secrets(Path("secrets.yaml").resolve(), example_secrets.read_text())
    monkeypatch.setenv("BOOTGEN_SECRETS", str(inside))
    (problem,) = _problems(example)
    assert f"the secrets file {inside} is inside the repository" in problem


def test_a_secrets_file_of_the_wrong_shape_is_refused_without_quoting_it(example, monkeypatch, tmp_path):
    bad = _write_secrets(tmp_path.parent / f"{tmp_path.name}-bad.yaml", "secrets: [hunter2-is-my-password]\n")
    monkeypatch.setenv("BOOTGEN_SECRETS", str(bad))
    (problem,) = _problems(example)
    assert "is not in the expected shape" in problem and "hunter2" not in problem


def test_env_reference(example, monkeypatch, example_secrets):
    import yaml

    value = yaml.safe_load(example_secrets.read_text())["secrets"]["ubuntu_password_hash"]
    monkeypatch.setenv("UBUNTU_HASH", value)
    NODE.write_text(NODE.read_text().replace(REFERENCE, "{env: UBUNTU_HASH}"))
    result = build(example, fetch=False)
    user_data = next(result.write.tree.glob("configs/*/*/user-data"))
    assert value in user_data.read_text() and "ubuntu" not in user_data.parent.parent.name
    monkeypatch.delenv("UBUNTU_HASH")
    secrets.reset()
    (problem,) = _problems(example)
    assert "environment variable UBUNTU_HASH is not set" in problem


def _command_site(example, tmp_path, argv: list[str], allow: list[str]) -> Path:
    secrets_file = _write_secrets(tmp_path.parent / f"{tmp_path.name}-cmd.yaml",
                                  f"secrets: {{}}\nallow_commands: {json.dumps(allow)}\n")
    os.environ["BOOTGEN_SECRETS"] = str(secrets_file)
    NODE.write_text(NODE.read_text().replace(REFERENCE, "{command: " + json.dumps(argv) + "}"))
    return secrets_file


@pytest.fixture
def restore_env(example_secrets):
    yield
    os.environ["BOOTGEN_SECRETS"] = str(example_secrets)


def test_command_reference_runs_an_allowed_program_without_a_shell(example, tmp_path, restore_env):
    value = "$6$r5BaaYkys3XBVgNs$Il5bJI//lEMZmj6zNvVY2l1ZKOcmOGuF5XvjX9QoCKlyJZS8v/YWNwf.C9kVvfqbAeqYguXWn1SablhvwT9NI/"
    _command_site(example, tmp_path, ["printf", "%s\\n", value], ["printf"])
    result = build(example, fetch=False)
    assert value in next(result.write.tree.glob("configs/*/*/user-data")).read_text()


@pytest.mark.parametrize("argv,allow,message", [
    (["false"], ["false"], "command 'false' exited with status 1"),
    (["sh", "-c", "echo not-this >&2; exit 3"], ["sh"], "command 'sh' exited with status 3: not-this"),
    (["printf", "x"], [], "command 'printf' is not allowed by the secrets file"),
    (["/nonexistent/prog"], ["/nonexistent/prog"], "cannot run '/nonexistent/prog'"),
    (["sh", "-c", "head -c 70000 /dev/zero | tr '\\\\0' a"], ["sh"], "printed more than 65536 bytes"),
])
def test_command_reference_failures_are_input_errors(example, tmp_path, restore_env, argv, allow, message):
    _command_site(example, tmp_path, argv, allow)
    (problem,) = _problems(example)
    assert problem.startswith("nodes/ubuntu-4f62c7.yaml:13:18: error at $.cloud_init.password_hash: ")
    assert message in problem


def test_command_reference_is_bounded_in_time(example, tmp_path, restore_env, monkeypatch):
    monkeypatch.setattr(secrets, "COMMAND_TIMEOUT", 0.5)
    _command_site(example, tmp_path, ["sleep", "30"], ["sleep"])
    (problem,) = _problems(example)
    assert "command 'sleep' did not finish within 0.5 s" in problem


def test_a_value_refused_by_its_field_is_not_quoted(example, tmp_path, restore_env):
    plain = _write_secrets(tmp_path.parent / f"{tmp_path.name}-plain.yaml",
                           'secrets:\n  ubuntu_password_hash: "hunter2-plaintext"\n')
    os.environ["BOOTGEN_SECRETS"] = str(plain)
    problems = "\n".join(_problems(example))
    assert "hunter2" not in problems and "password_hash" in problems


def test_the_value_is_nowhere_in_state_explain_or_the_public_listing(example, example_secrets):
    import yaml

    value = yaml.safe_load(example_secrets.read_text())["secrets"]["ubuntu_password_hash"].encode()
    result = build(example, fetch=False)
    NODE.write_text(NODE.read_text() + "\n")  # and an edit build, which reuses the records
    build(example, fetch=False)
    state = Path(".bootgen")
    served = state / "builds"
    leaked = [p for p in state.rglob("*") if p.is_file() and served not in p.parents and value in p.read_bytes()]
    assert leaked == []
    assert any(value in p.read_bytes() for p in served.rglob("user-data"))  # the tree itself has it, fenced
    tree = result.write.tree
    private = {p for p in secret_paths(tree) if p.endswith("user-data")}
    assert private
    for public in load_tree(tree).index_files():  # the public index: its root and shards
        assert not any(p.encode() in (tree / public).read_bytes() for p in private)
    explained = CliRunner().invoke(main, ["explain", "ubuntu-4f62c7"])
    assert explained.exit_code == 0 and value.decode() not in explained.output
    assert "cloud_init.password_hash = <secret ubuntu_password_hash>" in explained.output
    assert tree.is_dir()


def test_a_changed_secret_rebuilds_and_an_unchanged_one_does_not(example, example_secrets, tmp_path, restore_env):
    from bootgen.passwords import hash_password

    own = _write_secrets(tmp_path.parent / f"{tmp_path.name}-rotate.yaml", example_secrets.read_text())
    os.environ["BOOTGEN_SECRETS"] = str(own)
    first = build(example, fetch=False)
    assert not build(example, fetch=False).write.changed
    rotated = hash_password("rotated", salt="saltsaltsaltsalt")
    text = own.read_text()
    start = text.index('"$6$')
    own.write_text(text[:start] + f'"{rotated}"' + text[text.index('"', start + 1) + 1:])
    secrets.reset()  # a fresh process
    second = build(example, fetch=False)
    assert second.write.changed and second.write.build_id != first.write.build_id
    assert rotated in next(second.write.tree.glob("configs/*/*/user-data")).read_text()
    assert rotated.encode() not in Path(".bootgen/secret-refs.json").read_bytes()


@pytest.mark.parametrize("line,where", [
    ("hostname: {secret: ubuntu_password_hash}\n", "$.hostname"),
    ("profile: {env: HOME}\n", "$.profile"),
])
def test_a_reference_where_a_value_becomes_a_name_is_refused(example, line, where):
    text = NODE.read_text()
    key = line.split(":", 1)[0]
    kept = "".join(row for row in text.splitlines(keepends=True) if not row.startswith(key + ":"))
    NODE.write_text(kept + line)
    problems = _problems(example)
    assert any(f"error at {where}: a secret reference cannot stand here" in p for p in problems), problems
