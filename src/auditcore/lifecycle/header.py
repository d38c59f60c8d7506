"""An archive's header and its events, whatever the file's format (``formats``).

Failure semantics: decoding only; anything malformed raises ``ArchiveError`` naming the line
or field. What the header claims is not trusted here: ``archive.check_archive`` proves it.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Any

import orjson

from auditcore.errors import AuditcoreError
from auditcore.projection.log import LoggedEvent

FORMAT = "auditcore-archive/1"


class ArchiveError(AuditcoreError):
    """An archive could not be written, or does not verify."""


@dataclass(frozen=True)
class ArchiveHeader:
    workspace_id: str
    from_size: int
    to_size: int
    checkpoint: str
    nodes: tuple[tuple[int, int, bytes], ...]
    first_position: int
    last_position: int

    def encode(self) -> bytes:
        return orjson.dumps(
            {
                "format": FORMAT,
                "workspace_id": self.workspace_id,
                "from_size": self.from_size,
                "to_size": self.to_size,
                "first_store_position": self.first_position,
                "last_store_position": self.last_position,
                "checkpoint": self.checkpoint,
                "nodes": [
                    [level, index, base64.b64encode(value).decode()]
                    for level, index, value in self.nodes
                ],
            }
        )

    @classmethod
    def decode(cls, line: bytes) -> ArchiveHeader:
        try:
            data = orjson.loads(line)
            if data.get("format") != FORMAT:
                raise ArchiveError(f"not an auditcore archive (format {data.get('format')!r})")
            return cls(
                str(data["workspace_id"]),
                int(data["from_size"]),
                int(data["to_size"]),
                str(data["checkpoint"]),
                tuple(
                    (int(level), int(index), base64.b64decode(value, validate=True))
                    for level, index, value in data["nodes"]
                ),
                int(data["first_store_position"]),
                int(data["last_store_position"]),
            )
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError) as error:
            raise ArchiveError(f"the archive's header is damaged: {error}") from error


@dataclass(frozen=True)
class ArchivedEvent:
    """One line of an archive: an event's stored columns, as they were stored."""

    index: int
    stream_id: str
    version: int
    action: str
    state: bytes

    def logged(self, position: int = 0) -> LoggedEvent:
        return LoggedEvent(position, self.stream_id, self.version, self.action, self.state)


def parse_line(line: bytes, number: int) -> ArchivedEvent:
    try:
        data: dict[str, Any] = orjson.loads(line)
        return ArchivedEvent(
            int(data["index"]), str(data["stream_id"]), int(data["version"]),
            str(data["action"]), _state(line, data),
        )  # fmt: skip
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as error:
        raise ArchiveError(f"line {number} of the archive is not an event: {error}") from error


def _state(line: bytes, data: dict[str, Any]) -> bytes:
    """The stored state: base64, or the line's last member with its bytes verbatim."""
    if "state_base64" in data:
        return base64.b64decode(data["state_base64"], validate=True)
    marker, end = line.rfind(b',"state":'), len(line.rstrip())
    if marker < 0 or not line[:end].endswith(b"}"):
        raise ValueError("no state")
    state = line[marker + len(b',"state":') : end - 1]
    if orjson.loads(state) != data["state"]:
        raise ValueError("the state is not the line's last member")
    return state
