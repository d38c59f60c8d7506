"""Where archives are kept: a local directory, or an S3-compatible bucket (``boto3``).

An archive's location is what its row records: an absolute path, or ``s3://bucket/key``. In a
bucket each archive is two objects: the archive itself, then ``<key>.manifest.json`` (its
SHA-256, size and range). The endpoint is ``AUDITCORE_S3_ENDPOINT`` (else boto3's own
settings: ``AWS_ENDPOINT_URL_S3``, ``AWS_ENDPOINT_URL``, or AWS itself); credentials and region
are boto3's (``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_DEFAULT_REGION``, profiles).

Failure semantics: ``store`` writes the archive to a local file, checks it (every leaf and the
signed root), and only then puts it in place: locally by the writer's own rename; in a bucket
by uploading the object (with its SHA-256 for the server to check), then the manifest. An
archive without its manifest is incomplete and is never read (``fetched`` refuses it); a crash
between the two uploads leaves no archive row, so nothing is deleted, and the rerun uploads
both again under the same key. Reading an archive from a bucket downloads it to a temporary
file and compares it with the manifest's SHA-256 before anything else looks at it.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import os
import tempfile
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from auditcore.errors import ConfigurationError
from auditcore.lifecycle.header import ArchiveError, ArchiveHeader

S3_ENDPOINT_VARIABLE = "AUDITCORE_S3_ENDPOINT"
MANIFEST_SUFFIX = ".manifest.json"
MANIFEST_FORMAT = "auditcore-archive-manifest/1"


class ArchiveUnreachableError(ArchiveError):
    """The archive is not there (or its store cannot be reached): nothing can be checked."""


@dataclass(frozen=True)
class Placed:
    location: str
    """An absolute path, or ``s3://bucket/key``."""
    sha256: str


class ArchiveLocation(ABC):
    """Where a retention run puts its archives."""

    @abstractmethod
    def store(
        self,
        name: str,
        write: Callable[[Path], ArchiveHeader],
        check: Callable[[Path], object],
    ) -> tuple[ArchiveHeader, Placed]:
        """Write the archive ``name`` with ``write`` (to a local path it is given), check it
        with ``check``, and put it in place (see the module header)."""

    @abstractmethod
    def describe(self) -> str:
        """Where archives go, for messages."""


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        while block := file.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


class LocalDirectory(ArchiveLocation):
    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def store(
        self,
        name: str,
        write: Callable[[Path], ArchiveHeader],
        check: Callable[[Path], object],
    ) -> tuple[ArchiveHeader, Placed]:
        path = self.directory / name
        header = write(path)  # atomic: a temporary name, fsync, rename
        check(path)
        return header, Placed(str(path.resolve()), sha256_of(path))

    def describe(self) -> str:
        return str(self.directory)


class S3Bucket(ArchiveLocation):
    def __init__(self, bucket: str, prefix: str) -> None:
        self.bucket, self.prefix = bucket, prefix

    def key_of(self, name: str) -> str:
        return f"{self.prefix}/{name}" if self.prefix else name

    def store(
        self,
        name: str,
        write: Callable[[Path], ArchiveHeader],
        check: Callable[[Path], object],
    ) -> tuple[ArchiveHeader, Placed]:
        key = self.key_of(name)
        with tempfile.TemporaryDirectory(prefix="auditcore-archive-") as scratch:
            path = Path(scratch) / name
            header = write(path)
            check(path)
            digest = sha256_of(path)
            client = s3_client()
            with _s3_errors(f"s3://{self.bucket}/{key}"), path.open("rb") as body:
                client.put_object(
                    Bucket=self.bucket,
                    Key=key,
                    Body=body,
                    ChecksumSHA256=base64.b64encode(bytes.fromhex(digest)).decode(),
                )
                manifest = {
                    "format": MANIFEST_FORMAT,
                    "sha256": digest,
                    "size": path.stat().st_size,
                    "workspace_id": header.workspace_id,
                    "from_size": header.from_size,
                    "to_size": header.to_size,
                }
                client.put_object(
                    Bucket=self.bucket, Key=key + MANIFEST_SUFFIX, Body=orjson.dumps(manifest)
                )
        return header, Placed(f"s3://{self.bucket}/{key}", digest)

    def describe(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}"


def location_of(spec: str | Path) -> ArchiveLocation:
    """A directory path, or ``s3://bucket[/prefix]``."""
    text = str(spec)
    if text.startswith("s3://"):
        bucket, prefix = split_s3(text)
        return S3Bucket(bucket, prefix)
    return LocalDirectory(Path(text))


def split_s3(url: str) -> tuple[str, str]:
    bucket, _, key = url.removeprefix("s3://").partition("/")
    if not bucket:
        raise ConfigurationError(f"{url!r} names no bucket: give s3://bucket/prefix")
    return bucket, key.strip("/")


@contextlib.contextmanager
def fetched(location: str | Path) -> Iterator[Path]:
    """A local file holding the archive at ``location`` (downloaded from a bucket, and
    compared with its manifest, for the time of the ``with``)."""
    text = str(location)
    if not text.startswith("s3://"):
        path = Path(text)
        if not path.is_file():
            raise ArchiveUnreachableError(f"no archive at {path}")
        yield path
        return
    bucket, key = split_s3(text)
    client = s3_client()
    with _s3_errors(text):
        manifest = _manifest(client, bucket, key)
        with tempfile.TemporaryDirectory(prefix="auditcore-archive-") as scratch:
            path = Path(scratch) / (key.rsplit("/", 1)[-1] or "archive")
            client.download_file(bucket, key, str(path))
            if sha256_of(path) != manifest:
                raise ArchiveError(
                    f"{text} does not match the SHA-256 of its manifest: the object was "
                    "replaced or damaged"
                )
            yield path


def _manifest(client: Any, bucket: str, key: str) -> str:
    try:
        body = client.get_object(Bucket=bucket, Key=key + MANIFEST_SUFFIX)["Body"].read()
    except client.exceptions.NoSuchKey:
        raise ArchiveUnreachableError(
            f"s3://{bucket}/{key} has no manifest: the archive is incomplete (an upload that "
            "did not finish) or absent"
        ) from None
    try:
        data = orjson.loads(body)
        known, digest = data.get("format") == MANIFEST_FORMAT, str(data["sha256"])
    except (orjson.JSONDecodeError, AttributeError, KeyError) as error:
        raise ArchiveError(f"the manifest of s3://{bucket}/{key} is damaged: {error}") from error
    if not known:
        raise ArchiveError(f"the manifest of s3://{bucket}/{key} is not an auditcore manifest")
    return digest


def s3_client() -> Any:
    """A boto3 S3 client for ``AUDITCORE_S3_ENDPOINT`` (else boto3's own configuration)."""
    import boto3  # noqa: PLC0415 - slow to import; only archives in a bucket need it

    return boto3.client("s3", endpoint_url=os.environ.get(S3_ENDPOINT_VARIABLE) or None)


@contextlib.contextmanager
def _s3_errors(where: str) -> Iterator[None]:
    """boto3's errors as ``ArchiveError`` (a missing object as ``ArchiveUnreachableError``)."""
    from botocore.exceptions import BotoCoreError, ClientError  # noqa: PLC0415

    try:
        yield
    except ClientError as error:
        code = str(error.response.get("Error", {}).get("Code", ""))
        if code in {"404", "NoSuchKey", "NoSuchBucket"}:
            raise ArchiveUnreachableError(f"{where}: not found ({code})") from error
        raise ArchiveError(f"{where}: {error}") from error
    except BotoCoreError as error:
        raise ArchiveUnreachableError(f"{where}: {error}") from error
