"""Archives of a tenant's agent data in S3-compatible object storage.

``ObjectStore`` is the one interface; ``S3ObjectStore`` speaks the S3 API through boto3 (Hetzner
Object Storage: ``endpoint_url=https://<location>.your-objectstorage.com``, per Hetzner's Object
Storage docs) and ``LocalObjectStore`` keeps objects in a directory (the embedded default).

An archive is a gzipped tar stream stored under ``archives/{env}/{tenant}/{UTC timestamp}.tar.gz``
with user metadata (tenant, env, created-at, source) and a JSON manifest object next to it
(``<key>.manifest.json``) holding the byte count and SHA-256, which are only known once the stream
has been read to the end.  How the bytes leave the machine is a strategy
(``control.providers.hetzner.archive``): over SSH in production, a local directory in tests.
"""

from __future__ import annotations

import abc
import datetime as dt
import hashlib
import json
import os
import re
import tarfile
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO, Protocol, cast

from control.errors import ProvisioningError

#: Part size for S3 multipart uploads, bytes.  S3 requires at least 5 MiB per part except the last
#: (AWS S3 docs, "Multipart upload limits"); 8 MiB is boto3's default.
DEFAULT_PART_SIZE = 8 * 1024 * 1024
#: Archives up to this size are built in memory before upload, bytes; larger ones spill to disk.
SPOOL_LIMIT = 64 * 1024 * 1024
_CHUNK = 1024 * 1024


@dataclass(frozen=True)
class ArchiveResult:
    """One stored archive.

    Attributes:
        key: object key of the archive.
        bytes: size of the stored archive, bytes.
        sha256: hex SHA-256 of the stored archive.
    """

    key: str
    bytes: int
    sha256: str


# Longest lifetime of a SigV4 presigned URL, seconds (7 days; AWS's and Hetzner's S3 refuse more).
SIGV4_MAX_EXPIRY = 7 * 24 * 3600

def archive_key(env: str, tenant: str, now: dt.datetime | None = None) -> str:
    """Return ``archives/{env}/{tenant}/{UTC timestamp}.tar.gz`` (timestamp ``YYYYmmddTHHMMSSZ``)."""
    moment = (now or dt.datetime.now(dt.UTC)).astimezone(dt.UTC)
    return f"archives/{env}/{tenant}/{moment:%Y%m%dT%H%M%SZ}.tar.gz"


class ByteSource(Protocol):
    """What the stores read an upload from: a binary file, a pipe, or a wrapper of one."""

    def read(self, size: int = -1, /) -> bytes: ...


class ObjectStore(abc.ABC):
    """A flat key → bytes store with per-object string metadata."""

    @abc.abstractmethod
    def put_stream(self, key: str, stream: ByteSource, metadata: dict[str, str]) -> None:
        """Store everything readable from ``stream`` under ``key`` with ``metadata``.

        Raises:
            ProvisioningError: the store refused the object.
        """

    @abc.abstractmethod
    def get_bytes(self, key: str) -> bytes:
        """Return the object's content.  Raises ``KeyError`` when absent."""

    @abc.abstractmethod
    def metadata(self, key: str) -> dict[str, str]:
        """Return the object's user metadata.  Raises ``KeyError`` when absent."""

    @abc.abstractmethod
    def list_keys(self, prefix: str = "") -> list[str]:
        """Return the sorted keys that start with ``prefix``."""

    @abc.abstractmethod
    def delete(self, key: str) -> None:
        """Delete ``key``; deleting an absent key is not an error."""

    def presigned_url(self, key: str, expires_in: int, content_type: str = "",
                      disposition: str = "") -> str | None:
        """Return a URL that answers ``key``'s content to a plain GET for ``expires_in``
        seconds, signed by the store itself, with ``content_type`` and ``disposition`` as the
        answer's ``Content-Type`` and ``Content-Disposition`` when given; None when the store
        cannot sign one (the default: the caller serves the object through its own route)."""
        return None

    def put_bytes(self, key: str, data: bytes, metadata: dict[str, str] | None = None) -> None:
        """Store ``data`` under ``key``."""
        import io

        self.put_stream(key, io.BytesIO(data), metadata or {})


class LocalObjectStore(ObjectStore):
    """Objects as files under ``root`` (metadata in a ``.meta.json`` sidecar); writes are atomic."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    def _path(self, key: str) -> Path:
        path = (self.root / key).resolve()
        if self.root.resolve() not in path.parents:
            raise ProvisioningError(f"object key escapes the store: {key!r}")
        return path

    def put_stream(self, key: str, stream: ByteSource, metadata: dict[str, str]) -> None:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".upload-")
        try:
            with os.fdopen(fd, "wb") as out:
                while chunk := stream.read(_CHUNK):
                    out.write(chunk)
            Path(str(path) + ".meta.json").write_text(json.dumps(metadata, sort_keys=True))
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def get_bytes(self, key: str) -> bytes:
        path = self._path(key)
        if not path.is_file():
            raise KeyError(key)
        return path.read_bytes()

    def metadata(self, key: str) -> dict[str, str]:
        meta = Path(str(self._path(key)) + ".meta.json")
        if not meta.is_file():
            raise KeyError(key)
        return json.loads(meta.read_text())

    def list_keys(self, prefix: str = "") -> list[str]:
        keys = (
            p.relative_to(self.root).as_posix()
            for p in self.root.rglob("*")
            if p.is_file() and not p.name.endswith(".meta.json") and not p.name.startswith(".")
        )
        return sorted(k for k in keys if k.startswith(prefix))

    def delete(self, key: str) -> None:
        path = self._path(key)
        path.unlink(missing_ok=True)
        Path(str(path) + ".meta.json").unlink(missing_ok=True)


class S3ObjectStore(ObjectStore):
    """An S3 bucket through boto3, with managed multipart uploads for large archives.

    Args:
        bucket: bucket name (must exist).
        endpoint_url: S3 endpoint, e.g. ``https://fsn1.your-objectstorage.com`` for Hetzner
            Object Storage; ``None`` for AWS.
        access_key, secret_key: S3 credentials; ``None`` uses boto3's default chain.
        region: signing region (Hetzner uses the location name, e.g. ``fsn1``).
        part_size: multipart threshold and chunk size, bytes (min 5 MiB per S3's limits).
        client: a ready boto3 S3 client (tests); overrides the connection arguments.
    """

    def __init__(
        self,
        bucket: str,
        *,
        endpoint_url: str | None = None,
        access_key: str | None = None,
        secret_key: str | None = None,
        region: str | None = None,
        part_size: int = DEFAULT_PART_SIZE,
        client=None,
    ):
        import boto3
        from boto3.s3.transfer import TransferConfig
        from botocore.config import Config

        self.bucket = bucket
        self._client = client or boto3.client(
            "s3",
            endpoint_url=endpoint_url,
            aws_access_key_id=access_key,
            aws_secret_access_key=secret_key,
            region_name=region,
            # SigV4 everywhere: presigned URLs too (boto3 may pick SigV2 for those otherwise).
            config=Config(signature_version="s3v4"),
        )
        self._transfer = TransferConfig(multipart_threshold=part_size, multipart_chunksize=part_size)

    def put_stream(self, key: str, stream: ByteSource, metadata: dict[str, str]) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self._client.upload_fileobj(
                cast(IO[bytes], stream),  # it needs only read() (boto3's upload_fileobj docs)
                self.bucket,
                key,
                ExtraArgs={"Metadata": metadata, "ContentType": _content_type(key)},
                Config=self._transfer,
            )
        except (BotoCoreError, ClientError) as err:
            raise ProvisioningError(f"upload of {key} to bucket {self.bucket} failed: {err}") from err

    def get_bytes(self, key: str) -> bytes:
        try:
            return self._client.get_object(Bucket=self.bucket, Key=key)["Body"].read()
        except self._client.exceptions.NoSuchKey as err:
            raise KeyError(key) from err

    def metadata(self, key: str) -> dict[str, str]:
        from botocore.exceptions import ClientError

        try:
            return self._client.head_object(Bucket=self.bucket, Key=key)["Metadata"]
        except ClientError as err:
            raise KeyError(key) from err

    def list_keys(self, prefix: str = "") -> list[str]:
        paginator = self._client.get_paginator("list_objects_v2")
        keys: list[str] = []
        for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix):
            keys.extend(item["Key"] for item in page.get("Contents", []))
        return sorted(keys)

    def delete(self, key: str) -> None:
        self._client.delete_object(Bucket=self.bucket, Key=key)

    def presigned_url(self, key: str, expires_in: int, content_type: str = "",
                      disposition: str = "") -> str | None:
        """A presigned ``GetObject`` URL (SigV4 query string, boto3's
        ``generate_presigned_url``), the answer's headers set by S3's ``response-content-type``
        and ``response-content-disposition`` overrides (S3 API, GetObject); SigV4 allows at most
        7 days (604,800 s), so longer lifetimes are cut to that
        (https://docs.aws.amazon.com/AmazonS3/latest/userguide/using-presigned-url.html)."""
        params = {"Bucket": self.bucket, "Key": key}
        if content_type:
            params["ResponseContentType"] = content_type
        if disposition:
            params["ResponseContentDisposition"] = disposition
        return self._client.generate_presigned_url("get_object", Params=params,
                                                   ExpiresIn=min(expires_in, SIGV4_MAX_EXPIRY))


def _content_type(key: str) -> str:
    return {"gz": "application/gzip", "json": "application/json"}.get(key.rsplit(".", 1)[-1],
                                                                      "application/octet-stream")


class _HashingReader:
    """Wraps a binary stream, counting bytes and hashing them as they are read."""

    def __init__(self, raw: ByteSource):
        self._raw = raw
        self.bytes = 0
        self._sha = hashlib.sha256()

    def read(self, size: int = -1) -> bytes:
        chunk = self._raw.read(size)
        self.bytes += len(chunk)
        self._sha.update(chunk)
        return chunk

    @property
    def sha256(self) -> str:
        return self._sha.hexdigest()


def archive_stream(
    store: ObjectStore, stream: ByteSource, key: str, metadata: dict[str, str] | None = None
) -> ArchiveResult:
    """Upload a ``.tar.gz`` stream to ``key`` and write its manifest; return what was stored.

    The manifest (``<key>.manifest.json``) is written only after the archive upload succeeded, so
    a manifest's presence means the archive is complete.

    Raises:
        ProvisioningError: the upload failed.
    """
    meta = {"created-at": dt.datetime.now(dt.UTC).isoformat(), **(metadata or {})}
    reader = _HashingReader(stream)
    store.put_stream(key, reader, meta)
    result = ArchiveResult(key=key, bytes=reader.bytes, sha256=reader.sha256)
    manifest = {**asdict(result), "metadata": meta}
    store.put_bytes(key + ".manifest.json", json.dumps(manifest, sort_keys=True).encode(), meta)
    return result


def archive_directory(
    store: ObjectStore, src_dir: str | os.PathLike, key: str, metadata: dict[str, str] | None = None,
    exclude: frozenset[str] = frozenset(),
) -> ArchiveResult:
    """Tar and gzip ``src_dir`` (its contents, relative paths) and store it under ``key``.

    ``exclude`` names top-level entries left out (``LocalProvisioner`` leaves out
    ``machine.json``: it holds the destroyed machine's secrets, and restores never read it).
    The archive is built in a spooled temporary file (memory up to ``SPOOL_LIMIT`` bytes, disk
    beyond) so a failing upload can be retried by the caller without re-reading the source.

    Raises:
        ProvisioningError: ``src_dir`` is not a directory, or the upload failed.
    """
    src = Path(src_dir)
    if not src.is_dir():
        raise ProvisioningError(f"cannot archive {src}: not a directory")
    with tempfile.SpooledTemporaryFile(max_size=SPOOL_LIMIT) as spool:
        with tarfile.open(fileobj=spool, mode="w:gz") as tar:
            for child in sorted(src.iterdir()):
                if child.name in exclude:
                    continue
                tar.add(child, arcname=child.name)
        spool.seek(0)
        return archive_stream(store, spool, key, metadata)


def read_archive(store: ObjectStore, key: str) -> bytes:
    """Return the archive under ``key`` after checking it against its manifest's SHA-256.

    Raises:
        ProvisioningError: the archive or its manifest is missing (an incomplete upload has
            no manifest, ``archive_stream``) or the bytes do not match.
    """
    try:
        data = store.get_bytes(key)
        manifest = json.loads(store.get_bytes(key + ".manifest.json"))
    except KeyError as err:
        raise ProvisioningError(f"archive {key} or its manifest is missing") from err
    if hashlib.sha256(data).hexdigest() != manifest.get("sha256"):
        raise ProvisioningError(f"archive {key} does not match its manifest's SHA-256")
    return data


def delete_archive(store: ObjectStore, key: str) -> None:
    """Delete an archive and its manifest; deleting an absent one is not an error."""
    store.delete(key)
    store.delete(key + ".manifest.json")


_KEY_STAMP = re.compile(r"/(\d{8}T\d{6}Z)[^/]*\.tar\.gz$")


def archive_created_at(key: str) -> dt.datetime | None:
    """Return the UTC time in an archive key (``archive_key``; orphan sweeps append
    ``-server<id>``), or None when ``key`` is not an archive (e.g. a manifest)."""
    match = _KEY_STAMP.search(key)
    if match is None:
        return None
    return dt.datetime.strptime(match.group(1), "%Y%m%dT%H%M%SZ").replace(tzinfo=dt.UTC)
