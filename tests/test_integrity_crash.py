"""The integrity follower killed at random instants (SIGKILL, in a separate process) while
events keep arriving: afterwards every workspace's leaves are exactly a recomputation from
the store — none skipped, none doubled — and every node and checkpoint verifies."""

from __future__ import annotations

import hashlib
import os
import random
import signal
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

import orjson
import pytest

from auditcore import Settings
from auditcore.integrity.leaf import leaf_data
from tests.integrity_support import Store, make_store

pytestmark = pytest.mark.store_only  # the event store alone: one ClickHouse engine is enough

WORKER = [sys.executable, "-m", "tests.integrity_worker"]
KILLS = int(os.environ.get("AUDITCORE_CRASH_KILLS", "12"))


def record(store: Store, count: int, seed: int) -> None:
    rng = random.Random(seed)
    with store.core() as audit:
        audit.record_many(
            {
                "action": "incident.comment_added",
                "workspace_id": rng.choice(("acme", "globex", "initech", "umbrella")),
                "metadata": {"body": f"comment {seed}-{n} ✓"},
            }
            for n in range(count)
        )


def recomputed_leaves(store: Store) -> dict[str, list[bytes]]:
    """Each workspace's leaf hashes, computed here from the events table alone."""
    position = "notification_id" if store.postgres else "rowid"
    stream = "originator_id::text" if store.postgres else "originator_id"
    with store.sql() as cur:
        cur.execute(
            f"SELECT {stream}, originator_version, topic, state FROM "
            f"{store.table(store.events_table)} ORDER BY {position}"
        )
        rows = cur.fetchall()
    leaves: dict[str, list[bytes]] = defaultdict(list)
    for stream_id, version, topic, state in rows:
        workspace = orjson.loads(bytes(state))["workspace_id"]
        data = leaf_data(len(leaves[workspace]), str(stream_id), version, topic, bytes(state))
        leaves[workspace].append(hashlib.sha256(b"\x00" + data).digest())
    return leaves


def stored_leaves(store: Store) -> dict[str, list[tuple[int, bytes]]]:
    with store.sql() as cur:
        cur.execute(
            "SELECT workspace_id, leaf_index, leaf_hash FROM "
            f"{store.table('auditcore_integrity_leaves')} ORDER BY workspace_id, leaf_index"
        )
        rows = cur.fetchall()
    leaves: dict[str, list[tuple[int, bytes]]] = defaultdict(list)
    for workspace, index, hashed in rows:
        leaves[workspace].append((int(index), bytes(hashed)))
    return leaves


def test_follower_killed_at_random_instants_leaves_exactly_the_recomputed_log(
    store_settings: Settings, tmp_path: Path
) -> None:
    store = make_store(store_settings, tmp_path)
    rng = random.Random(16)
    kills = 0
    for round_ in range(KILLS):
        record(store, 300, seed=round_)  # a backlog, so that the kill lands mid-work
        process = subprocess.Popen(
            [*WORKER, store.settings.event_store, str(store.integrity.signing_key),
             str(store.integrity.checkpoint_dir)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=Path(__file__).parent.parent,
        )  # fmt: skip
        assert process.stdout is not None
        assert process.stdout.readline().strip() == "following", process.stderr
        record(store, 50, seed=1000 + round_)  # and new events arrive while it follows
        time.sleep(rng.uniform(0.0, 0.15))
        process.send_signal(signal.SIGKILL)
        kills += process.wait(timeout=30) == -signal.SIGKILL

    assert kills == KILLS
    with store.core() as audit:
        assert audit.integrity.log.position() > 0, "no batch was ever committed"
        audit.integrity.sign_now()  # finish the job in this process
        report = audit.integrity.verify()
        store_head = audit.app.recorder.max_notification_id()
        follower_position = audit.integrity.log.position()

    expected = recomputed_leaves(store)
    stored = stored_leaves(store)
    assert sum(len(leaves) for leaves in expected.values()) == 350 * KILLS
    assert set(stored) == set(expected)
    for workspace, leaves in expected.items():
        assert [index for index, _ in stored[workspace]] == list(range(len(leaves)))
        assert [hashed for _, hashed in stored[workspace]] == leaves, workspace
    assert follower_position == store_head
    assert report.ok, [problem.describe() for problem in report.problems[:5]]
    assert all(count.checkpoints >= 1 for count in report.workspaces.values())
