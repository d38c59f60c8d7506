"""Retention on a real PostgreSQL store with signed Merkle logs: events older than their
workspace's policy are archived, then pruned from the store and the read models; ``verify``
still passes (and checks the archives); an edited archive is caught; a restore equals the
original; another workspace's policy never touches a workspace's events; and a prune killed
(SIGKILL) at random instants loses nothing that is not in a committed archive."""

from __future__ import annotations

import gzip
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from uuid import UUID, uuid4

import orjson
import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from auditcore import Actor, AuditCore, Incident, Settings
from auditcore.lifecycle.archive import ArchiveError, check_archive, read_archive
from auditcore.lifecycle.restore import restore_archive
from auditcore.lifecycle.retention import Retention
from auditcore.lifecycle.tables import ArchiveRow
from auditcore.readmodel.queries import EventQuery
from tests.cli_run import AUDITCORE
from tests.integrity_support import Store, make_store

WORKER = [sys.executable, "-m", "tests.retention_worker"]
KILLS = int(os.environ.get("AUDITCORE_CRASH_KILLS", "12"))
ALICE = Actor(id="user_alice", name="Alice Martin")
LATER = timedelta(days=40)
EVERYTHING = EventQuery(limit=1000)
COLUMNS = "event_id, stream_id, version, action, actor_id, occurred_at, recorded_at, metadata"

READ_MODEL_BEFORE: dict[str, list[tuple[object, ...]]] = {}
"""acme's ``audit_events`` rows before the prune, by store."""

Row = tuple[str, int, str, bytes]
"""(stream id, version, action, state) as stored."""


def record(audit: AuditCore, workspace: str, count: int, *, ids: list[str] | None = None) -> None:
    """Incidents with several versions and standalone events (Unicode, backdated)."""
    for n in range(count):
        incident = Incident.open(
            workspace,
            title=f"Panne n°{n} — 服务中断 🚨",
            severity="sev2",
            service="api",
            actor=ALICE,
        )
        incident.acknowledge("on it", actor=ALICE)
        audit.save(incident)
        audit.record(
            "incident.comment_added",
            workspace_id=workspace,
            actor=ALICE,
            targets=[{"type": "incident", "id": str(incident.id)}],
            metadata={"body": f"Ελληνικά עברית العربية {n}"},
            occurred_at=datetime(1999, 12, 31, tzinfo=UTC) + timedelta(days=n),
            **({"event_id": ids[n]} if ids else {}),
        )


def stored_rows(store: Store, workspace: str) -> list[Row]:
    with store.sql() as cur:
        cur.execute(
            f"SELECT originator_id::text, originator_version, topic, state FROM "
            f"{store.table(store.events_table)} ORDER BY notification_id"
        )
        rows = [(r[0], int(r[1]), r[2], bytes(r[3])) for r in cur.fetchall()]
    return [row for row in rows if orjson.loads(row[3])["workspace_id"] == workspace]


def archived_rows(path: Path) -> list[Row]:
    _, events = read_archive(path)
    return [(e.stream_id, e.version, e.action, e.state) for e in events]


@pytest.fixture
def store(pg_settings: Settings, tmp_path: Path) -> Store:
    """A store whose first event (kept for good: the store's identity) is initech's."""
    made = make_store(pg_settings, tmp_path)
    with made.core() as audit:
        record(audit, "initech", 1)
    return made


@pytest.fixture
def pruned(store: Store, tmp_path: Path) -> Iterator[tuple[Store, dict[str, list[Row]], Path]]:
    """acme (30 days) and globex (365 days, with acme's standalone event ids) recorded, logged,
    signed and projected; then retention runs as of 40 days later: acme's are archived and
    pruned, globex's kept. Yields the store, each workspace's rows before, the archive."""
    ids = [str(uuid4()) for _ in range(5)]
    with store.core() as audit:
        retention = Retention(audit, tmp_path / "archives")
        retention.set_policy("acme", 30, actor=ALICE, source="cli")
        retention.set_policy("globex", 365, actor=ALICE, source="cli")
        record(audit, "acme", 5, ids=ids)
        record(audit, "globex", 5, ids=ids)
        audit.integrity.sign_now()
        audit.project()
        before = {w: stored_rows(store, w) for w in ("acme", "globex")}
        READ_MODEL_BEFORE[store.settings.event_store] = audit.clickhouse.query(
            f"SELECT {COLUMNS} FROM audit_events WHERE workspace_id = 'acme' ORDER BY event_id"
        ).result_rows
        report = retention.run(now=datetime.now(UTC) + LATER, batch_size=3)
        retention.close()
    [acme] = [w for w in report.workspaces if w.workspace_id == "acme"]
    assert acme.pruned == len(before["acme"]) == 16  # the policy event and 5 x 3 events
    assert not acme.waiting_models
    [archive] = acme.archives
    return store, before, Path(archive)


def test_prune_archives_then_deletes_and_verify_still_passes(
    pruned: tuple[Store, dict[str, list[Row]], Path],
) -> None:
    store, before, archive = pruned
    assert archived_rows(archive) == before["acme"]  # byte for byte, in log order
    after = stored_rows(store, "acme")
    assert [topic for _, _, topic, _ in after] == ["auditcore.retention.pruned"]
    assert stored_rows(store, "globex") == before["globex"]  # the other policy: kept
    with store.core() as audit:
        retention = Retention(audit)
        report = audit.integrity.verify(pruned=retention.pruned_ranges())
        retention.check_archives(report, audit.integrity.trusted_keys())
        [row] = retention.archives()
        retention.close()
        assert (row.state, row.from_size, row.to_size) == ("done", 0, 16)
        assert report.ok, [p.describe() for p in report.problems]
        assert report.workspaces["acme"].pruned == 16
        assert report.workspaces["globex"].verified == 16
        # The read models: acme's rows gone (but the prune's own event, projected now),
        # globex's all there; a globex event with an id acme also used is still found.
        audit.project()
        acme, globex = audit.reader("acme"), audit.reader("globex")
        assert [e.action for e in acme.events(EVERYTHING).items] == ["auditcore.retention.pruned"]
        assert len(globex.events(EVERYTHING).items) == 16
        assert acme.current("incidents", {}) == []
        assert len(globex.current("incidents", {})) == 5
    # The CLI's verify agrees, and names the pruned count.
    result = subprocess.run(
        [AUDITCORE, "verify", "--event-store", store.settings.event_store, "-f", "json"],
        capture_output=True,
        text=True,
        env={**os.environ, "AUDITCORE_SIGNING_KEY": str(store.integrity.signing_key)},
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert orjson.loads(result.stdout)["workspaces"]["acme"]["pruned"] == 16


def test_deleting_outside_an_archived_range_is_still_caught(
    pruned: tuple[Store, dict[str, list[Row]], Path],
) -> None:
    store, _, _ = pruned
    [position] = store.positions_of("globex")[:1]
    store.execute("DELETE FROM {events} WHERE {position} = ?", (position,))
    with store.core() as audit:
        retention = Retention(audit)
        report = audit.integrity.verify(pruned=retention.pruned_ranges())
        retention.close()
    assert [p.kind for p in report.problems] == ["deleted"]
    assert report.problems[0].workspace_id == "globex"


def _rewrite(archive: Path, change: object) -> None:
    with gzip.open(archive, "rb") as file:
        lines = file.read().splitlines(keepends=True)
    lines = change(lines)  # type: ignore[operator]
    with gzip.open(archive, "wb") as file:
        file.write(b"".join(lines))


def _edit_metadata(lines: list[bytes]) -> list[bytes]:
    word = "Ελληνικά".encode()
    at = next(n for n, line in enumerate(lines) if word in line)
    lines[at] = lines[at].replace(word, "Ελληνικα".encode())  # one accent fewer
    return lines


def _header_range(lines: list[bytes]) -> list[bytes]:
    header = orjson.loads(lines[0])
    header["to_size"] -= 1
    return [orjson.dumps(header) + b"\n", *lines[1:-1]]


@pytest.mark.parametrize(
    "change",
    [
        _edit_metadata,
        lambda lines: [lines[0], lines[2], lines[1], *lines[3:]],  # swapped
        lambda lines: [*lines[:5], *lines[6:]],  # one removed
        lambda lines: [*lines, lines[-1]],  # one repeated
        _header_range,  # the range shortened (its last event dropped)
    ],
    ids=["edited", "swapped", "removed", "repeated", "shortened"],
)
def test_an_edited_archive_is_detected(
    pruned: tuple[Store, dict[str, list[Row]], Path], change: object
) -> None:
    store, _, archive = pruned
    key = [store.key.verifier()]
    assert check_archive(archive, key).events == 16
    _rewrite(archive, change)
    with pytest.raises(ArchiveError):
        check_archive(archive, key)
    result = subprocess.run(
        [AUDITCORE, "verify", "--archive", str(archive), "--public-key",
         str(store.integrity.signing_key)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert result.returncode == 1, result.stdout + result.stderr
    assert result.stdout.startswith("TAMPERED")
    assert "Traceback" not in result.stderr
    with store.core() as audit:  # the store's verify checks the archive it relies on
        retention = Retention(audit)
        report = audit.integrity.verify(pruned=retention.pruned_ranges())
        retention.check_archives(report, key)
        retention.close()
    assert [p.kind for p in report.problems] == ["archive"]


def test_an_archive_signed_by_another_key_or_unsigned_is_not_trusted(
    pruned: tuple[Store, dict[str, list[Row]], Path], tmp_path: Path
) -> None:
    store, _, archive = pruned
    from auditcore.integrity.note import SignerKey  # noqa: PLC0415

    other = SignerKey.generate("audit.example.com").verifier()
    with pytest.raises(ArchiveError, match="not trusted"):
        check_archive(archive, [other])
    intact = subprocess.run(
        [AUDITCORE, "verify", "--archive", str(archive), "--public-key",
         str(store.integrity.signing_key)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert intact.returncode == 0, intact.stdout + intact.stderr
    assert intact.stdout.startswith("OK")
    missing = subprocess.run(
        [AUDITCORE, "verify", "--archive", str(tmp_path / "nope.jsonl.gz")],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert missing.returncode == 2
    assert missing.stderr.startswith("error: no archive at")
    assert "Traceback" not in missing.stderr


def test_restore_equals_the_original(
    pruned: tuple[Store, dict[str, list[Row]], Path], tmp_path: Path, clickhouse_url: str
) -> None:
    store, before, archive = pruned
    target = tmp_path / "investigation.sqlite"
    with AuditCore(Settings(str(target), clickhouse_url + "r")) as investigation:
        report = restore_archive(archive, investigation, [store.key.verifier()])
        assert (report.restored, report.already_there) == (16, 0)
        again = restore_archive(archive, investigation, [store.key.verifier()])
        assert (again.restored, again.already_there) == (0, 16)
        investigation.project()
        rows = investigation.clickhouse.query(
            f"SELECT {COLUMNS} FROM audit_events WHERE workspace_id = 'acme' ORDER BY event_id"
        ).result_rows
        incidents = investigation.reader("acme").current("incidents", {})
        table = investigation.app.recorder.events_table_name  # type: ignore[attr-defined]
    with sqlite3.connect(target) as connection:
        back = [
            (str(UUID(r[0])), int(r[1]), r[2], bytes(r[3]))
            for r in connection.execute(
                f"SELECT originator_id, originator_version, topic, state FROM {table} "
                "ORDER BY rowid"
            )
        ]
    assert back == before["acme"]  # the store: byte for byte, in order
    assert rows == READ_MODEL_BEFORE[store.settings.event_store]  # the read model: row for row
    assert len(rows) == 16
    assert len(incidents) == 5


def test_restore_into_the_store_it_was_pruned_from_is_refused(
    pruned: tuple[Store, dict[str, list[Row]], Path],
) -> None:
    from auditcore.errors import ConfigurationError  # noqa: PLC0415

    store, _, archive = pruned
    with store.core() as audit, pytest.raises(ConfigurationError, match="separate store"):
        restore_archive(archive, audit, [store.key.verifier()])
    assert len(stored_rows(store, "acme")) == 1


def test_the_stores_first_event_is_archived_but_kept(store: Store, tmp_path: Path) -> None:
    """Read models know their store by its first event's id: pruning it would make them
    refuse their own store."""
    with store.core() as audit:
        retention = Retention(audit, tmp_path / "archives")
        retention.set_policy("initech", 1, actor=ALICE, source="cli")
        audit.integrity.sign_now()
        audit.project()
        before = stored_rows(store, "initech")
        report = retention.run(now=datetime.now(UTC) + LATER)
        assert report.pruned == 3  # of 4: the first one stays
        audit.project()  # no StoreMismatchError
        [row] = retention.archives("initech")
        retention.close()
        ids = [e.event_id for e in audit.reader("initech").events(EVERYTHING).items]
    first = before[:1]
    assert archived_rows(Path(row.location)) == before  # the first one archived too
    kept = stored_rows(store, "initech")
    assert kept[0] == first[0]
    kept = kept[1:]
    assert sorted(str(i) for i in ids) == sorted(  # its row kept too, and the prune's own
        [orjson.loads(first[0][3])["event_id"], *(orjson.loads(r[3])["event_id"] for r in kept)]
    )


@pytest.mark.store_only
def test_prune_killed_at_random_instants_loses_nothing_not_archived(
    store: Store, tmp_path: Path, process_clickhouse_url: str
) -> None:
    rng = random.Random(16)
    archives = tmp_path / "archives"
    original: dict[tuple[str, int], Row] = {}
    kills = 0
    with store.core() as audit:
        retention = Retention(audit, archives)
        retention.set_policy("acme", 1, actor=ALICE, source="cli")
        retention.close()
    for _ in range(KILLS):
        with store.core() as audit:
            record(audit, "acme", 40)
            record(audit, "globex", 5)
            audit.integrity.sign_now()
        original |= {(r[0], r[1]): r for r in stored_rows(store, "acme")}
        process = subprocess.Popen(
            [*WORKER, store.settings.event_store, process_clickhouse_url,
             str(store.integrity.signing_key), str(archives),
             (datetime.now(UTC) + timedelta(days=2)).isoformat()],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            cwd=Path(__file__).parent.parent,
        )  # fmt: skip
        assert process.stdout is not None
        assert process.stdout.readline().strip() == "pruning", process.stderr
        time.sleep(rng.uniform(0.0, 0.6))
        process.send_signal(signal.SIGKILL)
        kills += process.wait(timeout=30) == -signal.SIGKILL
        _nothing_lost(store, original)
    assert kills >= KILLS // 2, f"only {kills} of {KILLS} kills landed mid-prune"
    with store.core() as audit:  # finish in this process
        retention = Retention(audit, archives)
        retention.run(now=datetime.now(UTC) + timedelta(days=2))
        report = audit.integrity.verify(pruned=retention.pruned_ranges())
        retention.check_archives(report, audit.integrity.trusted_keys())
        rows = retention.archives("acme")
        retention.close()
    assert report.ok, [p.describe() for p in report.problems]
    assert all(row.state == "done" for row in rows)
    archived = [r for row in rows for r in archived_rows(Path(row.location))]
    kept = stored_rows(store, "acme")
    assert len(archived) == len({(r[0], r[1]) for r in archived})  # none archived twice
    assert {(r[0], r[1]) for r in kept}.isdisjoint({(r[0], r[1]) for r in archived})
    assert {r for r in archived if r[2] != "auditcore.retention.pruned"} | {
        r for r in kept if r[2] != "auditcore.retention.pruned"
    } == {r for r in original.values() if r[2] != "auditcore.retention.pruned"}
    assert len(stored_rows(store, "globex")) == 5 * 3 * KILLS  # never pruned


def _nothing_lost(store: Store, original: dict[tuple[str, int], Row]) -> None:
    """Every event recorded is in the store or in an archive that verifies and has its row."""
    with store.core() as audit:
        retention = Retention(audit)
        rows: list[ArchiveRow] = retention.archives("acme")
        retention.close()
    archived: dict[tuple[str, int], Row] = {}
    for row in rows:
        check_archive(Path(row.location), [store.key.verifier()])
        archived |= {(r[0], r[1]): r for r in archived_rows(Path(row.location))}
    kept = {(r[0], r[1]): r for r in stored_rows(store, "acme")}
    for key, row in original.items():
        assert kept.get(key) == row or archived.get(key) == row, f"lost {key}"


@pytest.mark.store_only
def test_prune_and_verify_on_postgresql_and_sqlite(
    store_settings: Settings, tmp_path: Path
) -> None:
    made = make_store(store_settings, tmp_path)
    with made.core() as audit:
        record(audit, "initech", 1)
        retention = Retention(audit, tmp_path / "archives")
        retention.set_policy(None, 7, actor=ALICE, source="cli")  # the default
        record(audit, "acme", 3)
        audit.integrity.sign_now()
        record(audit, "acme", 2)  # not signed yet: kept whatever their age
        report = retention.run(now=datetime.now(UTC) + LATER)
        verified = audit.integrity.verify(pruned=retention.pruned_ranges())
        retention.check_archives(verified, audit.integrity.trusted_keys())
        retention.close()
    assert report.pruned == 9 + 2  # acme's 9 signed events, initech's 3 but its first
    assert verified.ok, [p.describe() for p in verified.problems]
    assert verified.workspaces["acme"].pruned == 9
    actions = [orjson.loads(state)["workspace_id"] for _, state in made.events()]
    assert actions.count("acme") == 6 + 1  # the unsigned ones, and the prune's own event


def test_cli_refusals_are_one_line_with_status_2(tmp_path: Path) -> None:
    store = str(tmp_path / "events.sqlite")
    at = ["--event-store", store]
    cases = [
        ["retention", "set", "-w", "acme", "--days", "0", *at],
        ["retention", "set", "-w", "acme", "--default", "--days", "3", *at],
        ["retention", "set", "-w", "acme", "--days", "3", "--forever", *at],
        ["retention", "set", "-w", "acme corp", "--days", "3", *at],
        ["retention", "run", *at],  # no archive directory
        ["archive", "restore", str(tmp_path / "none.jsonl.gz"), "--into", store],
    ]
    for arguments in cases:
        result = subprocess.run(
            [AUDITCORE, *arguments],
            capture_output=True,
            text=True,
            check=False,
            env={k: v for k, v in os.environ.items() if k != "AUDITCORE_ARCHIVE_DIR"},
        )
        assert result.returncode == 2, (arguments, result.stdout, result.stderr)
        assert "Traceback" not in result.stderr, arguments


def test_a_forged_archive_row_does_not_hide_a_deletion(
    pruned: tuple[Store, dict[str, list[Row]], Path],
) -> None:
    """An attacker deletes globex's first events and adds an archive row claiming them,
    pointing at a real archive (acme's): verify checks that archive against globex's
    retained leaves and says so."""
    store, _, archive = pruned
    doomed = store.positions_of("globex")[:3]
    for position in doomed:
        store.execute("DELETE FROM {events} WHERE {position} = ?", (position,))
    with store.core() as audit:
        retention = Retention(audit)
        with Session(retention.engine) as session, session.begin():
            [real] = session.scalars(select(ArchiveRow)).all()
            session.add(
                ArchiveRow(
                    workspace_id="globex", from_size=0, to_size=3,
                    first_position=doomed[0], last_position=doomed[-1],
                    checkpoint_size=real.checkpoint_size, location=str(archive),
                    sha256=real.sha256, state="done", created_at=real.created_at,
                )
            )  # fmt: skip
        report = audit.integrity.verify(pruned=retention.pruned_ranges())
        retention.check_archives(report, audit.integrity.trusted_keys())
        retention.close()
    assert [(p.kind, p.workspace_id) for p in report.problems] == [("archive", "globex")]
