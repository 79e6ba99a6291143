"""Environments, releases, rollback and publish's choice of tree, through the command line."""
from __future__ import annotations

import json
import os
import subprocess

from click.testing import CliRunner

from bootgen.cli import main

ENVIRONMENTS = """environments:
  lab:
    base_url: http://10.0.0.5:8080/
    publish: {docroot}
  prod:
    base_url: https://boot.example.com/fleet/
    publish: s3://boot-prod/fleet
"""


def _run(*args):
    return CliRunner().invoke(main, list(args))


def _ok(*args) -> str:
    result = _run(*args)
    assert result.exit_code == 0, (args, result.output)
    return result.output


def _declare(example, text: str) -> None:
    site_yaml = example.site / "site.yaml"
    site_yaml.write_text(site_yaml.read_text().replace("tftp_server: 10.0.0.5\n", "tftp_server: 10.0.0.5\n" + text, 1))


def _edit_node(example, i: int) -> None:
    (example.nodes / "node-2.yaml").write_text(
        f"hostname: node-2\ninterfaces:\n  - mac: 00:1e:06:45:0a:02\nkernel_args: [round={i}]\n")


def test_each_environment_has_its_own_link_and_base_url(example, tmp_path):
    _declare(example, ENVIRONMENTS.format(docroot=tmp_path / "www"))
    _ok("build", "--offline", "--env", "prod")
    assert os.readlink("build-prod").startswith(".bootgen/env/prod/builds/")
    assert "https://boot.example.com/fleet/ipxe/" in open("build-prod/boot.ipxe").read()
    assert not example.out.exists()
    _ok("build", "--offline")  # no --env: the site's own base_url, behind build/ as before
    assert "http://10.0.0.5:8080/ipxe/" in (example.out / "boot.ipxe").read_text()
    assert os.readlink("build").startswith(".bootgen/builds/")
    assert _ok("check", "--env", "lab").startswith("ok:")


def test_an_unknown_environment_lists_the_declared_ones(example, tmp_path):
    _declare(example, ENVIRONMENTS.format(docroot=tmp_path / "www"))
    result = _run("build", "--offline", "--env", "staging")
    assert result.exit_code == 1
    assert "site/site.yaml:6:1: error at $.environments: unknown environment 'staging'" in result.output
    assert "hint: declared environments: lab, prod" in result.output
    assert not os.path.lexists("build-staging")


def test_no_environments_declared_says_how_to_declare_one(example):
    result = _run("build", "--offline", "--env", "lab")
    assert result.exit_code == 1
    assert "unknown environment 'lab'" in result.output and "declares no environments" in result.output


def test_environment_schema_errors_name_file_line_column_and_field(example):
    _declare(example, "environments:\n  lab:\n    base_url: ftp://10.0.0.5/\n    publsh: /srv/x\n"
                      "  prod:\n    publish: srv/relative\n  Bad_Name:\n    base_url: http://x/\n")
    result = _run("check", "--format", "json")
    assert result.exit_code == 1
    problems = {(p["line"], p["column"], p["path"], p["message"]) for p in json.loads(result.stdout)["problems"]}
    assert (8, 15, "$.environments.lab.base_url", "'ftp://10.0.0.5/' is not an http:// or https:// URL") in problems
    assert (9, 5, "$.environments.lab.publsh", "unknown field 'publsh'") in problems
    assert (11, 5, "$.environments.prod", "missing required field 'base_url'") in problems
    assert any(p[2] == "$.environments.prod.publish" and "is not a publish destination" in p[3] for p in problems)
    assert len(problems) == 4, problems  # the name is checked once the schema passes
    _declare(example, "")
    (example.site / "site.yaml").write_text((example.site / "site.yaml").read_text().replace(
        "  lab:\n    base_url: ftp://10.0.0.5/\n    publsh: /srv/x\n  prod:\n    publish: srv/relative\n", ""))
    named = _run("check")
    assert named.exit_code == 1
    assert "site/site.yaml:7:3: error at $.environments.Bad_Name: environment name 'Bad_Name' is not valid" \
        in named.output


def test_releases_record_time_commit_and_what_changed(example):
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@example.com"]
    subprocess.run(["git", "init", "-q"], check=True, timeout=30)
    subprocess.run(["git", "add", "site", "nodes"], check=True, timeout=30)
    subprocess.run([*git, "commit", "-qm", "site"], check=True, timeout=30)
    head = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True,
                          timeout=30).stdout.strip()
    _ok("build", "--offline")
    _edit_node(example, 1)
    _ok("build", "--offline")
    releases = json.loads(_ok("releases", "--format", "json"))["releases"]
    assert [r["live"] for r in releases] == [True, False]
    newest, first = releases
    assert first["commit"] == head and not first["dirty"]
    assert newest["commit"] == head and newest["dirty"]  # node-2 edited, not committed
    assert newest["parent"] == first["build_id"] and newest["rendered"] == ["node-2"]
    assert newest["changed_files"] > 0 and newest["built_at"] >= first["built_at"]
    text = _ok("releases").splitlines()
    assert text[0].startswith(f"* {newest['build_id'][:12]}") and f"{head[:10]}+dirty" in text[0]
    assert "files changed (nodes: node-2)" in text[0] and "built from scratch (7 nodes)" in text[1]


def test_rollback_goes_back_one_build_at_a_time_and_by_id(example):
    ids = []
    for i in range(4):
        _edit_node(example, i)
        _ok("build", "--offline")
        ids.append(os.path.basename(os.readlink("build")))
    listed = [r["build_id"] for r in json.loads(_ok("releases", "--format", "json"))["releases"]]
    assert listed == ids[::-1][:3]
    assert ids[2][:12] in _ok("rollback")
    assert os.path.basename(os.readlink("build")) == ids[2]
    _ok("rollback")  # again: further back, not forth
    assert os.path.basename(os.readlink("build")) == ids[1]
    _ok("rollback", ids[3][:8])
    assert os.path.basename(os.readlink("build")) == ids[3]
    missing = _run("rollback", "0000")
    assert missing.exit_code == 1 and "is not a kept release" in missing.output and ids[3][:12] in missing.output
    _ok("rollback", ids[1][:12])
    _edit_node(example, 9)
    _ok("build", "--offline")  # a build after a rollback builds the current inputs
    assert "round=9" in (example.out / "pxelinux.cfg" / "01-00-1e-06-45-0a-02").read_text()


def test_publish_refuses_a_stale_tree_and_publishes_a_named_release(example, tmp_path):
    www = tmp_path / "www"
    _edit_node(example, 1)
    _ok("build", "--offline")
    first = os.path.basename(os.readlink("build"))
    _edit_node(example, 2)
    _ok("build", "--offline")
    _edit_node(example, 3)  # edited, not built
    stale = _run("publish", str(www))
    assert stale.exit_code == 1 and "the inputs changed since build" in stale.output
    assert "`bootgen build` and `bootgen publish`" in stale.output and not www.exists()
    _ok("publish", str(www), "--release", first[:12])
    assert "round=1" in (www / "current" / "pxelinux.cfg" / "01-00-1e-06-45-0a-02").read_text()
    nowhere = _run("publish")
    assert nowhere.exit_code == 1 and "no destination to publish to" in nowhere.output


def test_publishing_an_environment_never_built_says_how_to_build_it(example, tmp_path):
    _declare(example, ENVIRONMENTS.format(docroot=tmp_path / "www"))
    result = _run("publish", "--env", "lab")
    assert result.exit_code == 1, result.output
    assert "build-lab: error: no built tree here" in result.output and "`bootgen build --env lab`" in result.output
    assert not (tmp_path / "www").exists()


def test_a_tree_named_from_another_directory_is_checked_against_its_own_inputs(example, tmp_path, monkeypatch):
    """`publish DEST --tree PATH` run elsewhere compares the tree with the site it was built from,
    not with whatever site/ and nodes/ the current directory holds."""
    _ok("build", "--offline")
    repo, www = os.getcwd(), tmp_path / "www"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # no site/ or nodes/ here
    _ok("publish", str(www), "--tree", os.path.join(repo, "build"))
    _edit_node_at(repo, 1)
    stale = _run("publish", str(tmp_path / "www2"), "--tree", os.path.join(repo, "build"))
    assert stale.exit_code == 1 and "the inputs changed since build" in stale.output
    assert not (tmp_path / "www2").exists()


def _edit_node_at(repo: str, i: int) -> None:
    path = os.path.join(repo, "nodes", f"node-{i}.yaml")
    with open(path, "a") as node:
        node.write("# edited\n")


def test_an_environment_link_pointed_at_another_outputs_tree_is_built_anew(example, tmp_path):
    """`--out build-lab` without `--env` makes a plain tree; `build --env lab` (same base_url, so the
    same build id) must then build the environment's own tree, not call that one unchanged."""
    _declare(example, "environments:\n  lab:\n    base_url: http://10.0.0.5:8080/\n"
                      f"    publish: {tmp_path / 'www'}\n")
    _ok("build", "--offline", "--out", "build-lab")
    plain = os.readlink("build-lab")
    assert plain.startswith(".bootgen/builds/")
    said = _ok("build", "--offline", "--env", "lab")
    assert "unchanged" not in said
    assert os.readlink("build-lab").startswith(".bootgen/env/lab/builds/")
    _ok("publish", "--env", "lab")  # its own environment's tree: published
    assert (tmp_path / "www" / "current" / "boot.ipxe").is_file()
