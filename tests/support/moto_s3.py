"""moto's real S3 server on loopback (tests/providers/, test_media_store.py): started once per
fixture scope, a fresh bucket per test, moto's documented dummy credentials."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager

# moto accepts any credentials; these are the ones its docs use
# (https://docs.getmoto.org/en/latest/docs/getting_started.html#recommended-usage).
ACCESS_KEY = SECRET_KEY = "testing"
REGION = "us-east-1"


@contextmanager
def moto_s3_server() -> Iterator[str]:
    """Run ``moto.server.ThreadedMotoServer`` on a free 127.0.0.1 port; yields its endpoint URL
    (``http://127.0.0.1:<port>``) and stops it on exit."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        yield f"http://{host}:{port}"
    finally:
        server.stop()


def new_bucket(endpoint: str, prefix: str, length: int = 12) -> str:
    """Create a bucket named ``<prefix>-<length random hex digits>`` on the S3 server at
    ``endpoint``; return its name."""
    import boto3

    bucket = f"{prefix}-{uuid.uuid4().hex[:length]}"
    boto3.client("s3", endpoint_url=endpoint, aws_access_key_id=ACCESS_KEY,
                 aws_secret_access_key=SECRET_KEY, region_name=REGION).create_bucket(Bucket=bucket)
    return bucket
