"""The two encodings of an archive file: gzip-compressed JSON Lines and Parquet.

Both hold the same things: the header (``ArchiveHeader``: range, signed checkpoint, the subtree
hashes outside the range) and one record per event with its stored columns, the state byte for
byte. JSON Lines: the header is the first line, each event a line as the offline proof export
writes it. Parquet (``pyarrow``): columns ``index``, ``stream_id``, ``version``, ``action``,
``state`` (binary, verbatim), one row group per page of events, the header in the file's
key-value metadata under ``auditcore-archive``.

Failure semantics: a format only encodes and decodes. Writing goes to a file its caller made
(under a temporary name: ``archive.write_archive`` renames or uploads it once complete); a
damaged file raises ``ArchiveError`` when read, naming what is wrong. Neither format is trusted
for anything: ``archive.check_archive`` recomputes every leaf and the signed root.
"""

from __future__ import annotations

import gzip
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, BinaryIO

from auditcore.errors import ConfigurationError
from auditcore.integrity.export import export_line
from auditcore.lifecycle.header import ArchivedEvent, ArchiveError, ArchiveHeader, parse_line
from auditcore.projection.log import LoggedEvent

PARQUET_HEADER_KEY = b"auditcore-archive"
_PARQUET_MAGIC = b"PAR1"
_GZIP_MAGIC = b"\x1f\x8b"

Page = list[tuple[int, LoggedEvent]]
"""Consecutive events of the range, each with its log position."""


class ArchiveFormat(ABC):
    """One encoding of an archive file."""

    name: str
    suffix: str

    @abstractmethod
    def write(self, header: ArchiveHeader, pages: Iterable[Page], file: BinaryIO) -> None:
        """Encode the header and every event of ``pages`` into ``file``."""

    @abstractmethod
    def read(self, path: Path) -> tuple[ArchiveHeader, Iterator[ArchivedEvent]]:
        """The header, and the events one by one (decoded as they are read)."""


class JsonLinesFormat(ArchiveFormat):
    name = "jsonl"
    suffix = ".jsonl.gz"

    def write(self, header: ArchiveHeader, pages: Iterable[Page], file: BinaryIO) -> None:
        with gzip.GzipFile(fileobj=file, mode="wb", compresslevel=6, mtime=0) as zipped:
            zipped.write(header.encode() + b"\n")
            for page in pages:
                zipped.write(b"".join(export_line(index, event) for index, event in page))

    def read(self, path: Path) -> tuple[ArchiveHeader, Iterator[ArchivedEvent]]:
        try:
            file = gzip.open(path, "rb")  # noqa: SIM115 - closed by the generator below
            header = ArchiveHeader.decode(file.readline())
        except (OSError, EOFError) as error:
            raise ArchiveError(f"cannot read the archive {path}: {error}") from error

        def events() -> Iterator[ArchivedEvent]:
            with file:
                try:
                    for number, line in enumerate(file, start=2):
                        yield parse_line(line, number)
                except (OSError, EOFError) as error:
                    raise ArchiveError(f"the archive {path} is damaged: {error}") from error

        return header, events()


class ParquetFormat(ArchiveFormat):
    name = "parquet"
    suffix = ".parquet"

    def write(self, header: ArchiveHeader, pages: Iterable[Page], file: BinaryIO) -> None:
        pa, pq = _pyarrow()
        schema = pa.schema(
            [
                ("index", pa.int64()),
                ("stream_id", pa.string()),
                ("version", pa.int64()),
                ("action", pa.string()),
                ("state", pa.binary()),
            ],
            metadata={PARQUET_HEADER_KEY: header.encode()},
        )
        with pq.ParquetWriter(file, schema, compression="zstd") as writer:
            for page in pages:
                writer.write_batch(
                    pa.record_batch(
                        [
                            pa.array([index for index, _ in page], pa.int64()),
                            pa.array([event.stream_id for _, event in page], pa.string()),
                            pa.array([event.version for _, event in page], pa.int64()),
                            pa.array([event.action for _, event in page], pa.string()),
                            pa.array([bytes(event.state) for _, event in page], pa.binary()),
                        ],
                        schema=schema,
                    )
                )

    def read(self, path: Path) -> tuple[ArchiveHeader, Iterator[ArchivedEvent]]:
        pa, pq = _pyarrow()
        try:
            parquet = pq.ParquetFile(path)
            metadata = parquet.schema_arrow.metadata or {}
        except (OSError, pa.ArrowException) as error:
            raise ArchiveError(f"cannot read the archive {path}: {error}") from error
        if PARQUET_HEADER_KEY not in metadata:
            raise ArchiveError("the archive's header is damaged: no auditcore-archive metadata")
        header = ArchiveHeader.decode(metadata[PARQUET_HEADER_KEY])
        columns = ["index", "stream_id", "version", "action", "state"]

        def events() -> Iterator[ArchivedEvent]:
            with parquet:
                try:
                    for batch in parquet.iter_batches(batch_size=5_000, columns=columns):
                        yield from _rows(batch.to_pydict())
                except (OSError, pa.ArrowException, KeyError, TypeError, ValueError) as error:
                    raise ArchiveError(f"the archive {path} is damaged: {error}") from error

        return header, events()


def _rows(batch: dict[str, list[Any]]) -> Iterator[ArchivedEvent]:
    for index, stream_id, version, action, state in zip(
        batch["index"], batch["stream_id"], batch["version"], batch["action"], batch["state"],
        strict=True,
    ):  # fmt: skip
        if None in (index, stream_id, version, action, state):
            raise ArchiveError(f"the row for log position {index} has an empty column")
        yield ArchivedEvent(int(index), str(stream_id), int(version), str(action), bytes(state))


def _pyarrow() -> tuple[Any, Any]:
    """pyarrow, imported when an archive is Parquet (it is slow to import)."""
    import pyarrow  # noqa: PLC0415
    import pyarrow.parquet  # noqa: PLC0415

    return pyarrow, pyarrow.parquet


FORMATS: dict[str, ArchiveFormat] = {f.name: f for f in (JsonLinesFormat(), ParquetFormat())}


def format_named(name: str) -> ArchiveFormat:
    try:
        return FORMATS[name]
    except KeyError:
        raise ConfigurationError(
            f"unknown archive format {name!r}: give one of {', '.join(FORMATS)}"
        ) from None


def format_of(path: Path) -> ArchiveFormat:
    """The format of a file, by its first bytes (not its name: a renamed file still reads)."""
    try:
        with path.open("rb") as file:
            magic = file.read(4)
    except OSError as error:
        raise ArchiveError(f"cannot read the archive {path}: {error}") from error
    if magic.startswith(_GZIP_MAGIC):
        return FORMATS["jsonl"]
    if magic == _PARQUET_MAGIC:
        return FORMATS["parquet"]
    raise ArchiveError(f"{path.name} is neither gzip JSON Lines nor Parquet")
