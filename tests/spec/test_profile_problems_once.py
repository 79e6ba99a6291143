"""A mistake in a layer many nodes share is reported once, at its own file and line."""
from __future__ import annotations

import pytest
import yaml

from bootgen.build import build, plan_build
from bootgen.errors import BootgenError


def _profile_typo(example) -> None:
    path = example.site / "profiles" / "flatcar-install.yaml"
    data = yaml.safe_load(path.read_text())
    data["ignition"] = {"storage": {"filez": [{"path": "/etc/motd"}]}}
    path.write_text(yaml.safe_dump(data, sort_keys=False))


def _add_nodes(example, count: int) -> None:
    for i in range(count):
        (example.nodes / f"extra-{i}.yaml").write_text(
            f"interfaces:\n  - mac: 52:54:00:aa:00:{i:02x}\n")


@pytest.mark.parametrize("run", ["check", "build"])
def test_profile_typo_used_by_many_nodes_is_one_problem(example, run):
    _add_nodes(example, 40)
    _profile_typo(example)
    with pytest.raises(BootgenError) as err:
        (plan_build if run == "check" else build)(example, fetch=False)
    problems = err.value.problems
    assert len(problems) == 1, [p.format() for p in problems]
    assert problems[0].location.file == "site/profiles/flatcar-install.yaml"
    assert problems[0].location.line > 0
    assert "filez" in problems[0].format()


def test_bad_password_hash_in_profile_is_one_problem(example):
    path = example.site / "profiles" / "ubuntu-autoinstall.yaml"
    data = yaml.safe_load(path.read_text())
    data["cloud_init"]["password_hash"] = "not-a-hash"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    for i in range(5):
        (example.nodes / f"ubuntu-{i}.yaml").write_text(
            f"profile: ubuntu-autoinstall\ninterfaces:\n  - mac: 52:54:00:bb:00:{i:02x}\n")
    node = example.nodes / "ubuntu-4f62c7.yaml"
    node_data = yaml.safe_load(node.read_text())
    del node_data["cloud_init"]
    node.write_text(yaml.safe_dump(node_data, sort_keys=False))
    with pytest.raises(BootgenError) as err:
        build(example, fetch=False)
    problems = err.value.problems
    assert len(problems) == 1, [p.format() for p in problems]
    assert str(problems[0].location).startswith("site/profiles/ubuntu-autoinstall.yaml:")
    assert problems[0].path == "$.cloud_init.password_hash"
