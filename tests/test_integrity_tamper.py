"""The database edited behind auditcore's back: each attack is plain SQL on the events table
(or on the integrity tables, to cover its tracks), and ``verify`` must catch it and name the
first divergence: workspace, position, event id and what differs. PostgreSQL and SQLite."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

import orjson
import pytest

from auditcore import Settings
from auditcore.integrity.note import Checkpoint, SignerKey
from auditcore.integrity.verify import OutsideCheckpoint, VerifyReport
from tests.integrity_support import Store, make_store, record_history

pytestmark = pytest.mark.store_only  # the event store alone: one ClickHouse engine is enough

AUDITCORE = str(Path(sys.executable).with_name("auditcore"))


@pytest.fixture
def store(store_settings: Settings, tmp_path: Path) -> Iterator[Store]:
    """48 events in three workspaces, logged and signed twice (two checkpoints each), then
    12 more logged but not signed yet."""
    made = make_store(store_settings, tmp_path)
    with made.core() as audit:
        record_history(audit, rounds=2)
        if made.postgres:  # rolled-back writes leave gaps in PostgreSQL's positions: make one
            made.execute(
                "SELECT nextval(pg_get_serial_sequence(?, 'notification_id'))",
                (made.table(made.events_table),),
            )
        assert len(audit.integrity.sign_now()) == 3
        record_history(audit, rounds=2)
        assert len(audit.integrity.sign_now()) == 3
        record_history(audit, rounds=1)
        audit.integrity.follower().catch_up()
    return made


def verify(store: Store, workspace: str | None = None, outside: Sequence[str] = ()) -> VerifyReport:
    with store.core() as audit:
        return audit.integrity.verify(
            workspace_id=workspace,
            outside=[OutsideCheckpoint(f"outside #{n}", note) for n, note in enumerate(outside)],
        )


def leaf_row(store: Store, position: int) -> tuple[str, int, str]:
    with store.sql() as cur:
        cur.execute(
            f"SELECT workspace_id, leaf_index, event_id FROM "
            f"{store.table('auditcore_integrity_leaves')} WHERE position = ?",
            (position,),
        )
        row = cur.fetchone()
    return row[0], int(row[1]), str(row[2])


def test_an_intact_store_verifies_with_counts(store: Store) -> None:
    report = verify(store)
    assert report.ok, [p.describe() for p in report.problems]
    assert report.events == 60
    assert {w: c.verified for w, c in report.workspaces.items()} == {
        "acme": 20, "globex": 20, "initech": 20,
    }  # fmt: skip
    assert all(c.checkpoints == 2 and c.latest_checkpoint == 16 for c in report.workspaces.values())


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"metadata": {"body": "nothing to see"}}, "metadata"),
        ({"actor": {"id": "user_mallory", "type": "user", "name": "Alice Martin"}}, "actor"),
        ({"recorded_at": "2026-01-01T00:00:00.000001Z"}, "recorded_at"),
        ({"context": {"ip": "203.0.113.9", "user_agent": None, "request_id": None}}, "context"),
        ({"occurred_at": "1970-01-01T00:00:00Z"}, "occurred_at"),
    ],
)
def test_an_edited_event_field_is_named(
    store: Store, change: dict[str, object], field: str
) -> None:
    position = store.positions_of("globex")[5]
    _workspace, _index, event_id = leaf_row(store, position)
    store.edit_state(position, change)

    report = verify(store)
    assert not report.ok
    first = report.problems[0]
    assert (first.kind, first.workspace_id, first.index, first.event_id) == (
        "edited", "globex", 5, event_id,
    )  # fmt: skip
    assert f"{field} changed" in first.detail
    assert len(report.problems) == 1  # the logs and checkpoints themselves are intact


def test_an_edited_column_is_named(store: Store) -> None:
    position = store.positions_of("acme")[2]
    store.execute(
        "UPDATE {events} SET topic = 'incident.resolved' WHERE {position} = ?", (position,)
    )
    (problem,) = verify(store).problems
    assert (problem.kind, problem.workspace_id, problem.index) == ("edited", "acme", 2)
    assert "action changed" in problem.detail


def test_a_deleted_event_in_the_middle(store: Store) -> None:
    position = store.positions_of("initech")[7]
    _, _, event_id = leaf_row(store, position)
    assert store.execute("DELETE FROM {events} WHERE {position} = ?", (position,)) == 1
    (problem,) = verify(store).problems
    assert (problem.kind, problem.workspace_id, problem.index, problem.event_id) == (
        "deleted", "initech", 7, event_id,
    )  # fmt: skip


def test_deleted_newest_events_with_their_tracks_covered_against_the_latest_checkpoint(
    store: Store,
) -> None:
    """The attacker deletes acme's newest events and everything the log holds of them: leaf
    and node rows, tree head, follower position — only the signed checkpoint remains."""
    positions = store.positions_of("acme")
    doomed = positions[10:]  # 10 events kept; the latest checkpoint covers 16
    for position in doomed:
        store.execute("DELETE FROM {events} WHERE {position} = ?", (position,))
        store.execute("DELETE FROM {leaves} WHERE position = ?", (position,))
        store.execute("DELETE FROM {nodes} WHERE position = ?", (position,))
    store.execute("UPDATE {trees} SET size = 10 WHERE workspace_id = 'acme'")

    problems = verify(store, "acme").problems
    assert [p.kind for p in problems] == ["tree", "truncated"]
    truncated = problems[1]
    assert truncated.index == 10
    assert "covers 16 events but the log holds only 10" in truncated.detail


def test_deleted_newest_events_leaves_intact(store: Store) -> None:
    newest = store.positions_of("globex")[-3:]
    for position in newest:
        store.execute("DELETE FROM {events} WHERE {position} = ?", (position,))
    problems = verify(store).problems
    assert [(p.kind, p.workspace_id, p.index) for p in problems] == [
        ("deleted", "globex", 17), ("deleted", "globex", 18), ("deleted", "globex", 19),
    ]  # fmt: skip


def test_reordered_events(store: Store) -> None:
    """Two events of a workspace swap places (their rows' contents swapped)."""
    first, second = store.positions_of("acme")[3], store.positions_of("acme")[8]
    column = "notification_id" if store.postgres else "rowid"
    with store.sql() as cur:
        rows = {}
        for position in (first, second):
            cur.execute(
                f"SELECT originator_id, originator_version, topic, state FROM "
                f"{store.table(store.events_table)} WHERE {column} = ?",
                (position,),
            )
            rows[position] = cur.fetchone()
        cur.execute(
            f"DELETE FROM {store.table(store.events_table)} WHERE {column} IN (?, ?)",
            (first, second),
        )
        for position, source in ((first, second), (second, first)):
            cur.execute(
                f"INSERT INTO {store.table(store.events_table)} "
                f"({column}, originator_id, originator_version, topic, state) "
                "VALUES (?, ?, ?, ?, ?)",
                (position, *rows[source]),
            )
    _, _, event_3 = leaf_row(store, first)
    _, _, event_8 = leaf_row(store, second)
    problems = verify(store).problems
    assert [(p.kind, p.index, p.event_id) for p in problems] == [
        ("reordered", 3, event_3), ("reordered", 8, event_8),
    ]  # fmt: skip
    assert f"now holds event {event_8}, logged at position 8" in problems[0].detail


def test_an_inserted_event(store: Store) -> None:
    """An event slipped into the store's history: in a gap of the positions (PostgreSQL's
    ids have gaps, e.g. after rolled-back writes) that the log has long passed."""
    if not store.postgres:
        pytest.skip("SQLite row ids have no gaps to slip an event into")
    positions = [position for position, _ in store.events()]
    gap = next(p for p in range(1, positions[-1]) if p not in positions)
    state = orjson.loads(store.events()[0][1])
    state |= {"event_id": "00000000-0000-4000-8000-000000000001", "metadata": {"body": "forged"}}
    store.execute(
        "INSERT INTO {events} ({position}, originator_id, originator_version, topic, state) "
        "VALUES (?, gen_random_uuid(), 1, 'incident.comment_added', ?)",
        (gap, orjson.dumps(state)),
    )
    (problem,) = verify(store).problems
    assert (problem.kind, problem.workspace_id, problem.event_id, problem.store_position) == (
        "inserted", "acme", "00000000-0000-4000-8000-000000000001", gap,
    )  # fmt: skip


def test_an_altered_checkpoint(store: Store) -> None:
    store.execute(
        "UPDATE {checkpoints} SET note = replace(note, ?, ?) WHERE workspace_id = 'globex' "
        "AND tree_size = 16",
        ("\n16\n", "\n15\n"),
    )
    (problem,) = verify(store).problems
    assert problem.kind == "checkpoint"
    assert problem.workspace_id == "globex"
    assert "size 16" in problem.detail
    assert "altered or forged" in problem.detail


def test_altered_checkpoint_columns(store: Store) -> None:
    store.execute(
        "UPDATE {checkpoints} SET tree_size = 40 WHERE workspace_id = 'globex' AND tree_size = 16"
    )
    (problem,) = verify(store).problems
    assert problem.kind == "checkpoint"
    assert "columns differ from its signed text" in problem.detail


def test_a_forged_checkpoint_signed_by_another_key(store: Store) -> None:
    """Someone with the database but not the key signs their own view of the log."""
    mallory = SignerKey.generate("audit.example.com").for_log("acme")
    note = Checkpoint("audit.example.com/acme", 20, bytes(32), None).sign(mallory)
    store.execute(
        "INSERT INTO {checkpoints} (workspace_id, tree_size, root_hash, signed_at, key_name, "
        "key_id, note) VALUES ('acme', 20, ?, 0, 'audit.example.com/acme', 1, ?)",
        (bytes(32), note),
    )
    (problem,) = verify(store).problems
    assert problem.kind == "checkpoint"
    assert "no trusted key signed" in problem.detail


def test_a_rewritten_leaf_table_is_caught_by_the_signed_root(store: Store) -> None:
    """The attacker edits an event and recomputes its leaf hash (the encoding is public)."""
    from auditcore.integrity.leaf import event_leaf_hash  # noqa: PLC0415

    position = store.positions_of("initech")[4]
    store.edit_state(position, {"metadata": {"body": "rewritten"}})
    column = "notification_id" if store.postgres else "rowid"
    cast = "::text" if store.postgres else ""
    with store.sql() as cur:
        cur.execute(
            f"SELECT originator_id{cast}, originator_version, topic, state FROM "
            f"{store.table(store.events_table)} WHERE {column} = ?",
            (position,),
        )
        stream, version, topic, state = cur.fetchone()
    # (SQLite keeps the stream id as bare hex, which the leaf encoding reads as well.)
    store.execute(
        "UPDATE {leaves} SET leaf_hash = ? WHERE position = ?",
        (event_leaf_hash(4, str(stream), version, topic, bytes(state)), position),
    )
    problems = verify(store).problems
    kinds = [p.kind for p in problems]
    assert "edited" not in kinds  # the leaf now matches the event …
    assert "checkpoint" in kinds  # … but not the signed roots
    checkpoint = next(p for p in problems if p.kind == "checkpoint")
    assert checkpoint.workspace_id == "initech"
    assert "no longer hash to the root" in checkpoint.detail


def test_a_tampered_node_is_named(store: Store) -> None:
    store.execute(
        "UPDATE {nodes} SET node_hash = ? "
        "WHERE workspace_id = 'acme' AND level = 2 AND node_index = 1",
        (bytes(32),),
    )
    (problem,) = verify(store).problems
    assert problem.kind == "nodes"
    assert "(level 2, index 1)" in problem.detail


def test_a_store_rolled_back_is_caught_by_a_published_checkpoint(store: Store) -> None:
    """The whole store restored to an older state (events, leaves, checkpoints and all): it is
    consistent with itself, so only a checkpoint kept elsewhere can tell."""
    published = (store.integrity.checkpoint_dir / "acme" / "checkpoint").read_text()  # type: ignore[operator]
    positions = store.positions_of("acme")
    for position in positions[8:]:
        store.execute("DELETE FROM {events} WHERE {position} = ?", (position,))
        store.execute("DELETE FROM {leaves} WHERE position = ?", (position,))
        store.execute("DELETE FROM {nodes} WHERE position = ?", (position,))
    store.execute("DELETE FROM {checkpoints} WHERE workspace_id = 'acme' AND tree_size > 8")
    with store.core() as audit:  # a head matching the older state, as a restore would have
        tree = audit.integrity.log.heads()["acme"]
        from auditcore.integrity.merkle import root_at  # noqa: PLC0415

        root = root_at(8, lambda nodes: audit.integrity.log.node_hashes("acme", nodes))
        store.execute(
            "UPDATE {trees} SET size = 8, root_hash = ?, position = ? WHERE workspace_id = 'acme'",
            (root, positions[7]),
        )
        assert tree.size == 20
    # Without the outside copy (the publishing directory is not configured here) it passes.
    store.integrity = type(store.integrity)(signing_key=store.integrity.signing_key)
    assert verify(store, "acme").ok
    problems = verify(store, "acme", [published]).problems
    assert [p.kind for p in problems] == ["truncated"]
    assert "covers 16 events but the log holds only 8" in problems[0].detail
    assert "rolled back" in problems[0].detail


def test_a_workspace_filter_checks_only_that_workspace(store: Store) -> None:
    store.edit_state(store.positions_of("globex")[1], {"metadata": {"body": "x"}})
    assert verify(store, "acme").ok
    assert not verify(store, "globex").ok


def test_an_event_moved_to_another_workspace(store: Store) -> None:
    """Its workspace_id edited: it is missing from one log, and an intruder in the other."""
    position = store.positions_of("globex")[2]
    store.edit_state(position, {"workspace_id": "acme"})
    for workspace in ("globex", "acme", None):
        (problem,) = verify(store, workspace).problems
        assert (problem.kind, problem.workspace_id, problem.index) == ("edited", "globex", 2)
        assert "workspace_id" in problem.detail


def test_verify_command_exits_1_naming_the_first_divergence(store: Store, tmp_path: Path) -> None:
    position = store.positions_of("acme")[6]
    _, _, event_id = leaf_row(store, position)
    store.edit_state(position, {"actor": {"id": "user_mallory", "type": "user", "name": None}})
    environment = {
        **os.environ,
        "AUDITCORE_EVENT_STORE": store.settings.event_store,
        "AUDITCORE_SIGNING_KEY": str(store.integrity.signing_key),
        "COLUMNS": "250",
    }
    done = subprocess.run(
        [AUDITCORE, "verify"],
        capture_output=True,
        text=True,
        env=environment,
        timeout=120,
        check=False,
    )
    assert done.returncode == 1, done.stderr
    assert "TAMPERED" in done.stdout
    assert f"edited: workspace acme, position 6, event {event_id}" in done.stdout
    assert "actor changed" in done.stdout
    store.edit_state(
        position, {"actor": {"id": "user_alice", "type": "user", "name": "Alice Martin"}}
    )
    done = subprocess.run(
        [AUDITCORE, "verify", "-f", "json"],
        capture_output=True,
        text=True,
        env=environment,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout
    body = orjson.loads(done.stdout)
    assert body["ok"] is True
    assert body["events"] == 60
