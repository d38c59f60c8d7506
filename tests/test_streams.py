"""Log streams against a real webhook receiver (an HTTP server started here, checking every
signature with ``standardwebhooks``): delivery in commit order, filters, the receiver failing
in every way (500s, time-outs, refused connections, slowness, a refusal), dead-letter and
replay, erasure seen on replay, and credentials that never show."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import orjson
import pytest
from typer.testing import CliRunner

from auditcore import AuditCore, Settings
from auditcore.cli import app as cli_app
from auditcore.errors import AuditcoreError
from auditcore.events.envelope import ERASED
from auditcore.lifecycle.master import MasterKeys, new_master_key
from auditcore.projection.log import LogReader
from auditcore.streams.config import (
    ACTIVE,
    DEAD_LETTER,
    StreamConfigError,
    StreamConfigs,
    StreamInfo,
    StreamSpec,
    stream_configs,
)
from auditcore.streams.streamer import StreamFollower, Tuning, delivery_id
from tests.apiserver import eventually
from tests.webhook_receiver import SECRET, Answer, Receiver

pytestmark = pytest.mark.store_only  # the event store alone: one ClickHouse engine is enough

FAST = Tuning(read_batch=50, poll=0.05, retry_initial=0.02, retry_max=0.1, standby_poll=0.1)
LONG_AGO = datetime(2000, 1, 1, tzinfo=UTC)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver().start()
    yield server
    server.stop()


def record(audit: AuditCore, count: int, workspace: str = "acme", **extra: Any) -> None:
    audit.record_many(
        {
            "action": "incident.comment_added",
            "workspace_id": workspace,
            "actor": {"id": f"user-{n % 3}", "type": "user", "name": f"User ünï {n % 3}"},
            "metadata": {"body": f"comment {n} ✓"},
            **extra,
        }
        for n in range(count)
    )


def add(configs: StreamConfigs, audit: AuditCore, url: str, **spec: Any) -> StreamInfo:
    settings = {"url": url, "secret": SECRET, "timeout_seconds": 0.5} | spec.pop("settings", {})
    fields: dict[str, Any] = {
        "name": "siem", "kind": "webhook", "settings": settings, "start": LONG_AGO,
        "max_events": 20, "max_wait": 0.05, "max_attempts": 4,
    } | spec  # fmt: skip
    head = audit.app.recorder.max_notification_id() or 0
    return configs.add(fields.pop("workspace", "acme"), StreamSpec(**fields), head)


class Running:
    """A stream's follower in a thread of this test."""

    def __init__(self, audit: AuditCore, configs: StreamConfigs, stream_id: str) -> None:
        self.stop = threading.Event()
        model = audit.read_models.get("audit_events")
        self.follower = StreamFollower(audit.app, configs, model, stream_id, FAST)
        self.thread = threading.Thread(target=self.follower.run, args=(self.stop,), daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.stop.set()
        self.thread.join(timeout=20)
        assert not self.thread.is_alive()


def caught_up(audit: AuditCore, configs: StreamConfigs, stream_id: str) -> StreamInfo:
    head = audit.app.recorder.max_notification_id() or 0
    return eventually(
        lambda: (info := configs.running(stream_id)) and info.position == head and info,
        timeout=60,  # generous: the machine is shared and slow; only a stuck stream fails
    )


def acme_ids(audit: AuditCore, workspace: str = "acme") -> list[str]:
    """The workspace's event ids in commit order."""
    return [
        orjson.loads(event.state)["event_id"]
        for event in LogReader(audit.app).after(0, 100_000)
        if orjson.loads(event.state)["workspace_id"] == workspace
    ]


@pytest.fixture
def configs(audit: AuditCore) -> Iterator[StreamConfigs]:
    found = stream_configs(audit)
    yield found
    found.close()


def test_every_event_of_the_workspace_arrives_signed_in_commit_order(
    audit: AuditCore, configs: StreamConfigs, receiver: Receiver
) -> None:
    record(audit, 30)
    record(audit, 25, workspace="globex")  # another workspace's: never sent
    record(audit, 30)
    info = add(configs, audit, receiver.url)
    running = Running(audit, configs, info.id)
    try:
        caught_up(audit, configs, info.id)
        record(audit, 7)  # and events recorded while it follows
        done = caught_up(audit, configs, info.id)
    finally:
        running.close()
    sent = receiver.events()
    assert [e["event"]["event_id"] for e in sent] == acme_ids(audit)
    assert receiver.bad_signatures == 0
    assert all(len(r.body["events"]) <= 20 for r in receiver.requests)
    assert {r.body["workspace_id"] for r in receiver.requests} == {"acme"}
    # The API's envelope, stable delivery ids, the batch id as the webhook id.
    first = sent[0]
    assert first["delivery_id"] == delivery_id(info.id, UUID(first["event"]["event_id"]))
    assert len({e["delivery_id"] for e in sent}) == len(sent)
    assert first["event"]["actor"]["name"] == "User ünï 0"
    assert first["event"]["metadata"] == {"body": "comment 0 ✓"}
    assert set(first["event"]) >= {"event_id", "stream_id", "version", "action", "occurred_at"}
    assert all(r.webhook_id == r.body["batch_id"] for r in receiver.requests)
    assert (done.delivered, done.attempts, done.state) == (67, 0, ACTIVE)


def test_filters_deliver_only_matching_events_and_move_past_the_rest(
    audit: AuditCore, configs: StreamConfigs, receiver: Receiver
) -> None:
    record(audit, 12)
    zz = {"id": "user-zz", "type": "user"}
    audit.record_many(
        [{"action": "incident.comment_added", "workspace_id": "acme", "actor": zz,
          "metadata": {"body": "x"}}]
    )  # fmt: skip
    with pytest.raises(StreamConfigError, match=r"filters\.nope"):
        add(configs, audit, receiver.url, filters={"nope": ["1"]})
    info = add(configs, audit, receiver.url, filters={"actor_id": ["user-1", "user-zz"]})
    running = Running(audit, configs, info.id)
    try:
        caught_up(audit, configs, info.id)
        record(audit, 3, workspace="globex")  # only others' events: the position moves on
        caught_up(audit, configs, info.id)
    finally:
        running.close()
    actors = [e["event"]["actor"]["id"] for e in receiver.events()]
    assert actors == ["user-1"] * 4 + ["user-zz"]


def test_500s_time_outs_and_slow_answers_are_retried_until_delivered(
    audit: AuditCore, configs: StreamConfigs, receiver: Receiver
) -> None:
    # Requests 0-1: 500s; 2: 429; 3: slower than the sender waits; then slow but in time.
    answers = [Answer(500), Answer(503), Answer(429), Answer(200, delay=1.5)]
    receiver.plan = lambda n: answers[n] if n < len(answers) else Answer(200, delay=0.05)
    record(audit, 10)
    info = add(configs, audit, receiver.url, max_events=100, max_attempts=6)
    running = Running(audit, configs, info.id)
    try:
        done = caught_up(audit, configs, info.id)
    finally:
        running.close()
    assert done.state == ACTIVE
    assert done.attempts == 0  # reset by the delivery
    ids = [r.webhook_id for r in receiver.requests]
    assert len(ids) >= 5
    assert len(set(ids)) == 1
    assert [e["event"]["event_id"] for e in receiver.accepted[-1].body["events"]] == acme_ids(audit)


def test_a_refused_connection_is_retried_until_the_receiver_is_back(
    audit: AuditCore, configs: StreamConfigs
) -> None:
    receiver = Receiver().start()
    port = receiver.port
    receiver.stop()  # nothing listens there now
    record(audit, 5)
    info = add(configs, audit, f"http://127.0.0.1:{port}/hook", max_attempts=100)
    running = Running(audit, configs, info.id)
    try:
        failing = eventually(lambda: (i := configs.running(info.id)) and i.attempts >= 2 and i)
        assert failing.last_error is not None
        assert "cannot connect" in failing.last_error
        assert failing.position < (audit.app.recorder.max_notification_id() or 0)
        back = Receiver(port=port).start()
        try:
            caught_up(audit, configs, info.id)
        finally:
            back.stop()
    finally:
        running.close()
    assert [e["event"]["event_id"] for e in back.events()] == acme_ids(audit)


def test_dead_letter_after_n_failures_then_replay_delivers(
    audit: AuditCore, configs: StreamConfigs, receiver: Receiver
) -> None:
    receiver.plan = lambda _: Answer(500)
    record(audit, 8)
    before = datetime.now(UTC)
    record(audit, 4)
    info = add(configs, audit, receiver.url, max_attempts=3)
    running = Running(audit, configs, info.id)
    try:
        dead = eventually(lambda: (i := configs.running(info.id)) and i.state == DEAD_LETTER and i)
        assert running.thread.join(timeout=10) is None
        assert not running.thread.is_alive()
    finally:
        running.close()
    assert dead.attempts == 3
    assert len(receiver.requests) == 3
    assert dead.position == info.position  # nothing was passed
    assert dead.last_error == "webhook 127.0.0.1 answered 500"
    receiver.plan = lambda _: Answer(200)
    replayed = configs.replay("acme", info.id, before)
    assert replayed.state == ACTIVE
    running = Running(audit, configs, info.id)
    try:
        caught_up(audit, configs, info.id)
    finally:
        running.close()
    assert [e["event"]["event_id"] for e in receiver.events()] == acme_ids(audit)[8:]


def test_a_refusal_goes_to_dead_letter_at_once_and_resume_retries_it(
    audit: AuditCore, configs: StreamConfigs, receiver: Receiver
) -> None:
    receiver.plan = lambda n: Answer(401 if n == 0 else 200)
    record(audit, 3)
    info = add(configs, audit, receiver.url, max_attempts=50)
    running = Running(audit, configs, info.id)
    try:
        dead = eventually(lambda: (i := configs.running(info.id)) and i.state == DEAD_LETTER and i)
    finally:
        running.close()
    assert len(receiver.requests) == 1
    assert dead.last_error == "webhook 127.0.0.1 answered 401"
    configs.resume("acme", info.id)
    running = Running(audit, configs, info.id)
    try:
        caught_up(audit, configs, info.id)
    finally:
        running.close()
    assert [e["event"]["event_id"] for e in receiver.events()] == acme_ids(audit)


def test_a_replay_after_erasure_shows_the_fields_erased(
    pg_settings: Settings, receiver: Receiver
) -> None:
    masters = MasterKeys.parse(new_master_key(), "test")
    with AuditCore(pg_settings, master_keys=masters) as audit:
        record(audit, 4)
        configs = stream_configs(audit)
        try:
            info = add(configs, audit, receiver.url)
            assert info.encrypted
            running = Running(audit, configs, info.id)
            try:
                caught_up(audit, configs, info.id)
                names = {e["event"]["actor"]["name"] for e in receiver.events()}
                assert names == {"User ünï 0", "User ünï 1", "User ünï 2"}
                audit.erase("acme", "user-1")
                configs.replay("acme", info.id, LONG_AGO)
                caught_up(audit, configs, info.id)
            finally:
                running.close()
        finally:
            configs.close()
        ids = acme_ids(audit)
    assert len(ids) == 5  # the 4, and the erasure's own event
    replayed = [e["event"] for e in receiver.events()[-5:]]
    first_ids = [e["delivery_id"] for e in receiver.events()[:4]]
    assert [e["delivery_id"] for e in receiver.events()[-5:-1]] == first_ids  # stable ids
    assert [e["event_id"] for e in replayed] == ids
    by_actor = {e["actor"]["id"]: e["actor"].get("name") for e in replayed}
    assert by_actor["user-1"] == ERASED
    assert by_actor["user-0"] == "User ünï 0"


def test_credentials_never_show_in_logs_cli_output_or_rows(
    pg_settings: Settings,
    receiver: Receiver,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AUDITCORE_MASTER_KEY", new_master_key())
    monkeypatch.setenv("HOOK_SECRET", SECRET)
    caplog.set_level(logging.DEBUG)
    receiver.plan = lambda n: Answer(500 if n < 2 else 200)
    store = ["--event-store", pg_settings.event_store, "--clickhouse", pg_settings.clickhouse]
    with AuditCore(pg_settings) as audit:
        record(audit, 3)
    cli = CliRunner()
    added = cli.invoke(
        cli_app,
        ["streams", "add", "-w", "acme", "--name", "siem", "--set", f"url={receiver.url}",
         "--set-env", "secret=HOOK_SECRET", "--set", "timeout_seconds=2", "--from", "2000-01-01",
         "--max-wait", "0.05", *store],
    )  # fmt: skip
    assert added.exit_code == 0, added.output
    stream_id = added.output.split()[0]
    outputs = [added.output]
    with AuditCore(pg_settings) as audit:
        configs = stream_configs(audit)
        try:
            running = Running(audit, configs, stream_id)
            try:
                caught_up(audit, configs, stream_id)
            finally:
                running.close()
            with configs.engine.connect() as connection:
                rows = connection.exec_driver_sql("SELECT * FROM auditcore_log_streams").all()
        finally:
            configs.close()
    for args in (["list"], ["status"], ["pause", stream_id], ["resume", stream_id]):
        shown = cli.invoke(cli_app, ["streams", *args, *store])
        assert shown.exit_code == 0, shown.output
        outputs.append(shown.output)
    assert "***" in outputs[1]
    assert len(receiver.accepted) == 1
    assert receiver.bad_signatures == 0
    secret_body = SECRET.removeprefix("whsec_")
    for text in [*outputs, caplog.text, repr(rows)]:
        assert secret_body not in text
    assert "attempt 1 failed" in caplog.text  # the failures were logged, without the secret


def test_a_list_setting_is_given_as_json(pg_settings: Settings) -> None:
    """A NATS stream's servers (a list) from the command line."""
    store = ["--event-store", pg_settings.event_store, "--clickhouse", pg_settings.clickhouse]
    with AuditCore(pg_settings) as audit:
        record(audit, 1)
    cli = CliRunner()
    added = cli.invoke(
        cli_app,
        ["streams", "add", "-w", "acme", "--name", "bus", "--kind", "nats", "--set",
         'servers=["nats://127.0.0.1:4222", "nats://127.0.0.1:4223"]', "--set", "subject=a.b",
         *store],
    )  # fmt: skip
    assert added.exit_code == 0, added.output
    shown = cli.invoke(cli_app, ["streams", "list", *store])
    assert "nats://127.0.0.1:4223" in shown.output


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--set", "url=ftp://x", "--set", f"secret={SECRET}"], "http:// or https://"),
        (["--set", "url=http://127.0.0.1:9", "--set", "secret=nope"], "starts with whsec_"),
        (["--set", "url=http://127.0.0.1:9"], "secret: Field required"),
        (["--kind", "carrier-pigeon"], "not a destination"),
        (["--set", "url", "--set", "secret=x"], "give key=value"),
        (["--from", "yesterday-ish"], "is not a time"),
        (["--max-events", "0", "--set", "url=http://h", "--set", f"secret={SECRET}"],
         "max_events"),
    ],
)  # fmt: skip
def test_bad_stream_configurations_are_one_line_errors(
    pg_settings: Settings, arguments: list[str], message: str
) -> None:
    with AuditCore(pg_settings) as audit:
        record(audit, 1)
    store = ["--event-store", pg_settings.event_store, "--clickhouse", pg_settings.clickhouse]
    result = CliRunner().invoke(
        cli_app, ["streams", "add", "-w", "acme", "--name", "x", *arguments, *store]
    )
    # Usage errors exit 2 by themselves; the rest reach `main`, which prints them in one
    # line and exits 2 (an AuditcoreError, never another exception).
    if result.exit_code != 2:
        assert isinstance(result.exception, AuditcoreError), result.output
        shown = str(result.exception)
    else:
        shown = result.output
    assert message in shown
    assert "\n" not in shown.strip()
