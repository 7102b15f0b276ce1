"""The ObjectStore contract, for S3 (moto's server) and the local directory store."""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import os
import tarfile

import pytest

from control.errors import ProvisioningError
from control.providers.archive import (
    LocalObjectStore,
    archive_directory,
    archive_key,
    archive_stream,
)


@pytest.fixture(params=["s3", "local"])
def store(request, tmp_path):
    if request.param == "s3":
        return request.getfixturevalue("s3_store")
    return LocalObjectStore(tmp_path / "objects")


def test_archive_directory_round_trips_with_size_hash_and_metadata(store, tmp_path):
    src = tmp_path / "data"
    (src / "skills").mkdir(parents=True)
    (src / "skills" / "brew.md").write_text("steep 3 minutes")
    key = archive_key("prod", "alice", dt.datetime(2026, 3, 1, 12, 30, 5, tzinfo=dt.UTC))

    result = archive_directory(store, src, key, {"tenant": "alice"})

    assert key == "archives/prod/alice/20260301T123005Z.tar.gz"
    blob = store.get_bytes(key)
    assert (result.bytes, result.sha256) == (len(blob), hashlib.sha256(blob).hexdigest())
    with tarfile.open(fileobj=io.BytesIO(blob)) as tar:
        assert tar.extractfile("skills/brew.md").read() == b"steep 3 minutes"
    assert store.metadata(key)["tenant"] == "alice"
    assert store.list_keys("archives/prod/") == [key, key + ".manifest.json"]


def test_large_stream_is_stored_intact(store):
    payload = os.urandom(11 * 1024 * 1024)  # above the 5 MiB part size: a multipart upload
    result = archive_stream(store, io.BytesIO(payload), "archives/t/big.tar.gz")
    assert result.bytes == len(payload)
    assert hashlib.sha256(store.get_bytes("archives/t/big.tar.gz")).hexdigest() == result.sha256


def test_missing_objects_and_sources(store, tmp_path):
    with pytest.raises(KeyError):
        store.get_bytes("archives/none")
    with pytest.raises(ProvisioningError, match="not a directory"):
        archive_directory(store, tmp_path / "absent", "archives/x.tar.gz")
    store.delete("archives/none")  # deleting an absent key is fine


def test_upload_to_a_missing_bucket_is_a_provisioning_error(s3_store):
    from control.providers.archive import S3ObjectStore

    broken = S3ObjectStore("no-such-bucket", client=s3_store._client)
    with pytest.raises(ProvisioningError, match="no-such-bucket"):
        archive_stream(broken, io.BytesIO(b"x"), "archives/x.tar.gz")


def test_local_store_refuses_keys_outside_its_root(tmp_path):
    with pytest.raises(ProvisioningError, match="escapes"):
        LocalObjectStore(tmp_path / "objects").put_bytes("../evil", b"x")
