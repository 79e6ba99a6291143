"""The image supply chain against a loopback server that injects faults: concurrent fetches
into one cache, a cache rewritten in place, redirect chains, a file replaced between
attempts, a trickling server, lying sizes, error bodies on kept-alive connections,
key files and pins. Whatever happens, the only bytes handed on are the verified ones."""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from bootgen.errors import ImageError, InputError
from bootgen.images import FetchPolicy, resolve_images
from bootgen.images.fetch import Fetcher, FetchError
from bootgen.images.progress import stall_column, stall_text
from bootgen.schema import validate_doc
from bootgen.source import load_yaml_text

ROOT = Path(__file__).resolve().parents[2]
FAST = FetchPolicy(attempts=3, backoff=0.01, connect_timeout=2, read_timeout=5, deadline=30)
KERNEL = os.urandom(300_000)
NEW_KERNEL = os.urandom(300_000)  # the next release, published at the same URL

pytestmark = pytest.mark.timeout(120)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def unsigned_site(site, url: str, data: bytes, extra: str = ""):
    return site.config(f"""
images:
  s:
    mirror: true
    kernel: {{url: "{url}", unsigned: true, sha256: "{sha(data)}"{extra}}}
""")


def signed_site(site, signer, url: str):
    signer.export("good", site.dir / "keys" / "k.asc")
    return site.config(f"""
keys:
  k: {{file: keys/k.asc, fingerprint: "{signer.fingerprints['good']}"}}
images:
  s:
    mirror: true
    kernel: {{url: "{url}", signature: auto, keys: [k]}}
""")


def resolve(site, config, policy=FAST, **kwargs):
    return resolve_images(config, site_dir=site.dir, cache_dir=site.cache, needed=set(config.images),
                          progress=False, policy=policy, **kwargs)


def placed_kernel(result) -> tuple[Path, str]:
    files = result["s"].files
    kernel = next(f for f in files if f.tree_path == result["s"].kernel.tree_path)
    return kernel.source, kernel.sha256


def the_failure(excinfo) -> str:
    problems = excinfo.value.problems
    assert len(problems) == 1, [p.format() for p in problems]
    return problems[0].format()


def assert_no_leftovers(site) -> None:
    """No partial file or resume record, and every published cache file is read-only with one name."""
    downloads = site.cache / "downloads"
    for path in downloads.rglob("*") if downloads.exists() else ():
        assert not path.name.endswith((".part", ".part.json")), path
        if path.is_file() and not path.name.endswith(".lock"):
            st = path.stat()
            assert st.st_mode & 0o222 == 0 and st.st_nlink == 1, path


# --- two processes, one cache --------------------------------------------------------------

RESOLVER = textwrap.dedent("""
    import json, sys
    from pathlib import Path
    from bootgen.images import FetchPolicy, parse_image_config, resolve_images
    from bootgen.source import load_yaml_text
    site, cache = Path(sys.argv[1]), Path(sys.argv[2])
    doc = load_yaml_text((site / "site.yaml").read_text(), "site/site.yaml")
    config = parse_image_config(doc.data, doc, site)
    policy = FetchPolicy(attempts=3, backoff=0.01, connect_timeout=2, read_timeout=10, deadline=60)
    result = resolve_images(config, site_dir=site, cache_dir=cache, needed={"s"}, progress=False, policy=policy)
    files = result["s"].files
    print(json.dumps([[f.tree_path, str(f.source), f.sha256, Path(f.source).read_bytes().hex()] for f in files]))
""")


@pytest.mark.timeout(180)
def test_two_processes_fetching_into_one_cache_hand_on_only_verified_bytes(site, server):
    data = os.urandom(40_000)
    server.files["/k/vmlinuz"] = data
    server.trickle_delay = 0.002  # about a second per download: the two processes overlap
    unsigned_site(site, server.url("k/vmlinuz"), data)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    for round_ in range(4):
        for leftover in site.cache.glob("downloads/*/*"):
            leftover.unlink()
        server.faults["/k/vmlinuz"] = ["trickle", "trickle"]
        procs = [subprocess.Popen([sys.executable, "-c", RESOLVER, str(site.dir), str(site.cache)],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env) for _ in range(2)]
        if round_ % 2:
            time.sleep(0.3)  # the second one starts while the first is half-way
        for proc in procs:
            out, err = proc.communicate(timeout=90)
            assert proc.returncode == 0, err.decode()
            for tree_path, source, digest, hex_bytes in json.loads(out):
                assert bytes.fromhex(hex_bytes) == data and digest == sha(data)
                assert tree_path == f"images/{sha(data)[:16]}/vmlinuz"
        assert [p.read_bytes() for p in site.cache.glob("downloads/*/vmlinuz")] == [data]
        assert_no_leftovers(site)
    assert len(server.requests_for("k/vmlinuz")) <= 8  # one download per round, or two: never a shared .part


# --- the cache changed in place ---------------------------------------------------------------

def rewrite_keeping_size_and_mtime(path: Path, data: bytes) -> None:
    """What `dd conv=notrunc` followed by `touch -r` does (root ignores the read-only mode)."""
    before = path.stat()
    assert len(data) == before.st_size
    with open(path, "r+b") as handle:
        handle.write(data)
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    after = path.stat()
    assert (after.st_size, after.st_mtime_ns, after.st_ino) == (before.st_size, before.st_mtime_ns, before.st_ino)


def test_same_size_rewrite_with_mtime_set_back_is_caught_and_fetched_again(site, server):
    url = server.url("k/vmlinuz")
    server.files["/k/vmlinuz"] = KERNEL
    config = unsigned_site(site, url, KERNEL)
    cached, _ = placed_kernel(resolve(site, config))
    assert cached.stat().st_mode & 0o222 == 0  # published read-only
    rewrite_keeping_size_and_mtime(cached, os.urandom(len(KERNEL)))

    with pytest.raises(ImageError) as excinfo:
        resolve(site, config, fetch=False)
    assert "sha256 mismatch" in the_failure(excinfo) and "`bootgen fetch` gets it again" in the_failure(excinfo)
    assert not cached.exists()

    cached, digest = placed_kernel(resolve(site, config))  # fetching allowed: fetched again in the same run
    assert cached.read_bytes() == KERNEL and digest == sha(KERNEL)


def test_rewritten_cache_file_is_fetched_again_within_one_run(site, server):
    server.files["/k/vmlinuz"] = KERNEL
    config = unsigned_site(site, server.url("k/vmlinuz"), KERNEL)
    cached, _ = placed_kernel(resolve(site, config))
    rewrite_keeping_size_and_mtime(cached, os.urandom(len(KERNEL)))

    cached, digest = placed_kernel(resolve(site, config))

    assert cached.read_bytes() == KERNEL and digest == sha(KERNEL)
    assert len(server.requests_for("k/vmlinuz")) == 2


def test_cache_file_sharing_its_inode_is_made_private_before_use(site, server, tmp_path):
    server.files["/k/vmlinuz"] = KERNEL
    config = unsigned_site(site, server.url("k/vmlinuz"), KERNEL)
    cached, _ = placed_kernel(resolve(site, config))
    old_tree_file = tmp_path / "old-tree-vmlinuz"
    os.link(cached, old_tree_file)  # how trees made by earlier versions held images

    cached, _ = placed_kernel(resolve(site, config, fetch=False))

    assert cached.stat().st_nlink == 1 and not os.path.samefile(cached, old_tree_file)
    assert cached.read_bytes() == KERNEL


# --- redirects ---------------------------------------------------------------------------------

def test_redirect_chain_is_followed_and_its_bodies_are_never_saved(site, server):
    server.files["/real/vmlinuz"] = KERNEL
    server.redirects["/a/vmlinuz"] = (302, "/b/vmlinuz")
    server.redirects["/b/vmlinuz"] = (301, server.url("c/vmlinuz"))
    server.redirects["/c/vmlinuz"] = (307, "../real/vmlinuz")
    config = unsigned_site(site, server.url("a/vmlinuz"), KERNEL)

    cached, digest = placed_kernel(resolve(site, config))

    assert cached.read_bytes() == KERNEL and digest == sha(KERNEL)
    assert len(server.requests_for("real/vmlinuz")) == 1
    assert_no_leftovers(site)


def test_signed_image_and_signature_behind_redirects(site, signer, server):
    server.files["/mirror/vmlinuz"] = KERNEL
    server.files["/mirror/vmlinuz.sig"] = signer.sign("good", KERNEL)
    server.redirects["/dl/vmlinuz"] = (302, "/mirror/vmlinuz")
    server.redirects["/dl/vmlinuz.sig"] = (302, "/mirror/vmlinuz.sig")
    config = signed_site(site, signer, server.url("dl/vmlinuz"))

    cached, _ = placed_kernel(resolve(site, config))

    assert cached.read_bytes() == KERNEL


def test_too_many_redirects_fail_with_the_reason(site, server):
    for i in range(10):
        server.redirects[f"/hop{i}/vmlinuz"] = (302, f"/hop{i + 1}/vmlinuz")
    config = unsigned_site(site, server.url("hop0/vmlinuz"), KERNEL)

    with pytest.raises(ImageError) as excinfo:
        resolve(site, config)

    assert "more than 5 redirects (last to " in the_failure(excinfo)
    assert len(server.requests) == 6
    assert not list(site.cache.glob("downloads/*/vmlinuz*"))


def test_redirect_loop_and_non_http_target_are_refused(site, server):
    server.redirects["/loop/vmlinuz"] = (302, "/loop/vmlinuz")
    server.redirects["/ftp/vmlinuz"] = (302, "ftp://example.test/vmlinuz")
    for path, expected in (("loop/vmlinuz", "more than 5 redirects"), ("ftp/vmlinuz", "which is not http or https")):
        with pytest.raises(ImageError) as excinfo:
            resolve(site, unsigned_site(site, server.url(path), KERNEL))
        assert expected in the_failure(excinfo)


class _FakeResponse:
    def __init__(self, status: int, headers: dict, body: bytes = b""):
        self.status, self.headers, self.reason, self._body = status, headers, "", body

    def read(self, amt=None, decode_content=None):
        body, self._body = self._body[:amt], self._body[amt:]
        return body

    def close(self):
        pass

    def release_conn(self):
        pass


def test_https_to_http_downgrade_is_refused(tmp_path, monkeypatch):
    fetcher = Fetcher(FAST)
    asked = []

    def request(method, url, **kwargs):
        asked.append(url)
        return _FakeResponse(302, {"Location": "http://mirror.example.test/vmlinuz"}, b"moved")

    monkeypatch.setattr(fetcher._http, "request", request)
    with pytest.raises(FetchError, match=r"redirected from https to http \(http://mirror.example.test/vmlinuz\)"):
        fetcher.download("https://secure.example.test/vmlinuz", tmp_path / "vmlinuz.part")
    assert asked == ["https://secure.example.test/vmlinuz"]
    assert not (tmp_path / "vmlinuz.part").exists()


# --- resuming ---------------------------------------------------------------------------------

def leave_a_partial_download(site, server, config) -> None:
    server.faults["/k/vmlinuz"] = ["cut", "500", "500"]  # FAST gives up after 3 attempts
    with pytest.raises(ImageError):
        resolve(site, config)
    assert list(site.cache.glob("downloads/*/vmlinuz.part"))


@pytest.mark.parametrize("server_kind", ["honours If-Range", "ignores If-Range"])
def test_file_replaced_between_attempts_is_fetched_whole_never_spliced(site, server, server_kind):
    server.files["/k/vmlinuz"] = KERNEL
    config = unsigned_site(site, server.url("k/vmlinuz"), NEW_KERNEL)  # the site already pins the new release
    leave_a_partial_download(site, server, config)
    server.files["/k/vmlinuz"] = NEW_KERNEL
    if server_kind == "ignores If-Range":
        server.faults["/k/vmlinuz"] = ["ignore-if-range"]  # answers 206 with the new file's tail

    cached, digest = placed_kernel(resolve(site, config))

    assert cached.read_bytes() == NEW_KERNEL and digest == sha(NEW_KERNEL)
    resumed = server.headers_for("k/vmlinuz")[3]
    assert resumed["Range"].startswith("bytes=") and resumed["If-Range"] == f'"{sha(KERNEL)[:20]}"'
    assert_no_leftovers(site)


def test_file_replaced_between_attempts_with_the_old_pin_fails_and_serves_nothing(site, server):
    server.files["/k/vmlinuz"] = KERNEL
    config = unsigned_site(site, server.url("k/vmlinuz"), KERNEL)
    leave_a_partial_download(site, server, config)
    server.files["/k/vmlinuz"] = NEW_KERNEL

    with pytest.raises(ImageError) as excinfo:
        resolve(site, config)

    assert f"sha256 mismatch: got {sha(NEW_KERNEL)}, pinned {sha(KERNEL)}" in the_failure(excinfo)
    assert not list(site.cache.glob("downloads/*/vmlinuz*"))


def test_signed_new_release_at_the_same_url_is_taken_in_one_run(site, signer, server):
    server.files["/k/vmlinuz"] = KERNEL
    server.files["/k/vmlinuz.sig"] = signer.sign("good", KERNEL)
    config = signed_site(site, signer, server.url("k/vmlinuz"))
    leave_a_partial_download(site, server, config)  # the old signature is in the cache, the image half
    server.files["/k/vmlinuz"] = NEW_KERNEL
    server.files["/k/vmlinuz.sig"] = signer.sign("good", NEW_KERNEL)

    cached, _ = placed_kernel(resolve(site, config))

    assert cached.read_bytes() == NEW_KERNEL


def test_no_validator_means_no_resume(site, server):
    server.files["/k/vmlinuz"] = KERNEL
    server.faults["/k/vmlinuz"] = ["novalidator+cut"]  # nothing could prove a later answer is the same file
    config = unsigned_site(site, server.url("k/vmlinuz"), KERNEL)

    cached, _ = placed_kernel(resolve(site, config))

    assert cached.read_bytes() == KERNEL
    assert server.requests_for("k/vmlinuz") == [None, None]


def test_resume_carries_if_range_and_continues_the_same_file(site, server):
    server.files["/k/vmlinuz"] = KERNEL
    server.faults["/k/vmlinuz"] = ["cut"]
    config = unsigned_site(site, server.url("k/vmlinuz"), KERNEL)

    cached, _ = placed_kernel(resolve(site, config))

    first, second = server.headers_for("k/vmlinuz")
    assert "Range" not in first and second["Range"] == f"bytes={len(KERNEL) // 2}-"
    assert second["If-Range"] == f'"{sha(KERNEL)[:20]}"'
    assert cached.read_bytes() == KERNEL


# --- time and size bounds -----------------------------------------------------------------------

@pytest.mark.timeout(30)
def test_trickling_server_hits_the_deadline(site, server):
    server.files["/k/vmlinuz"] = KERNEL
    server.faults["/k/vmlinuz"] = ["trickle"] * 5  # 64 bytes every 50 ms: never silent, never done
    config = unsigned_site(site, server.url("k/vmlinuz"), KERNEL)
    started = time.monotonic()

    with pytest.raises(ImageError) as excinfo:
        resolve(site, config, policy=FetchPolicy(attempts=3, backoff=0.01, read_timeout=5, deadline=1.0))

    assert time.monotonic() - started < 5
    line = the_failure(excinfo)
    assert "not complete within the 1 s deadline (" in line and "bytes received" in line
    assert not list(site.cache.glob("downloads/*/vmlinuz"))


def test_deadline_and_size_ceiling_come_from_the_environment(site, server, monkeypatch):
    server.files["/k/vmlinuz"] = KERNEL
    config = unsigned_site(site, server.url("k/vmlinuz"), KERNEL)
    monkeypatch.setenv("BOOTGEN_MAX_IMAGE_SIZE", "100K")
    assert FetchPolicy.from_env().max_size == 100 * 1024
    monkeypatch.setenv("BOOTGEN_FETCH_DEADLINE", "0.5")
    assert FetchPolicy.from_env().deadline == 0.5
    monkeypatch.setenv("BOOTGEN_FETCH_DEADLINE", "soon")
    with pytest.raises(ImageError, match="BOOTGEN_FETCH_DEADLINE='soon' is not a number"):
        resolve_images(config, site_dir=site.dir, cache_dir=site.cache, needed={"s"}, progress=False)
    monkeypatch.delenv("BOOTGEN_FETCH_DEADLINE")

    with pytest.raises(ImageError) as excinfo:
        resolve_images(config, site_dir=site.dir, cache_dir=site.cache, needed={"s"}, progress=False)
    assert f"the server announces {len(KERNEL)} bytes, more than the limit of 102400 bytes" in the_failure(excinfo)
    assert server.requests_for("k/vmlinuz") == [None]


def test_announced_terabyte_is_refused_before_any_byte(site, server):
    server.files["/k/vmlinuz"] = KERNEL
    server.faults["/k/vmlinuz"] = [f"length:{10**12}"]
    config = unsigned_site(site, server.url("k/vmlinuz"), KERNEL)

    with pytest.raises(ImageError) as excinfo:
        resolve(site, config)

    assert f"the server announces {10**12} bytes, more than the limit of {8 << 30} bytes" in the_failure(excinfo)
    assert not list(site.cache.glob("downloads/*/*.part*"))


def test_endless_body_without_a_length_stops_at_the_ceiling(site, server):
    server.files["/k/vmlinuz"] = KERNEL
    server.faults["/k/vmlinuz"] = ["endless"]
    config = unsigned_site(site, server.url("k/vmlinuz"), KERNEL)

    with pytest.raises(ImageError) as excinfo:
        resolve(site, config, policy=FetchPolicy(attempts=2, backoff=0.01, max_size=1 << 20, deadline=30))

    assert "the server sent more than the limit of 1048576 bytes" in the_failure(excinfo)
    assert not list(site.cache.glob("downloads/*/*.part*"))


def test_declared_size_is_the_ceiling_and_must_match(site, server):
    server.files["/k/vmlinuz"] = KERNEL
    config = unsigned_site(site, server.url("k/vmlinuz"), KERNEL, extra=f", size: {len(KERNEL) - 1}")
    with pytest.raises(ImageError) as excinfo:
        resolve(site, config)
    assert f"the server announces {len(KERNEL)} bytes but `size:` declares {len(KERNEL) - 1}" in the_failure(excinfo)

    server.faults["/k/vmlinuz"] = ["endless"]  # no length announced: cut off at the declared size
    config = unsigned_site(site, server.url("k/vmlinuz"), KERNEL, extra=f", size: {len(KERNEL)}")
    with pytest.raises(ImageError) as excinfo:
        resolve(site, config)
    assert f"the server sent more than the limit of {len(KERNEL)} bytes" in the_failure(excinfo)

    cached, _ = placed_kernel(resolve(site, config))  # an honest answer of the declared size
    assert cached.read_bytes() == KERNEL


@pytest.mark.parametrize("lie", ["short", "long"])
def test_lying_content_length_never_hands_on_other_bytes(site, server, lie):
    server.files["/k/vmlinuz"] = KERNEL
    announced = len(KERNEL) - 1000 if lie == "short" else len(KERNEL) + 1000
    server.faults["/k/vmlinuz"] = [f"length:{announced}"] * 3
    config = unsigned_site(site, server.url("k/vmlinuz"), KERNEL)

    with pytest.raises(ImageError) as excinfo:
        resolve(site, config)

    line = the_failure(excinfo)
    assert ("sha256 mismatch" in line) if lie == "short" else ("connection" in line and "gave up" in line), line
    assert not list(site.cache.glob("downloads/*/vmlinuz"))


# --- connections -----------------------------------------------------------------------------------

def test_error_body_is_read_before_the_connection_is_used_again(site, server):
    server.files["/k/vmlinuz"] = KERNEL
    server.faults["/k/vmlinuz"] = ["500"]  # a 4 KiB error page on a kept-alive connection
    config = unsigned_site(site, server.url("k/vmlinuz"), KERNEL)

    cached, _ = placed_kernel(resolve(site, config, policy=FetchPolicy(attempts=2, backoff=0.01, deadline=30)))

    assert cached.read_bytes() == KERNEL
    assert server.requests_for("k/vmlinuz") == [None, None]
    assert len(server.connections) == 1  # the one connection was fit for its next request


def test_missing_signature_then_image_on_one_connection(site, signer, server):
    server.files["/k/vmlinuz"] = KERNEL
    server.files["/k/vmlinuz.sig"] = signer.sign("good", KERNEL)
    server.faults["/k/vmlinuz.sig"] = ["500"]
    config = signed_site(site, signer, server.url("k/vmlinuz"))

    cached, _ = placed_kernel(resolve(site, config, policy=FetchPolicy(attempts=2, backoff=0.01, deadline=30)))

    assert cached.read_bytes() == KERNEL


# --- keys and pins ---------------------------------------------------------------------------------

def test_fingerprint_in_gpg_spacing_is_accepted(site, signer, server):
    fpr = signer.fingerprints["good"]
    spellings = [" ".join(fpr[i:i + 4] for i in range(0, 20, 4)) + "  " + " ".join(fpr[i:i + 4] for i in range(20, 40, 4)),
                 fpr.lower(), "  " + fpr, " ".join(fpr[i:i + 4] for i in range(0, 40, 4)).lower()]
    signer.export("good", site.dir / "keys" / "k.asc")
    for spelling in spellings:
        text = f"name: s\nbase_url: http://10.0.0.5/\ntftp_server: 10.0.0.5\nkeys:\n  k: {{file: keys/k.asc, fingerprint: \"{spelling}\"}}\n"
        doc = load_yaml_text(text, "site/site.yaml")
        assert [p.format() for p in validate_doc(doc, "site") if "fingerprint" in p.path] == [], spelling
        assert site.config("keys:" + text.split("keys:", 1)[1]).keys["k"].fingerprint == fpr


def test_private_key_block_is_refused_as_a_site_key(site, signer):
    (site.dir / "keys").mkdir()
    secret = signer.gpg("--armor", "--pinentry-mode", "loopback", "--export-secret-keys", signer.fingerprints["good"])
    (site.dir / "keys" / "k.asc").write_bytes(secret)
    with pytest.raises(InputError) as excinfo:
        site.config(f"keys:\n  k: {{file: keys/k.asc, fingerprint: {signer.fingerprints['good']}}}\n")
    [line] = [p.format() for p in excinfo.value.problems]
    assert "error at $.keys.k.file: key file 'keys/k.asc' holds a PRIVATE key block" in line
    assert secret.decode()[40:80] not in line


def test_binary_private_key_is_refused_by_the_keyring(site, signer, server):
    secret = signer.gpg("--pinentry-mode", "loopback", "--export-secret-keys", signer.fingerprints["good"])
    (site.dir / "keys").mkdir()
    (site.dir / "keys" / "k.asc").write_bytes(secret)
    server.files["/k/vmlinuz"] = KERNEL
    server.files["/k/vmlinuz.sig"] = signer.sign("good", KERNEL)
    config = site.config(f"""
keys:
  k: {{file: keys/k.asc, fingerprint: "{signer.fingerprints['good']}"}}
images:
  s:
    mirror: true
    kernel: {{url: "{server.url('k/vmlinuz')}", signature: auto, keys: [k]}}
""")
    with pytest.raises(ImageError) as excinfo:
        resolve(site, config)
    assert "holds a private key; a site key file must hold the public key only" in the_failure(excinfo)
    assert server.requests == []


def test_unsigned_url_needs_a_pin_but_a_site_file_does_not(site):
    with pytest.raises(InputError) as excinfo:
        site.config("images:\n  s:\n    mirror: true\n    kernel: {url: 'http://x.test/vmlinuz', unsigned: true}\n")
    [line] = [p.format() for p in excinfo.value.problems]
    assert "images.s.kernel is `unsigned: true` without a `sha256:` or `sha512:` pin" in line
    site.config("images:\n  s:\n    mirror: true\n    kernel: {url: 'http://x.test/vmlinuz', unsigned: true, "
                f"sha512: '{'0' * 128}'}}\n")
    (site.dir / "vmlinuz").write_bytes(b"k")
    site.config("images:\n  s:\n    mirror: true\n    kernel: {file: vmlinuz, unsigned: true}\n")


# --- progress ------------------------------------------------------------------------------------------

def test_progress_shows_a_stalled_transfer_as_stalled():
    assert stall_text(100.0, 10.0, now=105.0) == ""
    assert stall_text(100.0, 10.0, now=112.4) == "stalled 12s"

    class Task:
        fields = {"last_byte_at": time.monotonic() - 30}

    assert str(stall_column(10.0).render(Task())) == "stalled 30s"
    Task.fields = {"last_byte_at": time.monotonic()}
    assert str(stall_column(10.0).render(Task())) == ""


def test_declared_size_of_a_site_file_is_checked(site):
    (site.dir / "vmlinuz").write_bytes(KERNEL)
    config = site.config(f"images:\n  s:\n    mirror: true\n    kernel: {{file: vmlinuz, unsigned: true, size: 5}}\n")
    with pytest.raises(ImageError) as excinfo:
        resolve(site, config)
    assert f"is {len(KERNEL)} bytes but `size:` declares 5" in the_failure(excinfo)
    assert (site.dir / "vmlinuz").read_bytes() == KERNEL  # a site file is never deleted


def test_replacing_a_key_file_checks_its_images_again(site, signer, server):
    server.files["/k/vmlinuz"] = KERNEL
    server.files["/k/vmlinuz.sig"] = signer.sign("good", KERNEL)
    config = signed_site(site, signer, server.url("k/vmlinuz"))
    resolve(site, config)
    signer.export("other", site.dir / "keys" / "k.asc")  # the pin stays, the file now holds another key
    config = site.config((site.dir / "site.yaml").read_text())

    with pytest.raises(ImageError) as excinfo:
        resolve(site, config, fetch=False)

    assert f"holds key {signer.fingerprints['other']}, not the pinned" in the_failure(excinfo)
