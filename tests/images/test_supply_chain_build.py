"""Whole builds against a fault-injecting loopback server: `build/` holds no image byte that
was not verified, shares no inode with the image cache, and a failed build leaves the
previous tree exactly as it was (same link, same bytes, same inodes)."""
from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bootgen.build import Paths, build
from bootgen.errors import ImageError
from bootgen.images import FetchPolicy
from bootgen.publish.manifest import tree_sums

ROOT = Path(__file__).resolve().parents[2]
KERNEL = os.urandom(200_000)
NEW_KERNEL = os.urandom(200_000)

pytestmark = pytest.mark.timeout(120)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture(autouse=True)
def fast_fetch(monkeypatch):
    """Builds take their policy from the environment; keep retries short in tests."""
    real = FetchPolicy.from_env.__func__
    monkeypatch.setattr(FetchPolicy, "from_env", classmethod(
        lambda cls, **kw: real(cls, **{"attempts": 2, "backoff": 0.01, "connect_timeout": 2, "read_timeout": 5, **kw})))


class Lab:
    """The example site with a mirrored `lab` image set whose files come from the test server."""

    def __init__(self, root: Path, server, signer=None):
        self.root, self.server, self.signer = root, server, signer
        self.site_yaml = root / "site" / "site.yaml"
        self.original = self.site_yaml.read_text()
        (root / "site" / "profiles" / "lab.yaml").write_text("images: lab\nos_config: none\n")
        if signer is not None:
            signer.export("good", root / "site" / "keys" / "lab.asc")

    def publish(self, path: str, data: bytes) -> str:
        self.server.files["/" + path] = data
        if self.signer is not None:
            self.server.files["/" + path + ".sig"] = self.signer.sign("good", data)
        return self.server.url(path)

    def use(self, url: str, pin: bytes | None = None, extra: str = "", more: str = "") -> None:
        """Point the lab kernel at `url`: unsigned with the sha256 of `pin`, or signed by the lab key."""
        if pin is not None:
            kernel = f'{{url: "{url}", unsigned: true, sha256: "{sha(pin)}"{extra}}}'
        else:
            kernel = f'{{url: "{url}", signature: auto, keys: [lab]{extra}}}'
        block = f"  lab:\n    mirror: true\n    kernel: {kernel}\n{more}"
        text = self.original.replace("\nimages:\n", "\nimages:\n" + block, 1)
        if self.signer is not None:
            text += f"keys:\n  lab: {{file: keys/lab.asc, fingerprint: \"{self.signer.fingerprints['good']}\"}}\n"
        self.site_yaml.write_text(text)


def snapshot(paths: Paths) -> tuple:
    """The live link and every file of the live tree: bytes digest and inode."""
    tree = paths.out.resolve()
    files = {str(p.relative_to(tree)): (sha(p.read_bytes()), p.stat().st_ino)
             for p in sorted(tree.rglob("*")) if p.is_file()}
    return os.readlink(paths.out), files


def assert_tree_verified(paths: Paths, verified: list[bytes]) -> None:
    """The live tree passes its own SHA256SUMS lines, every image in it is one of the verified files
    under its own digest, and none of its files shares an inode with the image cache."""
    tree = paths.out.resolve()
    for line in tree_sums(tree).splitlines():
        digest, rel = line.split("  ", 1)
        assert sha((tree / rel).read_bytes()) == digest, rel
    images = [p for p in (tree / "images").rglob("*") if p.is_file()]
    assert images
    for image in images:
        data = image.read_bytes()
        assert data in verified, image
        assert image.parent.name == sha(data)[:16]
    cache = paths.state / "cache"
    cached = {(p.stat().st_dev, p.stat().st_ino) for p in cache.rglob("*") if p.is_file()}
    shared = [p for p in tree.rglob("*") if p.is_file() and (p.stat().st_dev, p.stat().st_ino) in cached]
    assert shared == []


def kernel_in_tree(paths: Paths) -> bytes:
    [kernel] = list(paths.out.resolve().glob("images/*/vmlinuz"))
    return kernel.read_bytes()


def failed_build_changes_nothing(paths: Paths, expected: str) -> str:
    before = snapshot(paths)
    with pytest.raises(ImageError) as excinfo:
        build(paths)
    assert expected in str(excinfo.value), str(excinfo.value)
    assert snapshot(paths) == before
    return str(excinfo.value)


@pytest.fixture
def lab(example, server) -> Lab:
    return Lab(Path.cwd(), server)


def test_tree_gets_verified_copies_never_links_into_the_cache(example, lab):
    lab.use(lab.publish("k/vmlinuz", KERNEL), pin=KERNEL)
    build(example)
    assert kernel_in_tree(example) == KERNEL
    assert_tree_verified(example, [KERNEL])


def test_installer_mirror_is_one_verified_copy_under_both_names(example, lab, server):
    installer = os.urandom(150_000)
    url = lab.publish("k/flatcar_production_image.bin.bz2", installer)
    lab.use(lab.publish("k/vmlinuz", KERNEL), pin=KERNEL,
            more=f'    version: 1.2.3\n    installer: {{url: "{url}", unsigned: true, sha256: "{sha(installer)}"}}\n')
    build(example)
    tree = example.out.resolve()
    served = [tree / "mirror" / "lab" / d / "flatcar_production_image.bin.bz2" for d in ("1.2.3", "current")]
    assert [p.read_bytes() for p in served] == [installer, installer]
    assert os.path.samefile(*served)  # one copy in the tree, under both names
    assert_tree_verified(example, [KERNEL])


def test_cache_rewritten_in_place_with_mtime_set_back_never_reaches_a_tree(example, lab, server):
    lab.use(lab.publish("k/vmlinuz", KERNEL), pin=KERNEL)
    build(example)
    [cached] = list((example.state / "cache" / "downloads").glob("*/vmlinuz"))
    before = cached.stat()
    with open(cached, "r+b") as handle:  # root ignores the read-only mode
        handle.write(os.urandom(len(KERNEL)))
    os.utime(cached, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert kernel_in_tree(example) == KERNEL  # the live tree has its own copy

    node = example.nodes / "node-2.yaml"
    node.write_text(node.read_text() + "kernel_args: [x=1]\n")
    before_tree = snapshot(example)
    with pytest.raises(ImageError, match="sha256 mismatch"):
        build(example, fetch=False)  # offline: the changed cache file is refused, not served
    assert snapshot(example) == before_tree

    build(example)  # fetching allowed: fetched again, verified, copied
    assert kernel_in_tree(example) == KERNEL
    assert_tree_verified(example, [KERNEL])
    assert len(server.requests_for("k/vmlinuz")) == 2


def test_redirect_chain_and_too_many_hops(example, lab, server):
    lab.publish("real/vmlinuz", KERNEL)
    server.redirects["/a/vmlinuz"] = (302, "/b/vmlinuz")
    server.redirects["/b/vmlinuz"] = (301, "/real/vmlinuz")
    lab.use(server.url("a/vmlinuz"), pin=KERNEL)
    build(example)
    assert_tree_verified(example, [KERNEL])

    for i in range(8):
        server.redirects[f"/hop{i}/vmlinuz"] = (302, f"/hop{i + 1}/vmlinuz")
    lab.use(server.url("hop0/vmlinuz"), pin=KERNEL)
    failed_build_changes_nothing(example, "more than 5 redirects")


def test_file_replaced_between_attempts_is_never_spliced(example, lab, server):
    lab.use(lab.publish("k/vmlinuz", KERNEL), pin=KERNEL)
    build(example)

    url = lab.publish("next/vmlinuz", KERNEL)
    server.faults["/next/vmlinuz"] = ["cut", "500"]  # the build gives up with half a file cached
    lab.use(url, pin=NEW_KERNEL)
    failed_build_changes_nothing(example, "gave up after 2 attempts")
    assert list((example.state / "cache" / "downloads").glob("*/vmlinuz.part"))

    server.files["/next/vmlinuz"] = NEW_KERNEL  # the new release appears at the same URL
    server.faults["/next/vmlinuz"] = ["ignore-if-range"]  # and the server would splice if asked wrongly
    build(example)
    assert kernel_in_tree(example) == NEW_KERNEL
    assert_tree_verified(example, [NEW_KERNEL])


def test_signed_new_release_at_the_same_url(example, server, signer):
    lab = Lab(Path.cwd(), server, signer)
    lab.use(lab.publish("k/vmlinuz", KERNEL))
    server.faults["/k/vmlinuz"] = ["cut", "500"]
    with pytest.raises(ImageError):
        build(example)
    lab.publish("k/vmlinuz", NEW_KERNEL)  # image and signature replaced upstream

    build(example)

    assert kernel_in_tree(example) == NEW_KERNEL
    assert_tree_verified(example, [NEW_KERNEL])


@pytest.mark.timeout(30)
def test_trickling_server_hits_a_short_deadline(example, lab, server, monkeypatch):
    lab.use(lab.publish("k/vmlinuz", KERNEL), pin=KERNEL)
    build(example)
    lab.use(lab.publish("slow/vmlinuz", NEW_KERNEL), pin=NEW_KERNEL)
    server.faults["/slow/vmlinuz"] = ["trickle"] * 3
    monkeypatch.setenv("BOOTGEN_FETCH_DEADLINE", "1")
    started = time.monotonic()
    failed_build_changes_nothing(example, "not complete within the 1 s deadline")
    assert time.monotonic() - started < 10


@pytest.mark.parametrize("fault, env, expected", [
    ("length:1000000000000", {}, f"the server announces 1000000000000 bytes, more than the limit of {8 << 30} bytes"),
    (None, {"BOOTGEN_MAX_IMAGE_SIZE": "100K"}, "more than the limit of 102400 bytes"),
    ("endless", {"BOOTGEN_MAX_IMAGE_SIZE": "1M"}, "the server sent more than the limit of 1048576 bytes"),
    ("length:150000", {}, "sha256 mismatch"),  # a short length: the first 150,000 bytes are not the file
])
def test_lying_or_oversized_answers_fail_and_keep_the_tree(example, lab, server, monkeypatch, fault, env, expected):
    lab.use(lab.publish("k/vmlinuz", KERNEL), pin=KERNEL)
    build(example)
    lab.use(lab.publish("big/vmlinuz", NEW_KERNEL), pin=NEW_KERNEL)
    if fault:
        server.faults["/big/vmlinuz"] = [fault] * 2
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    failed_build_changes_nothing(example, expected)
    assert not list((example.state / "cache" / "downloads").glob("*/vmlinuz.part"))


# --- concurrent builds ---------------------------------------------------------------------------------

def _repo(root: Path, server, url: str) -> Path:
    shutil.copytree(ROOT / "site", root / "site")
    shutil.copytree(ROOT / "nodes", root / "nodes")
    Lab(root, server).use(url, pin=KERNEL)
    return root


def _cli_build(repo: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, "-m", "bootgen", "build"], cwd=repo, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


@pytest.mark.timeout(240)
def test_concurrent_builds_sharing_a_cache_serve_only_verified_bytes(tmp_path, server):
    """Two repositories whose `.bootgen/cache` is one directory, and two builds of one repository,
    started together in a loop while the server sends slowly."""
    server.files["/k/vmlinuz"] = KERNEL
    server.trickle_delay = 0.0005
    url = server.url("k/vmlinuz")
    a, b = _repo(tmp_path / "a", server, url), _repo(tmp_path / "b", server, url)
    shared = tmp_path / "shared-cache"
    for repo in (a, b):
        (repo / ".bootgen").mkdir()
        (repo / ".bootgen" / "cache").symlink_to(shared, target_is_directory=True)
    for round_ in range(3):
        shutil.rmtree(shared, ignore_errors=True)
        shared.mkdir()
        server.faults["/k/vmlinuz"] = ["trickle"] * 3
        repos = [a, b] if round_ != 1 else [a, a]  # round 1: one repository, two builds at once
        for repo in set(repos):  # an edit, so each build has work to do and resolves the images
            node = repo / "nodes" / "node-2.yaml"
            node.write_text(node.read_text().split("kernel_args: [round")[0] + f"kernel_args: [round={round_}]\n")
        procs = [_cli_build(repo) for repo in repos]
        for proc in procs:
            out, err = proc.communicate(timeout=100)
            assert proc.returncode == 0, (out + err).decode()
        for repo in set(repos):
            paths = Paths(repo / "site", repo / "nodes", repo / "build")
            assert kernel_in_tree(paths) == KERNEL
            assert_tree_verified(paths, [KERNEL])
        assert [p.read_bytes() for p in shared.glob("downloads/*/vmlinuz")] == [KERNEL]
        assert not list(shared.glob("downloads/*/*.part"))
