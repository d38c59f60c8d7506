"""The integrity follower's duties besides appending: one appender at a time with a standby,
checkpoints every M events or N seconds and when stopping, publishing, a damaged log refused;
and the ``auditcore integrity`` commands."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import pytest

from auditcore import Settings
from auditcore.integrity.follower import DamagedLogError
from auditcore.integrity.note import SignerKey, VerifierKey
from auditcore.integrity.settings import IntegritySettings
from tests.apiserver import eventually as _eventually
from tests.integrity_support import Store, make_store

pytestmark = pytest.mark.store_only  # the event store alone: one ClickHouse engine is enough

AUDITCORE = str(Path(sys.executable).with_name("auditcore"))
T = TypeVar("T")


def eventually(check: Callable[[], T | None], timeout: float = 60.0) -> T:
    """Generous: these wait on a follower thread that a loaded machine may starve."""
    return _eventually(check, timeout)


def comments(store: Store, workspace: str, count: int) -> None:
    with store.core() as audit:
        audit.record_many(
            {
                "action": "incident.comment_added",
                "workspace_id": workspace,
                "metadata": {"body": "x"},
            }
            for _ in range(count)
        )


def sizes(store: Store, workspace: str) -> list[int]:
    with store.core() as audit:
        return [c.size for c in audit.integrity.log.checkpoints(workspace)]


def test_a_second_follower_waits_as_a_standby_then_takes_over(
    store_settings: Settings, tmp_path: Path
) -> None:
    store = make_store(store_settings, tmp_path)
    comments(store, "acme", 5)
    with store.core() as first, store.core() as second:
        stop_first, stop_second = threading.Event(), threading.Event()
        threads = first.integrity.follow(stop_first)
        eventually(lambda: first.integrity.status.state == "following")
        threads += second.integrity.follow(stop_second)
        eventually(lambda: second.integrity.status.state == "standby")
        comments(store, "acme", 7)
        eventually(lambda: first.integrity.log.position() == 12 or None)
        assert second.integrity.status.state == "standby"

        stop_first.set()
        eventually(lambda: second.integrity.status.state == "following")
        comments(store, "acme", 4)
        eventually(lambda: second.integrity.log.heads()["acme"].size == 16 or None)
        stop_second.set()
        for thread in threads:
            thread.join(timeout=30)
        report = second.integrity.verify()
    assert report.ok, [p.describe() for p in report.problems]
    assert report.workspaces["acme"].verified == 16
    assert sizes(store, "acme")[-1] == 16  # signed by the second follower as it stopped


def test_checkpoints_every_m_events_and_when_stopping(
    store_settings: Settings, tmp_path: Path
) -> None:
    store = make_store(store_settings, tmp_path)
    store.integrity = IntegritySettings(
        signing_key=store.integrity.signing_key, checkpoint_interval=3600, checkpoint_events=10
    )
    comments(store, "acme", 25)
    with store.core() as audit:
        assert audit.integrity.follower(batch_size=10).catch_up() == 25
    assert sizes(store, "acme") == [10, 20]  # every 10 events; 5 are due at the next round
    with store.core() as audit:
        stop = threading.Event()
        threads = audit.integrity.follow(stop)
        eventually(lambda: audit.integrity.status.state == "following")
        stop.set()
        threads[0].join(timeout=30)
    assert sizes(store, "acme") == [10, 20, 25]


def test_checkpoints_every_n_seconds(store_settings: Settings, tmp_path: Path) -> None:
    store = make_store(store_settings, tmp_path)
    store.integrity = IntegritySettings(
        signing_key=store.integrity.signing_key, checkpoint_interval=0.5, checkpoint_events=10**6
    )
    with store.core() as audit:
        stop = threading.Event()
        threads = audit.integrity.follow(stop)
        comments(store, "acme", 3)
        eventually(lambda: sizes(store, "acme") == [3] or None)
        comments(store, "acme", 2)
        eventually(lambda: sizes(store, "acme") == [3, 5] or None)
        stop.set()
        threads[0].join(timeout=30)


def test_published_copies_and_a_failing_destination(
    store_settings: Settings, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = make_store(store_settings, tmp_path)
    comments(store, "acme", 3)
    with store.core() as audit:
        (made,) = audit.integrity.sign_now()
    folder = tmp_path / "published" / "acme"
    assert (folder / "checkpoint").read_text() == made.note
    assert [p.name for p in (folder / "history").iterdir()] == [f"{3:020d}-{made.key_id:08x}"]
    # A destination that cannot be written is logged; the checkpoint is still stored.
    blocked = tmp_path / "blocked"
    blocked.write_text("a file, not a directory")
    store.integrity = IntegritySettings(
        signing_key=store.integrity.signing_key, checkpoint_dir=blocked
    )
    comments(store, "acme", 2)
    with store.core() as audit:
        assert len(audit.integrity.sign_now()) == 1
    assert sizes(store, "acme") == [3, 5]
    assert "publishing checkpoints to directory" in caplog.text


def test_a_damaged_tree_head_stops_the_follower(store_settings: Settings, tmp_path: Path) -> None:
    store = make_store(store_settings, tmp_path)
    comments(store, "acme", 3)
    with store.core() as audit:
        audit.integrity.follower().catch_up()
    store.execute("UPDATE {trees} SET root_hash = ? WHERE workspace_id = 'acme'", (bytes(32),))
    comments(store, "acme", 1)
    with store.core() as audit, pytest.raises(DamagedLogError, match="auditcore verify"):
        audit.integrity.follower().catch_up()


def test_integrity_commands(tmp_path: Path) -> None:
    environment = {**os.environ, "AUDITCORE_EVENT_STORE": str(tmp_path / "events.sqlite")}
    environment.pop("AUDITCORE_SIGNING_KEY", None)

    def cli(*args: str, **extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [AUDITCORE, *args], capture_output=True, text=True, timeout=120, check=False,
            env={**environment, **extra, "COLUMNS": "200"}, cwd=tmp_path,
        )  # fmt: skip

    made = cli("integrity", "keygen", "--name", "audit.example.com", "-o", "keys/log.key")
    assert made.returncode == 0, made.stderr
    key_file = tmp_path / "keys" / "log.key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    signer = SignerKey.parse(key_file.read_text())
    public = VerifierKey.parse((tmp_path / "keys" / "log.pub").read_text())
    assert public == signer.verifier()
    assert public.encode() in made.stdout
    again = cli("integrity", "keygen", "-o", "keys/log.key")
    assert again.returncode == 2
    assert "exists" in again.stderr
    assert cli("integrity", "keygen", "--name", "bad name").returncode == 2

    derived = cli("integrity", "public-key", "-w", "acme", AUDITCORE_SIGNING_KEY=str(key_file))
    assert VerifierKey.parse(derived.stdout) == public.for_log("acme")
    unsigned = cli("integrity", "sign")
    assert unsigned.returncode == 2
    assert "no signing key" in unsigned.stderr
    assert (
        cli("record", "incident.comment_added", "-w", "acme", "-m", '{"body": "x"}').returncode == 0
    )
    assert cli("integrity", "sign", AUDITCORE_SIGNING_KEY=str(key_file)).returncode == 0
    status = cli("integrity", "status")
    assert status.returncode == 0, status.stderr
    assert "acme" in status.stdout
    assert "follower at store position 1 of 1" in status.stdout
    bad_key = tmp_path / "bad.key"
    bad_key.write_text("not a key")
    broken = cli("integrity", "sign", AUDITCORE_SIGNING_KEY=str(bad_key))
    assert broken.returncode == 2
    assert "is not an auditcore signing key" in broken.stderr
