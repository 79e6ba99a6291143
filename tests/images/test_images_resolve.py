"""resolve_images end to end against a local HTTP server and real gpg signatures."""
from __future__ import annotations

import hashlib
import json
import os
import socket

import pytest

from bootgen.errors import ImageError
from bootgen.images import FetchPolicy, resolve_images
from bootgen.images import digests as digests_mod
from bootgen.images import verify as verify_mod

from .conftest import etag_of

FAST = FetchPolicy(attempts=3, backoff=0.01, connect_timeout=2, read_timeout=5)
KERNEL = os.urandom(300_000)
INITRD = os.urandom(200_000)


def publish(server, signer, path: str, data: bytes, key: str | None = "good", **sign_args) -> str:
    server.files["/" + path] = data
    if key:
        server.files["/" + path + ".sig"] = signer.sign(key, data, **sign_args)
    return server.url(path)


def flatcar_site(site, signer, server, *, key_file_of: str = "good", pin: str | None = None,
                 kernel_extra: str = "") -> object:
    signer.export(key_file_of, site.dir / "keys" / "flatcar.asc")
    pin = pin or signer.fingerprints["good"]
    spaced = " ".join(pin[i:i + 4] for i in range(0, 40, 4))  # pins may carry spaces
    return site.config(f"""
keys:
  flatcar:
    file: keys/flatcar.asc
    fingerprint: {spaced}
images:
  flatcar-stable:
    mirror: true
    kernel:
      url: {server.url('stable/vmlinuz')}
      signature: auto
      keys: [flatcar]
{kernel_extra}
    initrds:
      - url: {server.url('stable/initrd.cpio.gz')}
        signature: auto
        keys: [flatcar]
""")


def resolve(site, config, **kwargs):
    kwargs.setdefault("needed", set(config.images))
    return resolve_images(config, site_dir=site.dir, cache_dir=site.cache, progress=False, policy=FAST, **kwargs)


def index(site) -> dict:
    return json.loads((site.cache / "index.json").read_text())


def one_failure(excinfo) -> str:
    problems = excinfo.value.problems
    assert len(problems) == 1, [p.format() for p in problems]
    line = problems[0].format()
    assert "\n" not in line
    return line


def test_good_signature_places_content_addressed_files(site, signer, server):
    publish(server, signer, "stable/vmlinuz", KERNEL)
    publish(server, signer, "stable/initrd.cpio.gz", INITRD)
    config = flatcar_site(site, signer, server)

    result = resolve(site, config)["flatcar-stable"]

    sha = hashlib.sha256(KERNEL).hexdigest()
    assert result.kernel.tree_path == f"images/{sha[:16]}/vmlinuz"
    assert result.initrds[0].name == "initrd.cpio.gz"
    by_path = {f.tree_path: f for f in result.files}
    kernel_file = by_path[result.kernel.tree_path]
    assert kernel_file.source.read_bytes() == KERNEL
    assert (kernel_file.sha256, kernel_file.size, kernel_file.immutable, kernel_file.target) == \
        (sha, len(KERNEL), True, "image")
    assert server.url("stable/vmlinuz") in index(site)["verified"]


def test_second_resolve_reads_no_image_bytes(site, signer, server, monkeypatch):
    publish(server, signer, "stable/vmlinuz", KERNEL)
    publish(server, signer, "stable/initrd.cpio.gz", INITRD)
    config = flatcar_site(site, signer, server)
    first = resolve(site, config)
    requests_before = len(server.requests)

    reads = []
    real_feed = digests_mod.feed_file
    monkeypatch.setattr(digests_mod, "feed_file", lambda path, h: (reads.append(path), real_feed(path, h)))
    monkeypatch.setattr(verify_mod.Keyring, "_ready", lambda self: pytest.fail("ran gpg for unchanged images"))
    second = resolve(site, config, fetch=False)

    assert second == first
    assert reads == []
    assert len(server.requests) == requests_before


def test_changed_cache_file_is_read_and_verified_again(site, signer, server):
    publish(server, signer, "stable/vmlinuz", KERNEL)
    publish(server, signer, "stable/initrd.cpio.gz", INITRD)
    config = flatcar_site(site, signer, server)
    kernel = next(f.source for f in resolve(site, config)["flatcar-stable"].files if f.tree_path.endswith("vmlinuz"))
    kernel.write_bytes(KERNEL[:-1] + b"\0")  # someone tampers with the cache

    with pytest.raises(ImageError) as excinfo:
        resolve(site, config, fetch=False)
    assert "bad signature" in one_failure(excinfo)


def test_tampered_image_fails_and_is_not_kept(site, signer, server):
    publish(server, signer, "stable/vmlinuz", KERNEL)
    server.files["/stable/vmlinuz"] = KERNEL[:-1] + b"X"
    publish(server, signer, "stable/initrd.cpio.gz", INITRD)
    config = flatcar_site(site, signer, server)

    with pytest.raises(ImageError) as excinfo:
        resolve(site, config)

    line = one_failure(excinfo)
    assert "error at images.flatcar-stable.kernel: " + server.url("stable/vmlinuz") + ": bad signature" in line
    assert line.startswith("site/site.yaml:")
    assert server.url("stable/vmlinuz") not in index(site)["verified"]
    assert not list(site.cache.glob("downloads/*/vmlinuz"))


def test_signature_by_unknown_key(site, signer, server):
    publish(server, signer, "stable/vmlinuz", KERNEL, key="other")
    publish(server, signer, "stable/initrd.cpio.gz", INITRD)
    config = flatcar_site(site, signer, server)

    with pytest.raises(ImageError) as excinfo:
        resolve(site, config)

    line = one_failure(excinfo)
    assert (f"bad signature: signed by {signer.fingerprints['other']} which is not the pinned key "
            f"flatcar ({signer.fingerprints['good']})") in line
    assert server.url("stable/vmlinuz") not in index(site)["verified"]
    # The bytes may be fine and the site's key list wrong: keep them, fixing site.yaml costs no download.
    assert [p.read_bytes() for p in site.cache.glob("downloads/*/vmlinuz")] == [KERNEL]


def signed_by_pinned(site, signer, server, key: str, **sign_args):
    """Both images signed by `key`, which is also the site's pinned key."""
    publish(server, signer, "stable/vmlinuz", KERNEL, key=key, **sign_args)
    publish(server, signer, "stable/initrd.cpio.gz", INITRD, key=key, **sign_args)


def assert_both_fail(site, config, expected: str):
    with pytest.raises(ImageError) as excinfo:
        resolve(site, config)
    lines = [p.format() for p in excinfo.value.problems]
    assert len(lines) == 2 and all(expected in line for line in lines), lines
    assert index(site)["verified"] == {}


def test_signature_by_expired_key(site, signer, server):
    # Signed in 2020 while the key was valid; it expired the next day.
    signed_by_pinned(site, signer, server, "expired", faked_time="20200101T010000")
    config = flatcar_site(site, signer, server, key_file_of="expired", pin=signer.fingerprints["expired"])
    assert_both_fail(site, config, "bad signature: signing key has expired")


def test_signature_by_revoked_key(site, signer, server):
    signed_by_pinned(site, signer, server, "revoked")  # gpg no longer signs once revoked
    signer.revoke("revoked")
    config = flatcar_site(site, signer, server, key_file_of="revoked", pin=signer.fingerprints["revoked"])
    assert_both_fail(site, config, "bad signature: signing key was revoked")


def test_signature_by_other_site_key_not_allowed_for_image(site, signer, server):
    publish(server, signer, "stable/vmlinuz", KERNEL, key="other")
    signer.export("good", site.dir / "keys" / "flatcar.asc")
    signer.export("other", site.dir / "keys" / "other.asc")
    config = site.config(f"""
keys:
  flatcar: {{file: keys/flatcar.asc, fingerprint: {signer.fingerprints['good']}}}
  other: {{file: keys/other.asc, fingerprint: {signer.fingerprints['other']}}}
images:
  s:
    mirror: true
    kernel: {{url: "{server.url('stable/vmlinuz')}", signature: auto, keys: [flatcar]}}
""")
    with pytest.raises(ImageError) as excinfo:
        resolve(site, config)
    line = one_failure(excinfo)
    assert f"signed by {signer.fingerprints['other']} which is not the pinned key flatcar" in line


def test_key_file_not_matching_pin_fails_before_download(site, signer, server):
    publish(server, signer, "stable/vmlinuz", KERNEL)
    publish(server, signer, "stable/initrd.cpio.gz", INITRD)
    config = flatcar_site(site, signer, server, key_file_of="other")  # pin says good, file holds other

    with pytest.raises(ImageError) as excinfo:
        resolve(site, config)

    lines = [p.format() for p in excinfo.value.problems]
    assert len(lines) == 2  # kernel and initrd, one line each
    assert all(f"holds key {signer.fingerprints['other']}, not the pinned {signer.fingerprints['good']}" in line
               for line in lines)
    assert server.requests == []


def test_checksum_pin_mismatch(site, signer, server):
    publish(server, signer, "stable/vmlinuz", KERNEL)
    publish(server, signer, "stable/initrd.cpio.gz", INITRD)
    config = flatcar_site(site, signer, server, kernel_extra="      sha512: \"" + "0" * 128 + "\"")

    with pytest.raises(ImageError) as excinfo:
        resolve(site, config)

    line = one_failure(excinfo)
    assert f"sha512 mismatch: got {hashlib.sha512(KERNEL).hexdigest()}, pinned {'0' * 128}" in line
    assert server.url("stable/vmlinuz") not in index(site)["verified"]


def test_cut_download_resumes_with_range(site, signer, server):
    publish(server, signer, "stable/vmlinuz", KERNEL)
    publish(server, signer, "stable/initrd.cpio.gz", INITRD)
    server.faults["/stable/vmlinuz"] = ["cut"]
    config = flatcar_site(site, signer, server)

    result = resolve(site, config)["flatcar-stable"]

    first, second = server.requests_for("stable/vmlinuz")
    assert first is None and second.startswith("bytes=") and second.endswith("-")
    assert 0 < int(second[6:-1]) <= len(KERNEL) // 2
    assert result.kernel.tree_path.startswith(f"images/{hashlib.sha256(KERNEL).hexdigest()[:16]}/")


def test_server_ignoring_range_restarts_download(site, signer, server):
    publish(server, signer, "stable/vmlinuz", KERNEL)
    publish(server, signer, "stable/initrd.cpio.gz", INITRD)
    server.faults["/stable/vmlinuz"] = ["cut", "norange"]
    config = flatcar_site(site, signer, server)

    result = resolve(site, config)["flatcar-stable"]

    kernel = next(f for f in result.files if f.tree_path == result.kernel.tree_path)
    assert kernel.source.read_bytes() == KERNEL
    assert len(server.requests_for("stable/vmlinuz")) == 2


def test_partial_file_from_earlier_run_is_resumed(site, signer, server):
    url = publish(server, signer, "stable/vmlinuz", KERNEL)
    publish(server, signer, "stable/initrd.cpio.gz", INITRD)
    server.faults["/stable/vmlinuz"] = ["cut", "500", "500"]  # FAST gives up after 3 attempts
    config = flatcar_site(site, signer, server)
    with pytest.raises(ImageError) as excinfo:
        resolve(site, config)
    assert "gave up after 3 attempts: HTTP 500" in one_failure(excinfo)
    assert url not in index(site)["verified"]

    resolve(site, config)  # a later run continues the .part it left

    resumed_at = server.requests_for("stable/vmlinuz")[-1]
    assert resumed_at.startswith("bytes=") and 0 < int(resumed_at[6:-1]) <= len(KERNEL) // 2


def test_404_fails_at_once(site, signer, server):
    server.files["/stable/vmlinuz.sig"] = signer.sign("good", KERNEL)  # the signature exists, the image not
    publish(server, signer, "stable/initrd.cpio.gz", INITRD)
    config = flatcar_site(site, signer, server)

    with pytest.raises(ImageError) as excinfo:
        resolve(site, config)

    line = one_failure(excinfo)
    assert f"images.flatcar-stable.kernel: {server.url('stable/vmlinuz')}: HTTP 404" in line
    assert len(server.requests_for("stable/vmlinuz")) == 1


def test_500_then_success_is_retried(site, signer, server):
    publish(server, signer, "stable/vmlinuz", KERNEL)
    publish(server, signer, "stable/initrd.cpio.gz", INITRD)
    server.faults["/stable/vmlinuz"] = ["500"]
    config = flatcar_site(site, signer, server)

    resolve(site, config)

    assert server.requests_for("stable/vmlinuz") == [None, None]


def test_every_failed_image_gets_its_own_line(site, signer, server):
    config = flatcar_site(site, signer, server)  # nothing published: both 404
    with pytest.raises(ImageError) as excinfo:
        resolve(site, config)
    lines = str(excinfo.value).splitlines()
    assert [("kernel" in lines[0]), ("initrds[0]" in lines[1])] == [True, True]


def test_not_in_cache_without_fetch(site, signer, server):
    config = flatcar_site(site, signer, server)
    with pytest.raises(ImageError) as excinfo:
        resolve(site, config, fetch=False)
    assert "not in the cache; run `bootgen fetch` first" in str(excinfo.value)
    assert server.requests == []


def test_referenced_set_is_not_fetched(site, server):
    config = site.config(f"""
images:
  upstream:
    kernel: {{url: "{server.url('k/vmlinuz')}"}}
    initrds: [{{url: "{server.url('k/initrd')}"}}]
""")
    result = resolve(site, config)["upstream"]
    assert result.kernel.url == server.url("k/vmlinuz") and result.kernel.tree_path is None
    assert result.files == ()
    assert server.requests == []


def test_only_needed_sets_are_resolved(site, signer, server):
    config = flatcar_site(site, signer, server)
    assert resolve(site, config, needed=set()) == {}
    assert server.requests == []


def test_site_file_unsigned_with_pin(site):
    (site.dir / "images").mkdir()
    (site.dir / "images" / "vmlinuz").write_bytes(KERNEL)
    config = site.config(f"""
images:
  local-test:
    mirror: true
    kernel: {{file: images/vmlinuz, unsigned: true, sha256: {hashlib.sha256(KERNEL).hexdigest()}}}
""")
    result = resolve(site, config)["local-test"]
    assert result.files[0].source == site.dir / "images" / "vmlinuz"
    assert result.kernel.tree_path == f"images/{hashlib.sha256(KERNEL).hexdigest()[:16]}/vmlinuz"


def test_missing_signature_fails_before_the_image_download(site, signer, server):
    server.files["/stable/vmlinuz"] = KERNEL  # no .sig published
    publish(server, signer, "stable/initrd.cpio.gz", INITRD)
    config = flatcar_site(site, signer, server)

    with pytest.raises(ImageError) as excinfo:
        resolve(site, config)

    sig_url = server.url("stable/vmlinuz.sig")
    assert f"{server.url('stable/vmlinuz')}: signature {sig_url}: HTTP 404" in one_failure(excinfo)
    assert server.requests_for("stable/vmlinuz") == []


def test_connection_refused_is_retried_then_reported(site, signer, server):
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    config = site.config(f"""
images:
  s:
    mirror: true
    kernel: {{url: "http://127.0.0.1:{port}/vmlinuz", unsigned: true, sha256: "{hashlib.sha256(KERNEL).hexdigest()}"}}
""")
    with pytest.raises(ImageError) as excinfo:
        resolve(site, config)
    assert f"http://127.0.0.1:{port}/vmlinuz: gave up after 3 attempts: connection failed:" in one_failure(excinfo)


def test_progress_bar_does_not_change_the_result(site, signer, server, capsys):
    publish(server, signer, "stable/vmlinuz", KERNEL)
    publish(server, signer, "stable/initrd.cpio.gz", INITRD)
    config = flatcar_site(site, signer, server)
    result = resolve_images(config, site_dir=site.dir, cache_dir=site.cache, needed={"flatcar-stable"},
                            progress=True, policy=FAST)
    assert result["flatcar-stable"].kernel.name == "vmlinuz"


def test_complete_part_file_is_not_downloaded_again(site, signer, server):
    url = publish(server, signer, "stable/vmlinuz", KERNEL)
    publish(server, signer, "stable/initrd.cpio.gz", INITRD)
    config = flatcar_site(site, signer, server)
    part = site.cache / "downloads" / hashlib.sha256(url.encode()).hexdigest()[:16] / "vmlinuz.part"
    part.parent.mkdir(parents=True)
    part.write_bytes(KERNEL)  # a run that died between the last byte and the rename
    record = {"url": url, "etag": etag_of(KERNEL), "last_modified": None, "total": len(KERNEL)}
    part.with_name("vmlinuz.part.json").write_text(json.dumps(record))
    server.faults["/stable/vmlinuz"] = ["416-complete"]

    result = resolve(site, config)["flatcar-stable"]

    assert result.kernel.tree_path.startswith(f"images/{hashlib.sha256(KERNEL).hexdigest()[:16]}/")
    assert server.requests_for("stable/vmlinuz") == [f"bytes={len(KERNEL)}-"]
    assert server.headers_for("stable/vmlinuz")[0]["If-Range"] == etag_of(KERNEL)


def test_part_file_without_a_validator_is_not_resumed(site, signer, server):
    url = publish(server, signer, "stable/vmlinuz", KERNEL)
    publish(server, signer, "stable/initrd.cpio.gz", INITRD)
    config = flatcar_site(site, signer, server)
    part = site.cache / "downloads" / hashlib.sha256(url.encode()).hexdigest()[:16] / "vmlinuz.part"
    part.parent.mkdir(parents=True)
    part.write_bytes(b"x" * 1000)  # nothing says which file these bytes came from

    resolve(site, config)

    assert server.requests_for("stable/vmlinuz") == [None]
    assert not part.exists()
