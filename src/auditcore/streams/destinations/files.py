"""Files: each batch as one gzipped JSON Lines object plus its manifest, in a local directory or
an S3-compatible bucket.

Layout: ``[prefix]<workspace>/<YYYY>/<MM>/<DD>/<YYYYMMDDTHHMMSSZ>-<batch id>.jsonl.gz``, the
time being the batch's first event's ``occurred_at`` (UTC), and beside it the same name ending
``.manifest.json``: ``{name, batch_id, stream_id, workspace_id, first_position,
last_position, count, sha256}`` (sha256 of the object's bytes). Each line of the object is
``{delivery_id, position, workspace_id, occurred_at, payload}``. The workspace part is the
workspace id as is: its pattern allows no ``/`` and no leading dot.

Failure semantics: the object is written first, then its manifest; a manifest therefore names
an object that is complete (readers take manifests as the list of complete objects). Locally
each is written to a temporary file in the target directory, fsynced, renamed over the final
name and the directory fsynced, so a crash leaves either no file or the whole one (a stray
``.tmp-*`` file at worst). In S3 a PUT is atomic by itself. The names derive from the batch
only (its id and first event), and the gzip stream carries no time or file name, so a retried
batch rewrites the same bytes under the same names: no second object for the same events.
A batch that a restart cut differently gets another batch id and its own object (at least
once: ``delivery_id`` tells duplicates apart). Errors raise ``DeliveryError``: permission and
missing-bucket errors are not retryable, everything else (a full disk, S3 5xx or throttling,
timeouts, a refused connection) is. Credentials never appear in error messages.
"""

from __future__ import annotations

import contextlib
import errno
import gzip
import hashlib
import io
import os
import re
import tempfile
from abc import ABC, abstractmethod
from datetime import UTC
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import boto3
import orjson
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError
from pydantic import BaseModel, ConfigDict, Field, model_validator

from auditcore.streams.base import Batch, DeliveryError, Destination
from auditcore.streams.destinations.splunk import redact

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

OBJECT_SUFFIX = ".jsonl.gz"
_SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_:-]{0,127}")
MANIFEST_SUFFIX = ".manifest.json"
_PERMANENT_ERRNOS = frozenset({errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOTDIR})
_TRANSIENT_S3_CODES = frozenset(
    {"RequestTimeout", "SlowDown", "RequestTimeTooSkewed", "Throttling", "ThrottlingException"}
)
"""S3 errors answered with a 4xx status that a later attempt can get past."""
_PERMANENT_S3_CODES = frozenset(
    {
        "AccessDenied",
        "InvalidAccessKeyId",
        "SignatureDoesNotMatch",
        "NoSuchBucket",
        "InvalidBucketName",
        "AllAccessDisabled",
        "AccountProblem",
    }
)


class FilesSettings(BaseModel):
    """A local directory, or an S3-compatible bucket (exactly one)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    directory: str | None = Field(default=None, min_length=1, max_length=4096)
    bucket: str | None = Field(default=None, min_length=3, max_length=63)
    prefix: str = Field(default="", max_length=512, pattern=r"^([^/.][^/]*/)*$")
    endpoint_url: str | None = Field(
        default=None, max_length=2048, description="An S3-compatible service's URL."
    )
    region: str | None = Field(default=None, max_length=64)
    access_key_id: str | None = Field(default=None, max_length=256, repr=False)
    secret_access_key: str | None = Field(default=None, max_length=256, repr=False)
    timeout_seconds: float = Field(default=30.0, gt=0, le=600)

    @model_validator(mode="after")
    def _one_place(self) -> FilesSettings:
        if (self.directory is None) == (self.bucket is None):
            raise ValueError("give exactly one of 'directory' and 'bucket'")
        return self


def object_name(batch: Batch) -> str:
    """The object's name (without prefix): workspace, the first event's time, the batch id (or,
    should it hold characters unsafe in a file name, its sha256)."""
    moment = batch.events[0].occurred_at.astimezone(UTC)
    batch_part = (
        batch.batch_id
        if _SAFE_NAME.fullmatch(batch.batch_id)
        else hashlib.sha256(batch.batch_id.encode()).hexdigest()
    )
    return (
        f"{batch.workspace_id}/{moment:%Y/%m/%d}/{moment:%Y%m%dT%H%M%SZ}-{batch_part}"
        + OBJECT_SUFFIX
    )


def encode(batch: Batch) -> bytes:
    """The batch as gzipped JSON Lines; the same batch always gives the same bytes."""
    lines = b"".join(
        orjson.dumps(
            {
                "delivery_id": event.delivery_id,
                "position": event.position,
                "workspace_id": event.workspace_id,
                "occurred_at": event.occurred_at,
                "payload": event.payload,
            }
        )
        + b"\n"
        for event in batch.events
    )
    buffer = io.BytesIO()
    # mtime=0 and no file name: the bytes depend on the events only.
    with gzip.GzipFile(filename="", mode="wb", fileobj=buffer, mtime=0) as packed:
        packed.write(lines)
    return buffer.getvalue()


def manifest(name: str, batch: Batch, data: bytes) -> bytes:
    """The object's manifest entry as JSON."""
    entry: dict[str, Any] = {
        "name": name,
        "batch_id": batch.batch_id,
        "stream_id": batch.stream_id,
        "workspace_id": batch.workspace_id,
        "first_position": batch.events[0].position,
        "last_position": batch.events[-1].position,
        "count": len(batch.events),
        "sha256": hashlib.sha256(data).hexdigest(),
    }
    return orjson.dumps(entry, option=orjson.OPT_SORT_KEYS | orjson.OPT_APPEND_NEWLINE)


class _Store(ABC):
    """Where objects go."""

    @abstractmethod
    def put(self, name: str, data: bytes, content_type: str) -> None:
        """Write ``data`` under ``name`` atomically, or raise ``DeliveryError``."""

    def close(self) -> None:  # noqa: B027 - the local store holds nothing
        """Release connections."""


class _LocalStore(_Store):
    def __init__(self, directory: str, prefix: str) -> None:
        self._root = Path(directory)
        self._prefix = prefix

    def put(self, name: str, data: bytes, content_type: str) -> None:
        path = self._root / (self._prefix + name)
        try:
            _write_atomically(path, data)
        except OSError as error:
            raise DeliveryError(
                f"files: cannot write {path} ({os.strerror(error.errno or 0)})",
                retryable=error.errno not in _PERMANENT_ERRNOS,
            ) from None


def _write_atomically(path: Path, data: bytes) -> None:
    created = _make_directories(path.parent)
    descriptor, temporary = tempfile.mkstemp(prefix=f".{path.name}.tmp-", dir=path.parent)
    try:
        with os.fdopen(descriptor, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise
    # The rename (and any directory made for it) lasts only once its directory is synced.
    for directory in [path.parent, *created]:
        _fsync_directory(directory)


def _make_directories(directory: Path) -> list[Path]:
    """Make ``directory`` and its missing parents; the parents of those made, to be synced."""
    missing = []
    current = directory
    while not current.exists():
        missing.append(current)
        current = current.parent
    directory.mkdir(parents=True, exist_ok=True)
    return [made.parent for made in missing]


def _fsync_directory(directory: Path) -> None:
    descriptor = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


class _S3Store(_Store):
    def __init__(self, settings: FilesSettings) -> None:
        assert settings.bucket is not None
        self._bucket = settings.bucket
        self._prefix = settings.prefix
        self._secrets = tuple(
            secret for secret in (settings.secret_access_key, settings.access_key_id) if secret
        )
        self._client: S3Client = boto3.client(
            "s3",
            endpoint_url=settings.endpoint_url,
            region_name=settings.region,
            aws_access_key_id=settings.access_key_id,
            aws_secret_access_key=settings.secret_access_key,
            config=Config(
                connect_timeout=settings.timeout_seconds,
                read_timeout=settings.timeout_seconds,
                # The streamer retries with backoff; botocore's own retries would hide faults.
                retries={"max_attempts": 1, "mode": "standard"},
            ),
        )

    def put(self, name: str, data: bytes, content_type: str) -> None:
        key = self._prefix + name
        try:
            self._client.put_object(
                Bucket=self._bucket, Key=key, Body=data, ContentType=content_type
            )
        except ClientError as error:
            code = str(error.response.get("Error", {}).get("Code", ""))
            status = int(error.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0))
            raise DeliveryError(
                f"files: s3://{self._bucket}/{key}: {redact(code, self._secrets)} ({status})",
                retryable=code in _TRANSIENT_S3_CODES
                or (code not in _PERMANENT_S3_CODES and status not in (400, 401, 403, 404)),
            ) from None
        except BotoCoreError as error:
            raise DeliveryError(
                f"files: s3://{self._bucket}/{key}: {type(error).__name__}"
            ) from None

    def close(self) -> None:
        self._client.close()


class FilesDestination(Destination):
    """Rotated, gzipped JSON Lines: one object per batch, with a manifest."""

    kind: ClassVar[str] = "files"
    Settings: ClassVar[type[BaseModel]] = FilesSettings
    secret_fields: ClassVar[frozenset[str]] = frozenset({"secret_access_key"})

    def __init__(self, settings: BaseModel) -> None:
        super().__init__(settings)
        assert isinstance(settings, FilesSettings)
        self._store: _Store = (
            _LocalStore(settings.directory, settings.prefix)
            if settings.directory is not None
            else _S3Store(settings)
        )

    def deliver(self, batch: Batch) -> None:
        if not batch.events:
            return
        name = object_name(batch)
        data = encode(batch)
        self._store.put(name, data, "application/gzip")
        # Second: a manifest only ever names a complete object.
        self._store.put(
            name.removesuffix(OBJECT_SUFFIX) + MANIFEST_SUFFIX,
            manifest(name, batch, data),
            "application/json",
        )

    def close(self) -> None:
        self._store.close()
