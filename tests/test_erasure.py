"""Erasure by crypto-shredding: personal fields are stored encrypted per subject, and erasing
a subject destroys its keys — every read path then shows its fields as erased, everything else
stays, another subject and another workspace are untouched, the Merkle logs still verify, and
a crash in the middle of an erasure leaves it done or redoable."""

from __future__ import annotations

import csv
import io
import json
import os
import random
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest

from auditcore import Actor, AuditCore, Settings
from auditcore.api import ApiConfig
from auditcore.events.envelope import ERASED
from auditcore.lifecycle.keys import ERASURES
from auditcore.lifecycle.master import MasterKeys, new_master_key
from auditcore.projection.log import LogReader
from auditcore.tenancy.directory import Scope
from tests.apiserver import eventually
from tests.cli_run import AUDITCORE
from tests.integrity_support import make_store
from tests.test_api import Deployment, deploy
from tests.test_cli import run
from tests.test_live import Tail

# Hostile on purpose: Unicode, quotes, SQL and JSON metacharacters.
NAME = 'Zoë Ångström-"O\'Brien" 👩‍💻 ); DROP TABLE x; --'
SUBJECT = 'usér_alice ✓ {"s":1}'
IP, AGENT, EMAIL = "203.0.113.7", "AliceBrowser/1.0 (ünïcode)", "zoe.angstrom@example.com"
SECRETS = (NAME, IP, AGENT, EMAIL, "Alice at globex")
"""What must be gone from acme's answers once acme's subject is erased."""


@pytest.fixture
def master_key(monkeypatch: pytest.MonkeyPatch) -> str:
    key = new_master_key()
    monkeypatch.setenv("AUDITCORE_MASTER_KEY", key)
    monkeypatch.delenv("AUDITCORE_MASTER_KEY_FILE", raising=False)
    return key


@pytest.fixture
def api(pg_settings: Settings, master_key: str) -> Iterator[Deployment]:
    yield from deploy(pg_settings, ApiConfig(live_keepalive=0.2))


def _post(api: Deployment, key: str, body: object) -> list[dict[str, Any]]:
    with api.client(key) as client:
        response = client.post("/v1/events", json=body)
    assert response.status_code == 201, response.text
    items: list[dict[str, Any]] = response.json()["items"]
    return items


def _erase(api: Deployment, token: str, subject: str) -> dict[str, Any]:
    with api.client(None, Authorization=f"Bearer {token}") as client:
        response = client.post("/v1/erasures", json={"subject_id": subject})
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


def _no_secret(text: str, where: str) -> None:
    for secret in (NAME, IP, AGENT, EMAIL):
        assert secret not in text, (where, secret)
        # JSON may escape the non-ASCII characters: look for that form too.
        assert json.dumps(secret)[1:-1] not in text, (where, secret)


def test_an_erased_subject_reads_as_erased_on_every_path(api: Deployment) -> None:
    alice = {"id": SUBJECT, "type": "user", "name": NAME}
    (by_alice,) = _post(
        api,
        "acme",
        {
            "action": "monitor.paused",
            "actor": alice,
            "context": {"ip": IP, "user_agent": AGENT},
            "metadata": {"reason": EMAIL},  # an e-mail address: personal wherever it is
        },
    )
    (on_alice,) = _post(
        api,
        "acme",
        {
            "action": "monitor.paused",
            "actor": {"id": "user_bob", "type": "user", "name": "Bob Stone"},
            "context": {"ip": "198.51.100.4"},
            "targets": [{"type": "user", "id": SUBJECT, "name": NAME}],
            "metadata": {"reason": "ordinary"},
        },
    )
    # The same subject id in another workspace is another person.
    (elsewhere,) = _post(
        api,
        "globex",
        {"action": "monitor.paused", "actor": {**alice, "name": "Alice at globex"}},
    )
    # At rest, nothing personal is in clear, in either workspace.
    stored = b"".join(e.state for e in LogReader(api.audit.app).after(0, 1000))
    for secret in SECRETS:
        assert secret.encode() not in stored
        assert json.dumps(secret).encode() not in stored

    before = {e["event_id"]: e for e in api.projected("acme_read", 2)}
    assert before[by_alice["event_id"]]["actor"]["name"] == NAME
    assert before[by_alice["event_id"]]["context"]["ip"] == IP
    tail_before = Tail(api, "acme_read", {})  # live from now: sees the erasure's own event

    # A second workspace's admin cannot reach acme's subject: it erases its own only.
    globex_admin = api.directory.create_key("globex", "ops", [Scope.ADMIN]).token
    theirs = _erase(api, globex_admin, SUBJECT)
    assert (theirs["workspace_id"], theirs["keys_destroyed"]) == ("globex", 1)
    assert api.audit.event(UUID(by_alice["event_id"]), workspace_id="acme").actor.name == NAME
    assert api.audit.event(UUID(elsewhere["event_id"]), workspace_id="globex").actor.name == ERASED
    # Neither a key without the admin scope.
    with api.client("acme") as client:
        refused = client.post("/v1/erasures", json={"subject_id": SUBJECT})
    assert refused.status_code == 403, refused.text

    done = _erase(api, api.keys["admin"], SUBJECT)
    assert (done["finished"], done["keys_destroyed"]) == (True, 1), done
    again = _erase(api, api.keys["admin"], SUBJECT)  # repeating is harmless
    assert (again["finished"], again["keys_destroyed"]) == (True, 0)

    _erased_in_the_store(api, by_alice["event_id"], on_alice["event_id"])
    _erased_in_the_read_api(api, by_alice["event_id"], on_alice["event_id"], before)
    _erased_in_the_live_tail(api, by_alice["event_id"], tail_before)

    # The Merkle logs hash the stored ciphertext, which erasure leaves alone.
    def logged() -> bool | None:
        report = api.audit.integrity.verify()
        assert report.ok, report.problems
        return True if report.events == api.stored() else None

    assert eventually(logged)


def _erased_in_the_store(api: Deployment, by_alice: str, on_alice: str) -> None:
    mine = api.audit.event(UUID(by_alice), workspace_id="acme")
    assert (mine.actor.id, mine.actor.name) == (SUBJECT, ERASED)
    assert (mine.context.ip, mine.context.user_agent) == (ERASED, ERASED)
    assert mine.metadata == {"reason": ERASED}
    bobs = api.audit.event(UUID(on_alice), workspace_id="acme")
    assert (bobs.actor.name, bobs.context.ip, bobs.metadata) == (
        "Bob Stone",
        "198.51.100.4",
        {"reason": "ordinary"},
    )
    assert [(t.id, t.name) for t in bobs.targets] == [(SUBJECT, ERASED)]


def _erased_in_the_read_api(
    api: Deployment, by_alice: str, on_alice: str, before: dict[str, dict[str, Any]]
) -> None:
    # The read API (list, get, search), re-projected: ids, actions and times unchanged.
    erasures = api.projected("acme_read", 1, action="auditcore.subject.erased")
    assert erasures[0]["metadata"]["subject_id"] == SUBJECT
    assert (
        erasures[0]["context"]["api_key_id"] == api.directory.authenticate(api.keys["admin"]).key_id
    )  # type: ignore[union-attr]
    with api.client("acme_read") as client:
        listed = client.get("/v1/events", params={"action": "monitor.paused"})
        _no_secret(listed.text, "list")
        after = {e["event_id"]: e for e in listed.json()["items"]}
        one = client.get(f"/v1/events/{by_alice}")
        _no_secret(one.text, "get")
        assert one.json()["actor"] == {"id": SUBJECT, "type": "user", "name": ERASED}
        assert client.get("/v1/events", params={"text": "Ångström"}).json()["items"] == []
        csv_export = client.get("/v1/events/export", params={"format": "csv"}).text
        jsonl_export = client.get("/v1/events/export", params={"format": "jsonl"}).text
        report = client.get("/v1/reports", params={"since": "30d"}).text
    for key in ("event_id", "stream_id", "version", "action", "occurred_at", "recorded_at"):
        assert {i: e[key] for i, e in after.items()} == {i: e[key] for i, e in before.items()}
    assert after[on_alice]["actor"]["name"] == "Bob Stone"
    assert after[on_alice]["targets"][0]["name"] == ERASED
    for text, where in ((csv_export, "csv"), (jsonl_export, "jsonl"), (report, "report")):
        _no_secret(text, where)
    rows = {r["event_id"]: r for r in csv.DictReader(io.StringIO(csv_export))}
    assert rows[by_alice]["actor_name"] == ERASED
    lines = {json.loads(line)["event_id"]: json.loads(line) for line in jsonl_export.splitlines()}
    assert lines[by_alice]["context"]["ip"] == ERASED


def _erased_in_the_live_tail(api: Deployment, by_alice: str, tail_before: Tail) -> None:
    # The live tail: a replay from the start, and the tail that was open meanwhile.
    replay = Tail(api, "acme_read", {}, last_id="0")
    try:
        seen = eventually(lambda: replay.events if len(replay.events) >= 3 else None)
        _no_secret(json.dumps(seen, ensure_ascii=False), "live replay")
        assert {e["event_id"]: e["actor"]["name"] for e in seen}[by_alice] == ERASED
        assert eventually(
            lambda: [e for e in tail_before.events if e["action"] == "auditcore.subject.erased"]
        )
    finally:
        replay.close()
        tail_before.close()


def _events(audit: AuditCore, subject: str, count: int = 3) -> list[str]:
    person = Actor(id=subject, name=NAME)
    return [
        str(
            audit.record(
                "monitor.paused",
                workspace_id="acme",
                actor=person,
                context={"ip": IP, "user_agent": AGENT},
                metadata={"reason": EMAIL if n % 2 else None},
            ).event_id
        )
        for n in range(count)
    ]


def test_the_command_line_erases_and_verify_still_passes(
    postgres_database: str, process_clickhouse_url: str, tmp_path: Path
) -> None:
    from tests.conftest import fresh_postgres_store  # noqa: PLC0415

    settings = Settings(fresh_postgres_store(postgres_database), process_clickhouse_url)
    store = make_store(settings, tmp_path)
    key = new_master_key()
    env = {"AUDITCORE_MASTER_KEY": key, **_integrity_env(store)}
    with AuditCore(settings, master_keys=MasterKeys.parse(key, "test")) as audit:
        ids = _events(audit, SUBJECT)
        kept = _events(audit, "user_bob", 1)
    url = settings.event_store

    def cli(*args: str, check: bool = True, **extra: str) -> subprocess.CompletedProcess[str]:
        return run(*args, store=url, clickhouse=process_clickhouse_url, check=check,
                   env={**env, **extra})  # fmt: skip

    cli("project")
    erased = json.loads(cli("erase", "-w", "acme", "--subject", SUBJECT).stdout)
    assert (erased["finished"], erased["keys_destroyed"]) == (True, 1)
    assert erased["streams_reprojected"] == 3
    found = json.loads(cli("query", "-w", "acme", "-f", "json", "--limit", "100").stdout)["items"]
    names = {e["event_id"]: e["actor"]["name"] for e in found}
    assert {names[i] for i in ids} == {ERASED}
    assert names[kept[0]] == NAME
    exported = cli("export", "-w", "acme", "-f", "jsonl").stdout
    assert {json.loads(line)["actor"]["name"] for line in exported.splitlines()} >= {ERASED}
    for event_id in ids:
        for place in ((), ("--from-store",)):
            stream = _stream_of(found, event_id)
            shown = cli("history", stream, "-w", "acme", "-f", "json", *place).stdout
            _no_secret(shown, "history")
            assert ERASED in shown
    cli("integrity", "sign")
    verified = cli("verify", check=False)
    assert verified.returncode == 0, verified.stdout + verified.stderr

    # A master key missing, malformed or wrong: one line, exit 2, nothing read.
    for wrong, says in (
        ({"AUDITCORE_MASTER_KEY": ""}, "no master key is set"),
        ({"AUDITCORE_MASTER_KEY": new_master_key()}, "is not the one that encrypted"),
        ({"AUDITCORE_MASTER_KEY": "not base64!"}, "must be 32 random bytes"),
        ({"AUDITCORE_MASTER_KEY_FILE": str(tmp_path / "missing.key")}, "cannot read"),
    ):
        stream = _stream_of(found, kept[0])
        refused = cli("history", stream, "-w", "acme", "--from-store", check=False, **wrong)
        assert refused.returncode == 2, (wrong, refused.stdout, refused.stderr)
        assert says in " ".join(refused.stderr.split()), refused.stderr
        assert "Traceback" not in refused.stderr
        assert len(refused.stderr.strip().splitlines()) <= 2, refused.stderr  # wrapped at 200

    # The database edited behind our back is still caught after the erasure.
    position = store.positions_of("acme")[0]
    store.edit_state(position, {"actor": {"id": "user_mallory", "type": "user", "name": None}})
    tampered = cli("verify", check=False)
    assert tampered.returncode == 1, tampered.stdout + tampered.stderr
    assert "edited" in tampered.stdout + tampered.stderr


def _integrity_env(store: Any) -> dict[str, str]:
    return {
        "AUDITCORE_SIGNING_KEY": str(store.integrity.signing_key),
        "AUDITCORE_CHECKPOINT_DIR": str(store.integrity.checkpoint_dir),
    }


def _stream_of(found: list[dict[str, Any]], event_id: str) -> str:
    return next(str(e["stream_id"]) for e in found if e["event_id"] == event_id)


def test_a_killed_erasure_is_done_or_redone(
    postgres_database: str, process_clickhouse_url: str
) -> None:
    """``auditcore erase`` SIGKILLed at random instants (``AUDITCORE_CRASH_KILLS`` rounds, 3 by
    default); running it again always finishes: keys gone, one event per erasure, every read
    model re-projected."""
    from tests.conftest import fresh_postgres_store  # noqa: PLC0415

    settings = Settings(fresh_postgres_store(postgres_database), process_clickhouse_url)
    key = new_master_key()
    masters = MasterKeys.parse(key, "test")
    url = settings.event_store
    env = {**os.environ, "AUDITCORE_MASTER_KEY": key, "AUDITCORE_EVENT_STORE": url,
           "AUDITCORE_CLICKHOUSE": process_clickhouse_url}  # fmt: skip
    rounds = int(os.environ.get("AUDITCORE_CRASH_KILLS", "3"))
    unfinished = 0
    rng = random.Random(2126)
    for round_ in range(rounds):
        subject = f"user_{round_}_{SUBJECT}"
        with AuditCore(settings, master_keys=masters) as audit:
            ids = _events(audit, subject)
        run("project", store=url, clickhouse=process_clickhouse_url, env=env)
        with AuditCore(settings, master_keys=masters) as watcher:
            victim = subprocess.Popen(
                [AUDITCORE, "erase", "-w", "acme", "--subject", subject],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            # Odd rounds: any instant from start-up on. Even rounds: once the keys are
            # destroyed, somewhere in recording, waiting and re-projecting.
            if round_ % 2 or not _erasure_begun(watcher, subject, victim):
                time.sleep(rng.uniform(0.5, 4.0))
            else:
                time.sleep(rng.uniform(0.0, 1.5))
            os.kill(victim.pid, signal.SIGKILL)
            victim.wait()
            rows = _erasures(watcher, subject)
            unfinished += bool(rows) and any(row.finished_at is None for row in rows)
        redo = run("erase", "-w", "acme", "--subject", subject, store=url,
                   clickhouse=process_clickhouse_url, env=env)  # fmt: skip
        assert json.loads(redo.stdout)["finished"] is True
        with AuditCore(settings, master_keys=masters) as audit:
            rows = _erasures(audit, subject)
            assert rows
            assert all(row.finished_at is not None for row in rows)
            recorded = [
                json.loads(e.state)["metadata"]
                for e in LogReader(audit.app).after(0, 100_000)
                if e.action == "auditcore.subject.erased"
            ]
            mine = [m for m in recorded if m["subject_id"] == subject]
            assert sorted(m["requested_at"] for m in mine) == sorted(
                r.requested_at.isoformat() for r in rows
            )
            for event_id in ids:
                assert audit.event(UUID(event_id), workspace_id="acme").actor.name == ERASED
        found = run("query", "-w", "acme", "-f", "json", "--limit", "1000", "--actor", subject,
                    store=url, clickhouse=process_clickhouse_url, env=env)  # fmt: skip
        items = json.loads(found.stdout)["items"]
        assert sorted(e["event_id"] for e in items) == sorted(ids)
        assert {e["actor"]["name"] for e in items} == {ERASED}
    # The redo was exercised: some kill landed between destroying the keys and finishing.
    assert unfinished >= min(rounds, 1), f"{unfinished} of {rounds} kills left one to redo"


def _erasures(audit: AuditCore, subject: str) -> list[Any]:
    assert audit.subject_keys is not None
    with audit.subject_keys.engine().connect() as connection:
        return list(
            connection.execute(ERASURES.select().where(ERASURES.c.subject_id == subject)).all()
        )


def _erasure_begun(audit: AuditCore, subject: str, victim: subprocess.Popen[bytes]) -> bool:
    """Wait until the erasure's first transaction committed (False if the process ended)."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and victim.poll() is None:
        if _erasures(audit, subject):
            return True
        time.sleep(0.02)
    return False


@pytest.mark.store_only
def test_rotating_the_master_key(store_settings: Settings, tmp_path: Path) -> None:
    old, new = new_master_key(), new_master_key()
    with AuditCore(store_settings, master_keys=MasterKeys.parse(old, "old")) as audit:
        (event_id,) = _events(audit, SUBJECT, 1)
    keyring = tmp_path / "master.keys"
    keyring.write_text(f"# the new key first, the old one until rotated\n{new}\n{old}\n")
    env = {"AUDITCORE_MASTER_KEY_FILE": str(keyring)}
    done = run("keys", "rotate-master", store=store_settings.event_store,
               clickhouse=tmp_path / "ch", env=env)  # fmt: skip
    assert "Re-wrapped 1 subject key" in done.stdout
    with AuditCore(store_settings, master_keys=MasterKeys.parse(new, "new")) as audit:
        assert audit.event(UUID(event_id), workspace_id="acme").actor.name == NAME
        # New subjects' keys are wrapped by the new key too.
        (other,) = _events(audit, "user_new", 1)
    with pytest.raises(Exception, match="is not the one that encrypted"):
        AuditCore(store_settings, master_keys=MasterKeys.parse(old, "old"))
    with AuditCore(store_settings, master_keys=MasterKeys.parse(new, "new")) as audit:
        assert audit.event(UUID(other), workspace_id="acme").actor.name == NAME
