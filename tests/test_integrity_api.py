"""Proofs over the HTTP API (a real server, PostgreSQL, the follower running inside it), proof
exports checked by the standalone verifier, and the viewer showing an event's proof status."""

from __future__ import annotations

import base64
import io
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from playwright.sync_api import Browser, expect

from auditcore import Settings
from auditcore.api import ApiConfig
from auditcore.integrity import merkle
from auditcore.integrity.note import SignerKey, VerifierKey, open_checkpoint
from tests.apiserver import eventually
from tests.integrity_support import make_store
from tests.test_api import Deployment, deploy
from tests.test_viewer import browser  # noqa: F401 - the browser fixture

AUDITCORE = str(Path(sys.executable).with_name("auditcore"))
COMMENT = {"action": "incident.comment_added", "metadata": {"body": "Grüße, 世界 ✓"}}


@pytest.fixture
def api(
    pg_settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Deployment]:
    key = SignerKey.generate("audit.example.com")
    (tmp_path / "log.key").write_text(key.encode())
    monkeypatch.setenv("AUDITCORE_SIGNING_KEY", str(tmp_path / "log.key"))
    monkeypatch.setenv("AUDITCORE_CHECKPOINT_INTERVAL", "0.2")
    yield from deploy(pg_settings, ApiConfig(live_keepalive=0.5))


def record(api: Deployment, key: str, count: int) -> list[str]:
    with api.client(key) as client:
        response = client.post("/v1/events", json=[COMMENT] * count)
    assert response.status_code == 201, response.text
    return [str(event_id) for event_id in response.json()["ids"]]


def signed(api: Deployment, key: str, size: int) -> dict[str, Any]:
    """The latest checkpoint, once the follower in the server has signed ``size`` events."""

    def latest() -> dict[str, Any] | None:
        with api.client(key) as client:
            response = client.get("/v1/checkpoints/latest")
        body: dict[str, Any] = response.json()
        return body if response.status_code == 200 and body["tree_size"] >= size else None

    return eventually(latest)


def public_key(api: Deployment, key: str) -> VerifierKey:
    with api.client(key) as client:
        body = client.get("/v1/checkpoints/public-key").json()
    workspace_key = VerifierKey.parse(body["workspace_key"])
    assert VerifierKey.parse(body["log_key"]).for_log(body["origin"].rpartition("/")[2]) == (
        workspace_key
    )
    return workspace_key


def b(value: str) -> bytes:
    return base64.b64decode(value)


def test_inclusion_proofs_verify_against_the_signed_checkpoint(api: Deployment) -> None:
    ids = record(api, "acme", 13)
    checkpoint = signed(api, "acme", 13)
    key = public_key(api, "acme")
    opened, _ = open_checkpoint(checkpoint["checkpoint"], [key])
    assert opened.size == checkpoint["tree_size"]
    assert opened.origin == "audit.example.com/acme"
    with api.client("acme_read") as client:
        for event_id in ids:
            proof = client.get(f"/v1/events/{event_id}/proof").json()
            assert proof["status"] == "proven", proof
            merkle.verify_inclusion(
                proof["leaf_index"],
                proof["tree_size"],
                b(proof["leaf_hash"]),
                [b(item) for item in proof["inclusion_proof"]],
                opened.root,
            )


def test_consistency_between_two_signed_sizes(api: Deployment) -> None:
    record(api, "acme", 5)
    first = signed(api, "acme", 5)
    record(api, "acme", 9)
    second = signed(api, "acme", first["tree_size"] + 9)
    with api.client("acme_read") as client:
        body = client.get(
            "/v1/checkpoints/consistency",
            params={"from": first["tree_size"], "to": second["tree_size"]},
        ).json()
    assert body["from_checkpoint"]["checkpoint"] == first["checkpoint"]
    merkle.verify_consistency(
        body["from"],
        body["to"],
        [b(item) for item in body["consistency_proof"]],
        b(first["root_hash"]),
        b(second["root_hash"]),
    )


def test_proofs_are_workspace_scoped_and_bad_input_is_refused(api: Deployment) -> None:
    acme = record(api, "acme", 3)
    record(api, "globex", 2)
    signed(api, "globex", 2)
    with api.client("globex") as client:
        theirs = client.get(f"/v1/events/{acme[0]}/proof")
        unknown = client.get("/v1/events/00000000-0000-4000-8000-000000000000/proof")
        assert theirs.status_code == unknown.status_code == 404
        assert theirs.json()["error"]["type"] == unknown.json()["error"]["type"]
        assert client.get("/v1/checkpoints/latest").json()["origin"] == "audit.example.com/globex"
        for params in (
            {"from": 0, "to": 1},
            {"from": 2, "to": 1},
            {"from": "abc", "to": 1},
            {"to": 1},
        ):
            response = client.get("/v1/checkpoints/consistency", params=params)
            assert response.status_code == 400, (params, response.text)
            assert "error" in response.json()
        # A tree larger than the log does not exist (yet): not found, not a bad request.
        beyond = client.get("/v1/checkpoints/consistency", params={"from": 1, "to": 99})
        assert beyond.status_code == 404, beyond.text
        assert client.get("/v1/events/not-a-uuid/proof").status_code == 400
    with api.client("acme_write") as client:
        assert client.get("/v1/checkpoints/latest").status_code == 403
    with api.client(None) as client:
        assert client.get("/v1/checkpoints/public-key").status_code == 401


def test_a_damaged_log_answers_409_not_500(api: Deployment) -> None:
    record(api, "acme", 6)
    signed(api, "acme", 6)
    schema = api.audit.settings.postgres_schema
    with api.audit.app.recorder.datastore.get_connection() as conn:  # type: ignore[attr-defined]
        conn.execute(f'DELETE FROM "{schema}".auditcore_integrity_nodes')
    with api.client("acme_read") as client:
        response = client.get("/v1/checkpoints/consistency", params={"from": 2, "to": 6})
    assert response.status_code == 409
    assert response.json()["error"]["type"] == "proof_unavailable"
    assert "auditcore verify" in response.json()["error"]["message"]


def test_pending_then_proven_and_a_tampered_event_fails(api: Deployment) -> None:
    (event_id,) = record(api, "acme", 1)
    with api.client("acme_read") as client:
        first = client.get(f"/v1/events/{event_id}/proof").json()
        assert first["status"] in ("pending", "proven")
        signed(api, "acme", 1)
        assert client.get(f"/v1/events/{event_id}/proof").json()["status"] == "proven"
        schema = api.audit.settings.postgres_schema
        with api.audit.app.recorder.datastore.get_connection() as conn:  # type: ignore[attr-defined]
            conn.execute(
                f'UPDATE "{schema}".auditcore_events SET state = convert_to(replace('
                "convert_from(state, 'UTF8'), 'Grüße', 'Hello'), 'UTF8')"
            )
        tampered = client.get(f"/v1/events/{event_id}/proof").json()
    assert tampered["status"] == "failed"
    assert "metadata changed" in tampered["detail"]


def test_http_proof_export_is_checked_offline(api: Deployment, tmp_path: Path) -> None:
    record(api, "acme", 40)
    checkpoint = signed(api, "acme", 40)
    with api.client("acme_read") as client:
        refused = client.get("/v1/events/export", params={"proof": "true", "actor_id": "x"})
        assert refused.status_code == 400
        response = client.get("/v1/events/export", params={"proof": "true", "from_size": 11})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/zip"
    folder = tmp_path / "export"
    zipfile.ZipFile(io.BytesIO(response.content)).extractall(folder)
    assert sorted(p.name for p in folder.iterdir()) == [
        "README.txt", "checkpoint", "events.jsonl", "proof.json", "verify_export.py",
    ]  # fmt: skip
    assert (folder / "checkpoint").read_text() == checkpoint["checkpoint"]
    lines = (folder / "events.jsonl").read_bytes().splitlines()
    assert len(lines) == checkpoint["tree_size"] - 11
    (tmp_path / "acme.pub").write_text(public_key(api, "acme").encode())

    def check() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-I", str(folder / "verify_export.py"), "--public-key",
             str(tmp_path / "acme.pub"), str(folder / "proof.json")],
            capture_output=True, text=True, timeout=60, check=False, cwd=tmp_path,
        )  # fmt: skip

    done = check()
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"VERIFIED: {len(lines)} events, positions 11 to" in done.stdout
    # One event removed, one changed, two swapped: each is caught.
    for broken, reason in (
        (lines[:5] + lines[6:], "is position 17, expected 16: events were removed"),
        ([lines[0].replace("Grüße".encode(), b"Hello"), *lines[1:]], "do not hash to the"),
        ([lines[1], lines[0], *lines[2:]], "is position 12, expected 11"),
        (lines[:-1], "ends at position"),
    ):
        (folder / "events.jsonl").write_bytes(b"\n".join(broken) + b"\n")
        done = check()
        assert done.returncode == 1, done.stdout
        assert "NOT VERIFIED" in done.stdout
        assert reason in done.stdout


def test_cli_proof_export_with_a_previous_checkpoint(tmp_path: Path) -> None:
    """Two exports in a row: the second starts where the first's checkpoint ends, and the
    standalone verifier ties them together (through the CLI, on SQLite; the HTTP export above
    runs on PostgreSQL)."""
    store = make_store(Settings(str(tmp_path / "events.sqlite")), tmp_path)
    with store.core() as audit:
        audit.record_many([{**COMMENT, "workspace_id": "acme"}] * 21)
        audit.integrity.sign_now()
        audit.record_many([{**COMMENT, "workspace_id": "acme"}] * 9)
    environment = {
        "AUDITCORE_EVENT_STORE": store.settings.event_store,
        "AUDITCORE_SIGNING_KEY": str(store.integrity.signing_key),
        "PATH": "/usr/bin:/bin",
    }

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [AUDITCORE, *args], capture_output=True, text=True, env=environment, timeout=120,
            check=False, cwd=tmp_path,
        )  # fmt: skip

    assert (
        cli("export", "-w", "acme", "--proof", "-f", "jsonl", "-o", "one/acme.jsonl").returncode
        == 0
    )
    assert cli("integrity", "sign").returncode == 0  # the 9 newer events, and the export's own
    assert cli("export", "-w", "acme", "--proof", "-f", "jsonl", "--from-size", "21",
               "-o", "two/acme.jsonl").returncode == 0  # fmt: skip
    assert cli("integrity", "verifier", "-o", "verify_export.py").returncode == 0
    (tmp_path / "log.pub").write_text(store.key.verifier().encode())
    first = orjson.loads((tmp_path / "one" / "acme.proof.json").read_bytes())
    second = orjson.loads((tmp_path / "two" / "acme.proof.json").read_bytes())
    assert (first["from_size"], first["to_size"]) == (0, 21)
    assert second["from_size"] == 21
    assert second["to_size"] == 31  # 9 more events and the first export's own audit event
    assert second["from_checkpoint"] == first["checkpoint"]
    done = subprocess.run(
        [sys.executable, "-I", "verify_export.py", "--public-key", "log.pub",
         "two/acme.proof.json", "--previous", "one/acme.checkpoint"],
        capture_output=True, text=True, timeout=60, check=False, cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    # A key the auditor does not trust is refused, whatever the export says.
    (tmp_path / "other.pub").write_text(SignerKey.generate("audit.example.com").verifier().encode())
    done = subprocess.run(
        [sys.executable, "-I", "verify_export.py", "--public-key", "other.pub",
         "one/acme.proof.json"],
        capture_output=True, text=True, timeout=60, check=False, cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 1
    assert "not signed by the key you trust" in done.stdout
    assert "import auditcore" not in (tmp_path / "verify_export.py").read_text()


def test_viewer_shows_the_proof_status(browser: Browser, api: Deployment) -> None:  # noqa: F811
    record(api, "acme", 3)
    signed(api, "acme", 3)
    api.projected("acme", 3)
    page = browser.new_page(viewport={"width": 1440, "height": 900})
    messages: list[str] = []
    page.on("console", lambda message: messages.append(message.text))
    page.goto(api.url)
    page.get_by_role("textbox", name="API key").fill(api.keys["acme_read"])
    page.get_by_role("button", name="Sign in").click()
    page.locator("#events tbody tr").first.click()
    proof = page.locator("#detail-proof")
    expect(proof).to_contain_text("✓ Proven: position")
    expect(proof).to_contain_text("re-checked in this browser")
    expect(proof).to_have_class("proof proven")
    assert not [m for m in messages if "Content Security Policy" in m]
    page.close()
    with httpx.Client(base_url=api.url) as client:
        assert client.get("/assets/viewer.js").status_code == 200
