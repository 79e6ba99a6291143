"""One repository, two environments: `lab` published to a docroot served by real nginx, `prod` to a
bucket on real SeaweedFS. Each tree must send machines to its own server only, and everything it
names must be fetchable through that server. Then rollback and publish, and the refusals."""
from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from publish_servers import free_port, http_get, start_nginx

from bootgen.cli import main
from bootgen.publish import render_nginx_server

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "e2e"))
import sites  # noqa: E402  (the e2e test sites: a mirrored local kernel and initrd)

NODE = sites.NodeSpec("env-node", "52:54:00:e2:0e:01")
URL = re.compile(r"https?://[^\s\"']+")


def _cli(*args: str):
    result = CliRunner().invoke(main, list(args))
    return result


def _ok(*args: str) -> str:
    result = _cli(*args)
    assert result.exit_code == 0, (args, result.output)
    return result.output


@pytest.fixture
def repo(tmp_path, monkeypatch, bucket, seaweed):
    """site/ and nodes/ with `lab` (nginx on a docroot) and `prod` (a bucket) environments, and nginx."""
    (tmp_path / "vmlinuz").write_bytes(b"MZ fake kernel for URL checks\n" * 100)
    (tmp_path / "initrd.img").write_bytes(b"fake initrd\n" * 100)
    spec = sites.SiteSpec("http://192.0.2.1/", "192.0.2.1", "http")
    sites.write_site(tmp_path, spec, (NODE,), tmp_path / "vmlinuz", tmp_path / "initrd.img")
    port = free_port()
    docroot = tmp_path / "www"
    site_yaml = tmp_path / "site" / "site.yaml"
    data = yaml.safe_load(site_yaml.read_text())
    data["environments"] = {
        "lab": {"base_url": f"http://127.0.0.1:{port}/", "publish": str(docroot)},
        "prod": {"base_url": f"{seaweed.endpoint}/{bucket}/prod/", "publish": f"s3://{bucket}/prod",
                 "endpoint_url": seaweed.endpoint},
    }
    site_yaml.write_text(yaml.safe_dump(data, sort_keys=False))
    monkeypatch.chdir(tmp_path)
    nginx = start_nginx(tmp_path / "nginx", render_nginx_server(docroot, listen=f"127.0.0.1:{port}"), port)
    yield tmp_path, data["environments"]
    nginx.stop()


def _fetch(url: str) -> bytes:
    status, _, body = http_get(url)
    assert status == 200, (url, status)
    return body


def _walk_urls(base: str, tree: Path) -> dict[str, bytes]:
    """Follow what a machine follows from boot.ipxe: the chain, its per-node script and every URL
    in it (kernel, initrd, config). Each must be under `base` and serve the tree's bytes."""
    fetched = {}
    boot = _fetch(base + "boot.ipxe").decode()
    assert boot == (tree / "boot.ipxe").read_text()
    chains = [u.replace("${mac:hexhyp}", NODE.mac.replace(":", "-")) for u in URL.findall(boot)]
    assert chains and all(u.startswith(base) for u in chains), boot
    script = _fetch(chains[0]).decode()
    fetched[chains[0]] = script.encode()
    urls = URL.findall(script)
    kinds = {"kernel": False, "initrd": False, "config": False}
    for url in urls:
        assert url.startswith(base), f"{url} is not under {base}:\n{script}"
        path = url[len(base):]
        assert _fetch(url) == (tree / path).read_bytes(), url
        kinds["kernel"] |= "vmlinuz" in path
        kinds["initrd"] |= "initrd" in path
        kinds["config"] |= path.startswith("configs/")
        fetched[url] = b""
    assert all(kinds.values()), (kinds, script)
    return fetched


def test_each_environment_is_published_to_its_own_server_and_names_only_it(repo):
    workdir, envs = repo
    for env in ("lab", "prod"):
        _ok("build", "--env", env, "--offline")
        _ok("publish", "--env", env)
    for env, other in (("lab", "prod"), ("prod", "lab")):
        tree = workdir / f"build-{env}"
        urls = _walk_urls(envs[env]["base_url"], tree)
        assert not any(u.startswith(envs[other]["base_url"]) for u in urls)
        assert envs[other]["base_url"] not in (tree / "server" / "dnsmasq.conf").read_text()
        assert f"{envs[env]['base_url']}boot.ipxe" in (tree / "server" / "dnsmasq.conf").read_text()
    assert not (workdir / "build").exists(), "building environments must leave the default output alone"


@pytest.mark.parametrize("env", ["lab", "prod"])
def test_rollback_then_publish_serves_the_previous_tree(repo, env):
    workdir, envs = repo
    base = envs[env]["base_url"]
    node_file = workdir / "nodes" / f"{NODE.name}.yaml"
    _ok("build", "--env", env, "--offline")
    _ok("publish", "--env", env)
    first = _walk_urls(base, workdir / f"build-{env}")
    node_file.write_text(node_file.read_text().replace("bootgen.node=env-node", "bootgen.node=env-node round=2"))
    _ok("build", "--env", env, "--offline")
    _ok("publish", "--env", env)
    second = _walk_urls(base, workdir / f"build-{env}")
    assert b"round=2" in next(iter(second.values())) and b"round=2" not in next(iter(first.values()))
    listed = _ok("releases", "--env", env).splitlines()
    assert len(listed) == 2 and listed[0].startswith("*"), listed
    out = _ok("rollback", "--env", env)
    assert listed[1].split()[0] in out
    _ok("publish", "--env", env)  # a rolled-back tree is published as chosen, though the inputs moved on
    assert next(iter(_walk_urls(base, workdir / f"build-{env}").values())) == next(iter(first.values()))


def test_publish_refuses_a_stale_tree_and_another_environments_tree(repo):
    workdir, envs = repo
    _ok("build", "--env", "lab", "--offline")
    _ok("build", "--env", "prod", "--offline")
    wrong = _cli("publish", "--env", "prod", "--tree", "build-lab")
    assert wrong.exit_code == 1 and "built for environment 'lab', not 'prod'" in wrong.output
    assert "`bootgen build --env prod`" in wrong.output
    node_file = workdir / "nodes" / f"{NODE.name}.yaml"
    node_file.write_text(node_file.read_text() + "# edited after the build\n")
    stale = _cli("publish", "--env", "lab")
    assert stale.exit_code == 1, stale.output
    assert "the inputs changed since build" in stale.output and "`bootgen build --env lab`" in stale.output
    assert not (workdir / "www").exists(), "a refused publish wrote to the docroot"
    assert "Traceback" not in stale.output + wrong.output
    _ok("build", "--env", "lab", "--offline")
    _ok("publish", "--env", "lab")
    _walk_urls(envs["lab"]["base_url"], workdir / "build-lab")
