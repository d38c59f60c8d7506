"""The streamer killed at random instants (SIGKILL, in a separate process) while events keep
arriving and the receiver answers slowly: afterwards every event of the workspace arrived at
least once, in commit order, each batch signed and contiguous, and after every kill the
stream's stored position covered only events the receiver had accepted."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import orjson
import pytest

from auditcore import AuditCore, Settings
from auditcore.projection.log import LogReader
from auditcore.streams.config import StreamConfigs, stream_configs
from tests.test_streams import Running, add, caught_up, record
from tests.webhook_receiver import Answer, Receiver

pytestmark = pytest.mark.store_only  # the event store alone: one ClickHouse engine is enough

WORKER = [sys.executable, "-m", "tests.stream_worker"]
KILLS = max(10, int(os.environ.get("AUDITCORE_CRASH_KILLS", "10")))


def positions(audit: AuditCore, workspace: str) -> dict[str, int]:
    """The workspace's event ids and their positions, in commit order."""
    return {
        state["event_id"]: event.position
        for event in LogReader(audit.app).after(0, 1_000_000)
        if (state := orjson.loads(event.state))["workspace_id"] == workspace
    }


def assert_covered(
    audit: AuditCore, configs: StreamConfigs, stream_id: str, receiver: Receiver, round_: int
) -> None:
    """The stored position never passes an event the receiver did not accept."""
    stored = configs.running(stream_id)
    assert stored is not None
    accepted = {e["event"]["event_id"] for e in receiver.events()}
    behind = [
        event_id
        for event_id, position in positions(audit, "acme").items()
        if position <= stored.position and event_id not in accepted
    ]
    assert not behind, (round_, stored.position, behind[:3])


def test_streamer_killed_at_random_instants_delivers_everything_in_order(
    pg_settings: Settings,
) -> None:
    """On PostgreSQL, the production store (the other tests here run on SQLite as well)."""
    store_settings = pg_settings
    rng = random.Random(18)
    receiver = Receiver(plan=lambda _: Answer(200, delay=rng.uniform(0.0, 0.03))).start()
    kills = 0
    try:
        with AuditCore(store_settings) as audit:
            configs = stream_configs(audit)
            try:
                info = add(configs, audit, receiver.url, max_events=5, max_wait=0.01)
                for round_ in range(KILLS):
                    record(audit, 25)  # a backlog, so that the kill lands mid-work
                    record(audit, 10, workspace="globex")
                    process = subprocess.Popen(
                        [*WORKER, store_settings.event_store, info.id],
                        stdout=subprocess.PIPE,
                        stderr=subprocess.PIPE,
                        text=True,
                        cwd=Path(__file__).parent.parent,
                    )
                    assert process.stdout is not None
                    started = process.stdout.readline().strip()
                    assert started == "following", process.communicate(timeout=30)[1][-3000:]
                    record(audit, 5)  # and new events arrive while it delivers
                    record(audit, 3, workspace="globex")
                    time.sleep(rng.uniform(0.0, 0.2))
                    process.send_signal(signal.SIGKILL)
                    kills += process.wait(timeout=30) == -signal.SIGKILL
                    assert_covered(audit, configs, info.id, receiver, round_)
                running = Running(audit, configs, info.id)  # finish the job in this process
                try:
                    caught_up(audit, configs, info.id)
                finally:
                    running.close()
                expected = list(positions(audit, "acme"))
            finally:
                configs.close()
    finally:
        receiver.stop()

    assert kills == KILLS
    assert len(expected) == 30 * KILLS
    assert receiver.bad_signatures == 0
    index = {event_id: n for n, event_id in enumerate(expected)}
    seen = -1
    first_seen: list[str] = []
    for request in receiver.accepted:
        numbers = [index[e["event"]["event_id"]] for e in request.body["events"]]
        # Each batch is consecutive events of the workspace, starting at most one past the
        # furthest event delivered before it: no gap, ever.
        assert numbers == list(range(numbers[0], numbers[0] + len(numbers))), numbers
        assert numbers[0] <= seen + 1, (numbers[0], seen)
        for n in numbers:
            if n > seen:
                first_seen.append(expected[n])
        seen = max(seen, numbers[-1])
    assert first_seen == expected  # every event at least once, in commit order
