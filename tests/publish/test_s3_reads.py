"""A publish reads the bucket's root and history with signed GETs and makes its boto3 client only
when it has something to write (SeaweedFS on loopback). It must never take a bucket for up to date
when it is not, and every failure must read as it does through the client."""
from __future__ import annotations

import subprocess
import sys

import pytest
from publish_servers import ACCESS_KEY, SECRET_KEY, free_port, http_get, s3_client
from publish_synth import make_tree

from bootgen.errors import PublishError
from bootgen.publish import publish
from bootgen.publish.stores import s3 as s3_store
from bootgen.publish.stores.s3 import make_client
from bootgen.publish.stores.s3_reads import SignedReader, Unanswered


@pytest.fixture
def clients_made(monkeypatch):
    """The boto3 clients publish makes, counted."""
    made = []

    def counted(*args, **kwargs):
        made.append(args)
        return make_client(*args, **kwargs)

    monkeypatch.setattr(s3_store, "make_client", counted)
    return made


def _publish(seaweed, tree, bucket, **options):
    return publish(tree, f"s3://{bucket}/site", endpoint_url=seaweed.endpoint, progress=False, **options)


def _served_root(seaweed, bucket) -> bytes:
    status, _headers, body = http_get(f"{seaweed.endpoint}/{bucket}/site/manifest.json")
    assert status == 200
    return body


def test_a_noop_publish_makes_no_boto3_client(seaweed, bucket, tmp_path, clients_made):
    make_tree(tmp_path / "a", 20, image_size=1024)
    _publish(seaweed, tmp_path / "a", bucket)
    assert len(clients_made) == 1
    report = _publish(seaweed, tmp_path / "a", bucket)
    assert (report.uploaded, report.deleted, report.actions, report.requests) == (0, 0, (), 2)
    assert len(clients_made) == 1  # the second publish decided with two signed GETs alone


def test_a_changed_tree_is_published_in_full_after_the_signed_reads(seaweed, bucket, tmp_path, clients_made):
    make_tree(tmp_path / "a", 20, image_size=1024)
    changed = make_tree(tmp_path / "b", 20, image_size=1024, revisions={3: 1})
    _publish(seaweed, tmp_path / "a", bucket)
    report = _publish(seaweed, tmp_path / "b", bucket)
    assert report.uploaded > 0 and len(clients_made) == 2
    assert _served_root(seaweed, bucket) == (tmp_path / "b/manifest.json").read_bytes()
    ipxe = next(p for p in changed.node_paths(3) if p.startswith("ipxe/"))
    assert http_get(f"{seaweed.endpoint}/{bucket}/site/{ipxe}")[2] == changed.files[ipxe]


def test_a_served_root_that_differs_is_switched_back_though_the_history_names_this_build(
        seaweed, bucket, tmp_path, clients_made):
    """The history's last build is this tree's, but manifest.json serves another: not up to date."""
    make_tree(tmp_path / "a", 10, image_size=1024)
    make_tree(tmp_path / "b", 10, image_size=1024, revisions={1: 1})
    _publish(seaweed, tmp_path / "a", bucket)
    s3_client(seaweed.endpoint).put_object(Bucket=bucket, Key="site/manifest.json",
                                           Body=(tmp_path / "b/manifest.json").read_bytes())
    report = _publish(seaweed, tmp_path / "a", bucket)
    assert "manifest.json" in {a.path for a in report.actions}
    assert _served_root(seaweed, bucket) == (tmp_path / "a/manifest.json").read_bytes()


def test_a_missing_root_is_published_again(seaweed, bucket, tmp_path, clients_made):
    make_tree(tmp_path / "a", 10, image_size=1024)
    _publish(seaweed, tmp_path / "a", bucket)
    s3_client(seaweed.endpoint).delete_object(Bucket=bucket, Key="site/manifest.json")
    report = _publish(seaweed, tmp_path / "a", bucket)
    assert "manifest.json" in {a.path for a in report.actions}
    assert _served_root(seaweed, bucket) == (tmp_path / "a/manifest.json").read_bytes()


def test_an_empty_bucket_gets_the_whole_tree(seaweed, bucket, tmp_path, clients_made):
    tree = make_tree(tmp_path / "a", 5, image_size=1024)
    report = _publish(seaweed, tmp_path / "a", bucket)
    assert {a.path for a in report.actions} >= set(tree.files)
    assert _served_root(seaweed, bucket) == (tmp_path / "a/manifest.json").read_bytes()


def test_wrong_credentials_on_an_up_to_date_bucket_are_refused_not_taken_for_a_noop(
        seaweed, bucket, tmp_path, monkeypatch):
    make_tree(tmp_path / "a", 5, image_size=1024)
    _publish(seaweed, tmp_path / "a", bucket)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wrong")
    with pytest.raises(PublishError, match="refused the credentials"):
        _publish(seaweed, tmp_path / "a", bucket)


def test_no_credentials_at_all_is_the_usual_error(seaweed, bucket, tmp_path, monkeypatch):
    make_tree(tmp_path / "a", 5, image_size=1024)
    _publish(seaweed, tmp_path / "a", bucket)
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")  # no lookup of instance credentials
    with pytest.raises(PublishError, match="no AWS credentials found"):
        _publish(seaweed, tmp_path / "a", bucket)


def test_credentials_from_a_profile_are_used_by_the_signed_reads(seaweed, bucket, tmp_path, monkeypatch,
                                                                 clients_made):
    make_tree(tmp_path / "a", 5, image_size=1024)
    _publish(seaweed, tmp_path / "a", bucket)
    credentials = tmp_path / "credentials"
    credentials.write_text(f"[lab]\naws_access_key_id = {ACCESS_KEY}\naws_secret_access_key = {SECRET_KEY}\n")
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(credentials))
    monkeypatch.setenv("AWS_PROFILE", "lab")
    report = _publish(seaweed, tmp_path / "a", bucket)
    assert (report.uploaded, report.requests, len(clients_made)) == (0, 2, 1)


def test_a_missing_bucket_and_a_server_that_is_down_read_as_through_the_client(seaweed, aws_env, tmp_path,
                                                                              monkeypatch):
    make_tree(tmp_path, 1, image_size=16)
    with pytest.raises(PublishError, match="the bucket does not exist"):
        _publish(seaweed, tmp_path, "no-such-bucket-here")
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "2")
    with pytest.raises(PublishError, match="unreachable after retries"):
        publish(tmp_path, "s3://boot/site", endpoint_url=f"http://127.0.0.1:{free_port()}", progress=False)


def test_the_reader_answers_only_an_object_or_no_such_key(seaweed, bucket, aws_env):
    s3_client(seaweed.endpoint).put_object(Bucket=bucket, Key="p/x.json", Body=b"{}")
    reader = SignedReader(seaweed.endpoint)
    assert reader.get(bucket, "p/x.json") == b"{}"
    assert reader.get(bucket, "p/none.json") is None
    with pytest.raises(Unanswered):
        reader.get("no-such-bucket-here", "p/x.json")
    assert reader.count == 3


@pytest.mark.parametrize("region", [None, "eu-west-3"])
def test_the_reader_signs_and_addresses_a_get_as_the_client_does(aws_env, monkeypatch, region, tmp_path):
    """Same URL (path style, the key's escaping), same credential scope (region), same CA bundle."""
    if region:
        monkeypatch.setenv("AWS_DEFAULT_REGION", region)
    else:
        monkeypatch.delenv("AWS_DEFAULT_REGION")
    bundle = tmp_path / "ca.pem"
    bundle.write_text("")
    monkeypatch.setenv("AWS_CA_BUNDLE", str(bundle))
    endpoint = "http://127.0.0.1:1/s3/"
    key = "pre fix/ü+~%/.bootgen/index.json"
    client = make_client(endpoint, 1)
    sent = {}

    def capture(request, **_):
        sent.update(url=request.url, auth=request.headers["Authorization"].decode())
        raise Unanswered("captured")  # stop before anything is sent

    client.meta.events.register("before-send.s3", capture)
    with pytest.raises(Unanswered):
        client.get_object(Bucket="boot", Key=key)
    reader = SignedReader(endpoint)
    prepared = {}
    monkeypatch.setattr("botocore.httpsession.URLLib3Session.send",
                        lambda self, request: (prepared.update(url=request.url, auth=request.headers["Authorization"],
                                                               verify=self._verify), 1 / 0))
    with pytest.raises(Unanswered):
        reader.get("boot", key)
    assert prepared["url"] == sent["url"]
    scope = lambda auth: auth.split("Credential=")[1].split(",")[0]  # noqa: E731 - key/date/region/s3/aws4_request
    assert scope(prepared["auth"]) == scope(sent["auth"])
    assert prepared["verify"] == client._endpoint.http_session._verify == str(bundle)


def test_a_noop_publish_as_a_fresh_process_makes_two_requests(seaweed, bucket, tmp_path):
    """The command as a user runs it."""
    make_tree(tmp_path / "a", 5, image_size=1024)
    _publish(seaweed, tmp_path / "a", bucket)
    done = subprocess.run([sys.executable, "-m", "bootgen", "publish", f"s3://{bucket}/site", "--tree",
                           str(tmp_path / "a"), "--endpoint-url", seaweed.endpoint, "--format", "json"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert '"requests": 2' in done.stdout and '"uploaded": 0' in done.stdout


@pytest.mark.parametrize("status, body", [(503, b"<Error><Code>SlowDown</Code></Error>"),
                                          (403, b"<Error><Code>AccessDenied</Code></Error>"),
                                          (301, b""), (404, b"<Error><Code>NoSuchBucket</Code></Error>")])
def test_an_answer_the_reader_is_unsure_of_goes_to_the_client_and_so_do_later_reads(moto_client, monkeypatch,
                                                                                     status, body):
    from types import SimpleNamespace

    from bootgen.publish.stores.s3 import S3Store

    moto_client.put_object(Bucket="boot", Key="site/manifest.json", Body=b"root")
    reader = SignedReader("http://127.0.0.1:1")
    sent = []
    monkeypatch.setattr(reader, "_send", lambda url: sent.append(url) or SimpleNamespace(status_code=status,
                                                                                         content=body))
    with S3Store("s3://boot/site", moto_client, reader=reader) as store:
        assert store.live_root() == b"root"
        assert store.history() == ()
        assert len(sent) == 1 and store.counter.count == 2  # one signed GET, then both reads through the client
