"""Publishing signed checkpoints beyond the database: the seam other destinations plug into.

A checkpoint kept only in the store's database proves little against whoever controls that
database: they could roll the store back, checkpoints and all. A copy elsewhere (a directory
synced to other machines, and later the log streams) is what makes a rewrite show.

Failure semantics: publishing happens after the checkpoint is stored; a publisher that fails
is logged and tried again with the next checkpoint (each publish writes the latest one too).
"""

from __future__ import annotations

import os
import tempfile
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from pathlib import Path

from auditcore.integrity.log import StoredCheckpoint

LATEST = "checkpoint"
HISTORY = "history"


class CheckpointPublisher(ABC):
    """Somewhere signed checkpoints are copied to as they are made."""

    @abstractmethod
    def publish(self, checkpoints: Sequence[StoredCheckpoint]) -> None:
        """Copy these checkpoints (each the newest of its workspace at the time)."""

    def describe(self) -> str:
        return type(self).__name__


class DirectoryPublisher(CheckpointPublisher):
    """``DIR/<workspace>/checkpoint`` (the latest, replaced atomically) and
    ``DIR/<workspace>/history/<tree size>-<key id>`` (every one): plain files, easy to sync
    to other hosts or object storage, and to hand to ``auditcore verify --checkpoint``."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def publish(self, checkpoints: Sequence[StoredCheckpoint]) -> None:
        for checkpoint in checkpoints:
            folder = self.directory / checkpoint.workspace_id
            history = folder / HISTORY
            history.mkdir(parents=True, exist_ok=True)
            name = f"{checkpoint.size:020d}-{checkpoint.key_id:08x}"
            _write_atomically(history / name, checkpoint.note)
            _write_atomically(folder / LATEST, checkpoint.note)

    def describe(self) -> str:
        return f"directory {self.directory}"


def _write_atomically(path: Path, text: str) -> None:
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=".checkpoint-")
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as file:
            file.write(text)
            file.flush()
            os.fsync(file.fileno())
        Path(temporary).replace(path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def published_notes(directory: Path) -> Iterator[tuple[Path, str]]:
    """Every checkpoint file a ``DirectoryPublisher`` wrote under ``directory``."""
    if not directory.is_dir():
        return
    for folder in sorted(directory.iterdir()):
        if not folder.is_dir():
            continue
        files = [folder / LATEST, *sorted((folder / HISTORY).glob("*"))]
        for path in files:
            if path.is_file() and not path.name.startswith("."):
                yield path, path.read_text(encoding="utf-8", errors="replace")
