"""The command line: exit codes, problem formats, and no tracebacks for users."""
import json
import subprocess
import sys

from click.testing import CliRunner

from bootgen import __version__
from bootgen.cli import main


def _run(*args):
    return CliRunner().invoke(main, list(args))


def test_version():
    result = _run("--version")
    assert result.exit_code == 0 and __version__ in result.output


def test_build_then_check(example):
    result = _run("build")
    assert result.exit_code == 0, result.output
    assert "files for 7 nodes -> build" in result.output
    # The example's Ubuntu node refers to a secret: one line says how its files are protected.
    assert result.output.splitlines()[1] == (
        "4 files carry secrets: left out of the public index (manifest.json, index/), under keyed-hash paths, "
        "served by nginx only to their node's addresses (server/nginx-secrets.conf); "
        "publish to S3 needs --allow-secrets")
    build_id = result.output.splitlines()[0].split("build ")[-1].split()[0]
    assert _run("build").output.splitlines()[0].endswith(f"unchanged (build {build_id})")
    assert _run("check").exit_code == 0


def test_check_writes_nothing(example):
    assert _run("check").exit_code == 0
    assert not example.out.exists()


def test_user_error_exits_1_with_every_problem(example):
    (example.nodes / "bad.yaml").write_text("hostnme: x\ninterfaces:\n  - mac: nope\n")
    result = _run("check")
    assert result.exit_code == 1
    assert "nodes/bad.yaml:1:1: error at $.hostnme: unknown field 'hostnme'" in result.output
    assert "nodes/bad.yaml:3:10: error at $.interfaces[0].mac: 'nope' is not a MAC address" in result.output
    assert "  | hostnme: x\n  | ^" in result.output  # the source line and a caret
    assert "2 problems found" in result.output
    assert "Traceback" not in result.output


def test_json_problems_for_editors(example):
    (example.nodes / "bad.yaml").write_text("interfaces:\n  - mac: nope\n")
    result = _run("check", "--format", "json")
    assert result.exit_code == 1
    problems = json.loads(result.stdout)["problems"]
    assert problems == [{"file": "nodes/bad.yaml", "line": 2, "column": 10, "path": "$.interfaces[0].mac",
                         "message": "'nope' is not a MAC address (write aa:bb:cc:dd:ee:ff, AA-BB-CC-DD-EE-FF or "
                                    "aabb.ccdd.eeff)", "hint": ""}]


def test_usage_error_exits_2(example):
    assert _run("build", "--no-such-option").exit_code == 2
    assert _run("build", "--format", "xml").exit_code == 2


def test_missing_site_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = _run("build")
    assert result.exit_code == 1
    assert "site/site.yaml: error: site file not found" in result.output
    assert "nodes: error: nodes directory not found" in result.output


def test_template_error_names_template_line_and_node(example):
    templates = example.site / "templates"
    templates.mkdir()
    (templates / "node.ipxe.j2").write_text("#!ipxe\n# fine\nchain {{ no_such_variable }}\n")
    result = _run("build")
    assert result.exit_code == 1
    assert "site/templates/node.ipxe.j2:3:1: error: undefined variable: 'no_such_variable' is undefined " \
           "(rendering node 'coreos-f786')" in result.output
    assert not example.out.exists()


def test_kernel_arg_template_error_points_at_the_argument(example):
    profile = example.site / "profiles" / "flatcar-install.yaml"
    profile.write_text(profile.read_text().replace("{{ config_url }}", "{{ config_ur }}"))
    result = _run("check")
    assert result.exit_code == 1
    assert "site/profiles/flatcar-install.yaml:11:5: error at $.kernel_args[1]: in template " \
           "'ignition.config.url={{ config_ur }}': undefined variable: 'config_ur' is undefined" in result.output


def test_runs_as_a_module(example):
    done = subprocess.run([sys.executable, "-m", "bootgen", "check"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr


def test_check_lists_invalid_nodes_and_template_problems_together(example):
    """`check` reports everything `build` does: a node that fails its schema does not hide a
    template problem in another node."""
    (example.nodes / "bad.yaml").write_text("hostnme: x\ninterfaces:\n  - mac: 52:54:00:00:00:99\n")
    node = example.nodes / "node-2.yaml"
    node.write_text(node.read_text() + "kernel_args: ['x={{ nosuchvar }}']\n")
    check = _run("check", "--format", "json")
    build = _run("build", "--format", "json")
    assert check.exit_code == build.exit_code == 1
    check_problems = json.loads(check.stdout)["problems"]
    assert [p["file"] for p in check_problems] == ["nodes/bad.yaml", "nodes/node-2.yaml"]
    assert check_problems == json.loads(build.stdout)["problems"]


def test_internal_error_in_json_mode_prints_json(example, monkeypatch):
    import bootgen.build

    def broken(*args, **kwargs):
        raise ZeroDivisionError("boom")

    monkeypatch.setattr(bootgen.build, "build", broken)
    result = _run("build", "--format", "json")
    assert result.exit_code == 3
    assert json.loads(result.stdout) == {"internal_error": "internal error: ZeroDivisionError: boom"}


def test_sums_prints_sha256sums_that_sha256sum_checks(example):
    assert _run("build").exit_code == 0
    printed = _run("sums")
    assert printed.exit_code == 0
    lines = printed.output.splitlines()
    assert [line[66:] for line in lines] == sorted(line[66:] for line in lines)  # path order
    tree = example.out.resolve()
    shards = "".join(p.read_text() for p in sorted((tree / "index").glob("*.sha256")))
    assert sorted(shards.splitlines()) == sorted(lines)
    checks = (("sha256sum --quiet -c", printed.output), ("cat index/*.sha256 | sha256sum --quiet -c", None))
    for command, given in checks:
        done = subprocess.run(command, shell=True, input=given, cwd=example.out, capture_output=True, text=True,
                              timeout=60)
        assert done.returncode == 0, done.stdout + done.stderr
    changed = example.out / "boot.ipxe"
    changed.unlink()  # a hard link shared with the kept tree: replaced, never written in place
    changed.write_text("#!ipxe\nchanged by hand\n")
    for given in (_run("sums").output, shards):
        done = subprocess.run(["sha256sum", "--quiet", "-c"], input=given, cwd=example.out, capture_output=True,
                              text=True, timeout=60)
        assert done.returncode == 1 and "boot.ipxe: FAILED" in done.stdout


def test_sums_of_a_directory_without_an_index_exits_1(tmp_path):
    result = _run("sums", str(tmp_path))
    assert result.exit_code == 1 and "no manifest.json in the tree" in result.output
