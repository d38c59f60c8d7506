"""The state a kill leaves in the middle of a multi-partition insert, made on purpose."""

from __future__ import annotations

from typing import Any

import orjson

from auditcore.projection.deadletters import DeadLetter
from auditcore.projection.processor import Processor, Rows


class SimulatedKillError(RuntimeError):
    """Stands for the SIGKILL that would have stopped the process here."""


class DiesMidInsert(Processor):
    """Writes its batch but for the partitions in ``unwritten``, then dies: as if ClickHouse
    had committed those parts of the insert and the process was killed before the others."""

    unwritten: frozenset[str] = frozenset()

    def write(self, rows: Rows, *, key: str = "", skip: set[str] | None = None) -> list[DeadLetter]:
        super().write(rows, key=key, skip={*(skip or ()), *self.unwritten})
        raise SimulatedKillError

    def __init__(self, *args: Any, unwritten: set[str], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.unwritten = frozenset(unwritten)


class DiesAfterSomeShards(Processor):
    """Writes its batch but for the events of the workspaces in ``lost``, then dies: as if a
    foreground insert through a ``Distributed`` table had committed on the other workspaces'
    shards and the process was killed before the rest (rows are sharded by workspace)."""

    lost: frozenset[str] = frozenset()

    def write(self, rows: Rows, *, key: str = "", skip: set[str] | None = None) -> list[DeadLetter]:
        if rows.decoded is not None:  # lines built by PostgreSQL: made events to pick from
            rows = rows.decoded()
        kept = [
            index
            for index in range(len(rows.items))
            if orjson.loads(rows.events_of(index)[0].state)["workspace_id"] not in self.lost
        ]
        super().write(rows.only(kept), key=key, skip=skip)
        raise SimulatedKillError

    def __init__(self, *args: Any, lost: set[str], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.lost = frozenset(lost)
