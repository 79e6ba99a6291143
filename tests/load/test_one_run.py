"""A first draft's mistakes arrive in one run: a broken site file or profile does not hide the
node files' own problems, in `check` and in `build` alike."""
from __future__ import annotations

import pytest
from click.testing import CliRunner

from bootgen.cli import main

DRAFT = {
    "node-1.yaml": "interfaces:\n  - mac: 52:54:00:12:34:56\n   address: 10.0.0.70/24\n",  # bad indentation
    "node-2.yaml": "hostnme: node-2\ninterfaces:\n  - mac: 52:54:00:12:34:57\n",  # schema
    "node-3.yaml": "profile: flatcar\ninterfaces:\n  - mac: 52:54:00:12:34:58\n"  # unknown profile, gateway
                   "    gateway: 10.0.0.1\n    address: 10.0.1.7/24\n",
}
NODE_PROBLEMS = [
    "nodes/node-1.yaml:3:4: error: invalid YAML: did not find expected '-' indicator",
    "nodes/node-2.yaml:1:1: error at $.hostnme: unknown field 'hostnme'",
    "nodes/node-3.yaml:1:10: error at $.profile: unknown profile 'flatcar'",
    "nodes/node-3.yaml:4:14: error at $.interfaces[0].gateway: gateway 10.0.0.1 is outside 10.0.1.0/24",
]


@pytest.fixture
def draft(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert CliRunner().invoke(main, ["init", "."], env={"HOME": str(tmp_path)}).exit_code == 0
    for name, text in DRAFT.items():
        (tmp_path / "nodes" / name).write_text(text)
    return tmp_path


def _errors(command: str) -> list[str]:
    result = CliRunner().invoke(main, [command])
    assert result.exit_code == 1 and "Traceback" not in result.output
    return [line for line in result.output.splitlines() if ": error" in line]


@pytest.mark.parametrize("command", ["check", "build"])
def test_three_node_draft_reports_every_mistake_at_once(draft, command):
    assert _errors(command) == NODE_PROBLEMS


@pytest.mark.parametrize("command", ["check", "build"])
def test_a_broken_profile_does_not_hide_node_problems(draft, command):
    (draft / "site" / "profiles" / "broken.yaml").write_text("images: flatcar-stable\nos_config: [\n")
    assert _errors(command) == NODE_PROBLEMS + [
        "site/profiles/broken.yaml:3:1: error: invalid YAML: did not find expected node content"]


@pytest.mark.parametrize("command", ["check", "build"])
def test_a_broken_site_file_does_not_hide_node_problems(draft, command):
    site = draft / "site" / "site.yaml"
    site.write_text(site.read_text().replace("tftp_server: 10.0.0.5", "tftp_server: ten"))
    errors = _errors(command)
    assert errors[:4] == NODE_PROBLEMS and len(errors) == 5 and errors[4].startswith("site/site.yaml:")
    assert not (draft / "build").exists()


def test_unknown_profile_says_which_file_to_create_and_what_exists(draft):
    result = CliRunner().invoke(main, ["check"])
    assert ("hint: did you mean 'flatcar-install'? To add it, create site/profiles/flatcar.yaml (a copy of an "
            "existing profile is a good start); profiles now: fcos-install, flatcar-install, ubuntu-autoinstall"
            ) in result.output
    (draft / "nodes" / "node-3.yaml").write_text("profile: windows\ninterfaces:\n  - mac: 52:54:00:12:34:58\n")
    result = CliRunner().invoke(main, ["check"])
    assert "hint: To add it, create site/profiles/windows.yaml" in result.output


def test_a_broken_profile_does_not_hide_another_profiles_unknown_image_set(draft):
    for name in DRAFT:
        (draft / "nodes" / name).unlink()
    (draft / "site" / "profiles" / "broken.yaml").write_text("images: flatcar-stable\nos_config: [\n")
    fcos = draft / "site" / "profiles" / "fcos-install.yaml"
    fcos.write_text(fcos.read_text().replace("images: fcos-stable", "images: fcos-next"))
    assert _errors("check") == [
        "site/profiles/broken.yaml:3:1: error: invalid YAML: did not find expected node content",
        "site/profiles/fcos-install.yaml:4:9: error at $.images: unknown image set 'fcos-next'",
    ]
