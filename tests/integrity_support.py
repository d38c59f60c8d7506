"""What the integrity tests share: a store with signed Merkle logs, and raw SQL against it
(the attacker's tool: the tables as they are, behind auditcore's back)."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import psycopg

from auditcore import Actor, AuditCore, Incident, Settings
from auditcore.integrity.note import SignerKey
from auditcore.integrity.settings import IntegritySettings

WORKSPACES = ("acme", "globex", "initech")


@dataclass
class Store:
    """An auditcore store with integrity on, plus raw SQL access to its tables."""

    settings: Settings
    integrity: IntegritySettings
    key: SignerKey
    events_table: str = "stored_events"

    def core(self) -> AuditCore:
        return AuditCore(self.settings, integrity=self.integrity)

    @property
    def postgres(self) -> bool:
        return self.settings.uses_postgres

    def table(self, name: str) -> str:
        if self.postgres:
            schema = self.settings.postgres_schema
            return f'"{schema}"."{name}"'
        return name

    @contextmanager
    def sql(self) -> Iterator[Any]:
        """A cursor on the store's database, committed at the end; ``?`` parameters."""
        if self.postgres:
            with psycopg.connect(self.settings.postgres_conninfo()) as conn, conn.cursor() as cur:
                yield _Placeholders(cur)
            return
        conn = sqlite3.connect(self.settings.event_store)
        try:
            yield conn.cursor()
            conn.commit()
        finally:
            conn.close()

    def events(self) -> list[tuple[int, bytes]]:
        """(store position, state) of every stored event, in store order."""
        position = "notification_id" if self.postgres else "rowid"
        with self.sql() as cur:
            cur.execute(
                f"SELECT {position}, state FROM {self.table(self.events_table)} ORDER BY {position}"
            )
            return [(int(row[0]), bytes(row[1])) for row in cur.fetchall()]

    def positions_of(self, workspace_id: str) -> list[int]:
        return [
            p for p, state in self.events() if orjson.loads(state)["workspace_id"] == workspace_id
        ]

    def edit_state(self, position: int, change: dict[str, Any]) -> None:
        """UPDATE one event's stored state, as an attacker would: same JSON layout."""
        column = "notification_id" if self.postgres else "rowid"
        with self.sql() as cur:
            cur.execute(
                f"SELECT state FROM {self.table(self.events_table)} WHERE {column} = ?", (position,)
            )
            state = orjson.loads(bytes(cur.fetchone()[0]))
            state.update(change)
            cur.execute(
                f"UPDATE {self.table(self.events_table)} SET state = ? WHERE {column} = ?",
                (orjson.dumps(state), position),
            )

    def execute(self, statement: str, parameters: tuple[Any, ...] = ()) -> int:
        """Run one statement with ``{events}``, ``{leaves}``, … standing for the tables and
        ``{position}`` for the events' position column; return the rows it touched."""
        names = {
            "events": self.table(self.events_table),
            "position": "notification_id" if self.postgres else "rowid",
            **{
                name: self.table(f"auditcore_integrity_{name}")
                for name in ("leaves", "nodes", "trees", "checkpoints", "follower")
            },
        }
        with self.sql() as cur:
            cur.execute(statement.format(**names), parameters)
            return int(cur.rowcount)


class _Placeholders:
    def __init__(self, cursor: psycopg.Cursor[Any]) -> None:
        self.cursor = cursor

    def execute(self, statement: str, parameters: tuple[Any, ...] = ()) -> None:
        self.cursor.execute(statement.replace("?", "%s"), parameters)  # type: ignore[arg-type]

    def __getattr__(self, name: str) -> Any:
        return getattr(self.cursor, name)


def make_store(settings: Settings, tmp_path: Path) -> Store:
    key = SignerKey.generate("audit.example.com")
    key_file = tmp_path / "signing.key"
    key_file.write_text(key.encode() + "\n")
    integrity = IntegritySettings(
        signing_key=key_file,
        checkpoint_dir=tmp_path / "published",
        checkpoint_interval=3600,
        checkpoint_events=1_000_000,
    )
    store = Store(settings, integrity, key)
    with store.core() as audit:
        store.events_table = audit.app.recorder.events_table_name  # type: ignore[attr-defined]
    return store


def record_history(audit: AuditCore, rounds: int = 4) -> None:
    """A little of everything, in three workspaces: aggregates with several versions, and
    standalone events with Unicode and decades-apart times."""
    alice = Actor(id="user_alice", name="Alice Martin")
    start = datetime(1999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)
    for round_ in range(rounds):
        for n, workspace in enumerate(WORKSPACES):
            incident = Incident.open(
                workspace, title=f"Panne n°{round_} — 服务中断 🚨", severity="sev2", service="api",
                actor=alice,
            )  # fmt: skip
            incident.acknowledge("on it", actor=alice)
            audit.save(incident)
            audit.record(
                "incident.comment_added",
                workspace_id=workspace,
                actor=alice,
                targets=[{"type": "incident", "id": str(incident.id)}],
                metadata={"body": f"Ελληνικά עברית العربية {round_}:{n}"},
                occurred_at=start + timedelta(days=3653 * round_ + n),
            )
            audit.update(Incident, incident.id, lambda i: i.resolve("fixed"))
