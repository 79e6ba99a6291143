"""Fixtures for publish tests: a session SeaweedFS server, buckets, moto, synthetic trees."""
from __future__ import annotations

import itertools
import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # publish_synth / publish_servers helpers

from publish_servers import ACCESS_KEY, SECRET_KEY, s3_client, start_seaweedfs  # noqa: E402

_bucket_numbers = itertools.count()


@pytest.fixture(scope="session")
def seaweed(tmp_path_factory):
    """One SeaweedFS (S3 API) on loopback for the whole session."""
    server = start_seaweedfs(tmp_path_factory.mktemp("seaweed"))
    yield server
    server.stop()


@pytest.fixture
def aws_env(monkeypatch):
    """Credentials for the publisher's own client, and no CA bundle for plain-HTTP endpoints."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", ACCESS_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_CA_BUNDLE", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", os.devnull)


@pytest.fixture
def bucket(seaweed, aws_env):
    """A fresh bucket on the session server; returns its name."""
    name = f"boot-{os.getpid()}-{next(_bucket_numbers)}"
    s3_client(seaweed.endpoint).create_bucket(Bucket=name)
    return name


@pytest.fixture
def moto_client(aws_env):
    """An in-process moto S3 with a bucket named 'boot'; the client is the one publish uses."""
    from moto import mock_aws

    from bootgen.publish.stores.s3 import make_client

    with mock_aws():
        client = make_client(None, 4)
        client.create_bucket(Bucket="boot")
        yield client
