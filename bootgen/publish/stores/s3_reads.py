"""GETs of small objects from an S3-compatible server without a boto3 client.

Making a boto3 S3 client costs about 0.3 s (importing boto3, loading S3's
service model and endpoint rules), more than a no-op publish spends on all
else; yet a no-op publish reads only two small objects, the live root and
the history. `SignedReader` makes those GETs with botocore's own parts: a
botocore Session for configuration and the credential chain (environment,
AWS_PROFILE, the config and credentials files, SSO, processes, containers,
instance metadata), its SigV4 signer for S3, and its urllib3 HTTP session
with the CA bundle, proxies and timeouts the client would use. The client is
made only when a publish has something to write or to list.

The reader answers only what it is sure of: an object's bytes (200) or its
absence (404 NoSuchKey). Anything else (no credentials, refused ones, a
missing bucket, a server that is down or busy, a redirect) it leaves to the
boto3 client, which retries and reports it as it always has, so every error
a user sees comes from one place (bootgen.publish.stores.s3.translate_errors).

It serves only an explicit endpoint URL (--endpoint-url, or an environment's
`endpoint_url`), addressed by path as `make_client` configures it there.
Without one, a bucket's URL comes from botocore's endpoint rules (AWS's
regions, FIPS, dual-stack, AWS_ENDPOINT_URL, a profile's endpoint_url), which
are part of the service model: those reads go through the client.
"""
from __future__ import annotations

import os
import re
import threading
from urllib.parse import quote

CONNECT_TIMEOUT, READ_TIMEOUT = 5, 60  # as make_client's Config
_ERROR_CODE = re.compile(rb"<Code>([^<]*)</Code>")


class Unanswered(Exception):
    """The reader cannot say for sure; the boto3 client must make this read."""


class SignedReader:
    """Signed GETs of whole objects at `endpoint_url` (path-style: endpoint/bucket/key)."""

    def __init__(self, endpoint_url: str):
        self.endpoint_url = endpoint_url.rstrip("/")
        self.session = None  # botocore Session, made on first use; the client is made from it too
        self.count = 0  # requests sent
        self._http = self._signer = None
        self._lock = threading.Lock()

    def get(self, bucket: str, key: str) -> bytes | None:
        """The object's bytes, or None if the bucket answers that it has no such key.
        Raises Unanswered for anything else."""
        url = f"{self.endpoint_url}/{quote(bucket, safe='')}/{quote(key, safe='/~')}"
        try:
            response = self._send(url)
        except Unanswered:
            raise
        except Exception as exc:  # noqa: BLE001 - any failure is the client's to retry and report
            raise Unanswered(f"{type(exc).__name__}: {exc}") from None
        if response.status_code == 200:
            return response.content
        if response.status_code == 404 and _error_code(response.content) == b"NoSuchKey":
            return None
        raise Unanswered(f"HTTP {response.status_code}")

    def _send(self, url: str):
        from botocore.awsrequest import AWSRequest

        http, signer = self._setup(url)
        request = AWSRequest(method="GET", url=url)
        signer.add_auth(request)
        with self._lock:
            self.count += 1
        return http.send(request.prepare())

    def _setup(self, url: str):
        """The signer and HTTP session, made once, from a botocore Session's configuration."""
        with self._lock:
            if self._signer is None:
                import botocore.session
                from botocore.auth import S3SigV4Auth
                from botocore.httpsession import URLLib3Session
                from botocore.utils import get_environ_proxies

                session = self.session = self.session or botocore.session.Session()
                credentials = session.get_credentials()
                if credentials is None:
                    raise Unanswered("no credentials")
                # As botocore.session.create_client and botocore.endpoint decide them for the client:
                region = session.get_config_variable("region") or "us-east-1"
                verify = session.get_config_variable("ca_bundle")
                if verify is None:
                    verify = os.environ.get("REQUESTS_CA_BUNDLE", True)
                self._http = URLLib3Session(verify=verify, proxies=get_environ_proxies(url),
                                            timeout=(CONNECT_TIMEOUT, READ_TIMEOUT), max_pool_connections=2)
                self._signer = S3SigV4Auth(credentials, "s3", region)
            return self._http, self._signer


def _error_code(body: bytes) -> bytes | None:
    found = _ERROR_CODE.search(body or b"")
    return found.group(1) if found else None
