"""Retention archives in every form: gzip JSON Lines or Parquet, in a local directory or an
S3-compatible bucket (moto's standalone server, started here, spoken to over real HTTP by
boto3). Each form: the prune verifies, the archive holds the events byte for byte, ``verify
--archive`` checks it on its own (a path or an ``s3://`` URL), a restore equals the original;
an edited row, a dropped row or a swapped checkpoint is caught; and an upload that stops
between the object and its manifest deletes nothing."""

from __future__ import annotations

import os
import socket
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from moto.server import ThreadedMotoServer

from auditcore import AuditCore, Settings
from auditcore.lifecycle import locations
from auditcore.lifecycle.archive import ArchiveError, check_archive
from auditcore.lifecycle.formats import PARQUET_HEADER_KEY
from auditcore.lifecycle.locations import ArchiveUnreachableError, fetched, s3_client, split_s3
from auditcore.lifecycle.restore import restore_archive
from auditcore.lifecycle.retention import Retention
from tests.cli_run import AUDITCORE
from tests.integrity_support import Store, make_store
from tests.test_retention import ALICE, LATER, Row, archived_rows, record, stored_rows

pytestmark = pytest.mark.store_only

BUCKET = "audit-archives"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    """A real S3-compatible HTTP server on a free port, for this module."""
    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


@pytest.fixture
def s3(s3_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> Any:
    """boto3 (and the CLI run from here) pointed at the server; a fresh bucket."""
    monkeypatch.setenv("AUDITCORE_S3_ENDPOINT", s3_endpoint)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    client = s3_client()
    if BUCKET not in {b["Name"] for b in client.list_buckets()["Buckets"]}:
        client.create_bucket(Bucket=BUCKET)
    return client


@pytest.fixture
def store(pg_settings: Settings, tmp_path: Path) -> Store:
    made = make_store(pg_settings, tmp_path)
    with made.core() as audit:
        record(audit, "initech", 1)  # the store's first event (kept for good)
    return made


def _destination(kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> str:
    if kind == "local":
        return str(tmp_path / "archives")
    request.getfixturevalue("s3")
    return f"s3://{BUCKET}/{tmp_path.name}/archives"


def _prune(store: Store, destination: str, encoding: str) -> tuple[dict[str, list[Row]], str]:
    with store.core() as audit:
        retention = Retention(audit, destination, encoding)
        retention.set_policy("acme", 30, actor=ALICE, source="cli")
        record(audit, "acme", 5)
        record(audit, "globex", 2)
        audit.integrity.sign_now()
        before = {w: stored_rows(store, w) for w in ("acme", "globex")}
        report = retention.run(now=datetime.now(UTC) + LATER, batch_size=4)
        retention.close()
    [acme] = [w for w in report.workspaces if w.workspace_id == "acme"]
    [location] = acme.archives
    return before, location


def _verify_cli(location: str, store: Store) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [AUDITCORE, "verify", "--archive", location, "--public-key",
         str(store.integrity.signing_key)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip


@pytest.mark.parametrize("kind", ["local", "s3"])
@pytest.mark.parametrize("encoding", ["jsonl", "parquet"])
def test_every_form_prunes_verifies_and_restores(
    store: Store, tmp_path: Path, request: pytest.FixtureRequest, kind: str, encoding: str
) -> None:
    before, location = _prune(store, _destination(kind, tmp_path, request), encoding)
    suffix = ".parquet" if encoding == "parquet" else ".jsonl.gz"
    assert location.endswith(suffix)
    assert location.startswith("s3://") == (kind == "s3")
    with fetched(location) as path:
        assert archived_rows(path) == before["acme"]  # byte for byte, in log order
    assert [r[2] for r in stored_rows(store, "acme")] == ["auditcore.retention.pruned"]
    assert stored_rows(store, "globex") == before["globex"]
    with store.core() as audit:
        retention = Retention(audit)
        report = audit.integrity.verify(pruned=retention.pruned_ranges())
        retention.check_archives(report, audit.integrity.trusted_keys())
        retention.close()
    assert report.ok, [p.describe() for p in report.problems]
    assert not report.warnings  # the archive was reached and checked
    assert report.workspaces["acme"].pruned == 16
    checked = _verify_cli(location, store)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert checked.stdout.startswith("OK: 16 events")
    target = tmp_path / "investigation.sqlite"
    restored = subprocess.run(
        [AUDITCORE, "archive", "restore", location, "--into", str(target), "--public-key",
         str(store.integrity.signing_key)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert restored.returncode == 0, restored.stdout + restored.stderr
    with AuditCore(Settings(str(target))) as investigation:
        again = restore_archive_from(location, investigation, store)
        rows = [
            (str(e.originator_id), e.originator_version, e.topic, bytes(e.state))
            for e in investigation.app.recorder.select_notifications(1, 1000)
        ]
    assert again == (0, 16)  # a rerun restores nothing twice
    assert rows == before["acme"]


def restore_archive_from(location: str, target: AuditCore, store: Store) -> tuple[int, int]:
    with fetched(location) as path:
        report = restore_archive(path, target, [store.key.verifier()])
    return report.restored, report.already_there


# Tampering, in each form. Each change returns the archive's new bytes.


def _parquet_table(data: bytes, tmp_path: Path) -> pa.Table:
    path = tmp_path / "read.parquet"
    path.write_bytes(data)
    return pq.read_table(path)


def _parquet_bytes(table: pa.Table, tmp_path: Path) -> bytes:
    path = tmp_path / "written.parquet"
    pq.write_table(table, path)
    return path.read_bytes()


def _edit_row(table: pa.Table) -> pa.Table:
    states = table.column("state").to_pylist()
    word = "Ελληνικά".encode()
    at = next(n for n, state in enumerate(states) if word in state)
    states[at] = states[at].replace(word, "Ελληνικα".encode())
    return table.set_column(4, "state", pa.array(states, pa.binary()))


def _drop_row(table: pa.Table) -> pa.Table:
    return pa.concat_tables([table.slice(0, 5), table.slice(6)])


def _swap_checkpoint(other: str) -> Any:
    def change(table: pa.Table) -> pa.Table:
        metadata = dict(table.schema.metadata)
        header = orjson.loads(metadata[PARQUET_HEADER_KEY])
        header["checkpoint"] = other
        metadata[PARQUET_HEADER_KEY] = orjson.dumps(header)
        return table.replace_schema_metadata(metadata)

    return change


def _other_checkpoint(store: Store) -> str:
    """A genuine checkpoint signed by the same key: a later one of acme's own log."""
    with store.core() as audit:
        record(audit, "acme", 1)
        audit.integrity.sign_now()
        latest = audit.integrity.latest_checkpoint("acme")
    assert latest is not None
    return latest.note


@pytest.mark.parametrize("change", ["edit", "drop", "checkpoint"])
@pytest.mark.parametrize("kind", ["local", "s3"])
def test_a_tampered_parquet_archive_is_detected(
    store: Store, tmp_path: Path, request: pytest.FixtureRequest, kind: str, change: str
) -> None:
    _, location = _prune(store, _destination(kind, tmp_path, request), "parquet")
    with fetched(location) as path:
        table = _parquet_table(path.read_bytes(), tmp_path)
    assert table.schema.metadata[PARQUET_HEADER_KEY]  # the header travels in the metadata
    changes = {"edit": _edit_row, "drop": _drop_row}
    changed = (changes.get(change) or _swap_checkpoint(_other_checkpoint(store)))(table)
    _replace(location, _parquet_bytes(changed, tmp_path), request)
    with pytest.raises(ArchiveError), fetched(location) as path:
        check_archive(path, [store.key.verifier()])
    result = _verify_cli(location, store)
    assert result.returncode == 1, result.stdout + result.stderr
    assert result.stdout.startswith("TAMPERED")
    assert "Traceback" not in result.stderr
    with store.core() as audit:  # the store's own verify relies on it, and says so
        retention = Retention(audit)
        report = audit.integrity.verify(pruned=retention.pruned_ranges())
        retention.check_archives(report, [store.key.verifier()])
        retention.close()
    assert [p.kind for p in report.problems] == ["archive"]


@pytest.mark.parametrize("change", ["edit", "drop", "checkpoint"])
def test_a_tampered_jsonl_archive_in_a_bucket_is_detected(
    store: Store, tmp_path: Path, request: pytest.FixtureRequest, change: str
) -> None:
    """The attacker can write the bucket: they replace the object and its manifest too."""
    import gzip  # noqa: PLC0415

    _, location = _prune(store, _destination("s3", tmp_path, request), "jsonl")
    with fetched(location) as path:
        lines = gzip.decompress(path.read_bytes()).splitlines(keepends=True)
    if change == "edit":
        at = next(n for n, line in enumerate(lines) if "Ελληνικά".encode() in line)
        lines[at] = lines[at].replace("Ελληνικά".encode(), "Ελληνικα".encode())
    elif change == "drop":
        lines = [*lines[:5], *lines[6:]]
    else:
        header = orjson.loads(lines[0])
        header["checkpoint"] = _other_checkpoint(store)
        lines[0] = orjson.dumps(header) + b"\n"
    _replace(location, gzip.compress(b"".join(lines)), request)
    result = _verify_cli(location, store)
    assert result.returncode == 1, result.stdout + result.stderr
    assert result.stdout.startswith("TAMPERED")


def _replace(location: str, data: bytes, request: pytest.FixtureRequest) -> None:
    """Overwrite the archive; in a bucket, its manifest's SHA-256 too (as an attacker would)."""
    if not location.startswith("s3://"):
        Path(location).write_bytes(data)
        return
    import hashlib  # noqa: PLC0415

    client = request.getfixturevalue("s3")
    bucket, key = split_s3(location)
    client.put_object(Bucket=bucket, Key=key, Body=data)
    manifest = orjson.loads(
        client.get_object(Bucket=bucket, Key=key + ".manifest.json")["Body"].read()
    )
    manifest["sha256"] = hashlib.sha256(data).hexdigest()
    client.put_object(Bucket=bucket, Key=key + ".manifest.json", Body=orjson.dumps(manifest))


def test_an_object_replaced_without_its_manifest_is_caught(
    store: Store, tmp_path: Path, request: pytest.FixtureRequest, s3: Any
) -> None:
    _, location = _prune(store, _destination("s3", tmp_path, request), "parquet")
    bucket, key = split_s3(location)
    s3.put_object(Bucket=bucket, Key=key, Body=b"PAR1 not really")
    with pytest.raises(ArchiveError, match="manifest"), fetched(location):
        pass
    result = _verify_cli(location, store)
    assert result.returncode == 1, result.stdout + result.stderr


class _StopBeforeManifestError(Exception):
    pass


def test_a_crash_between_object_and_manifest_deletes_nothing(
    store: Store,
    tmp_path: Path,
    request: pytest.FixtureRequest,
    s3: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The object is uploaded, then the process stops before the manifest: no archive row,
    nothing deleted, the object alone is not an archive; the next run uploads both and
    prunes."""
    destination = _destination("s3", tmp_path, request)
    real = locations.s3_client

    def failing_client() -> Any:
        client = real()
        put = client.put_object

        def put_object(**arguments: Any) -> Any:
            if arguments["Key"].endswith(".manifest.json"):
                raise _StopBeforeManifestError
            return put(**arguments)

        client.put_object = put_object
        return client

    monkeypatch.setattr(locations, "s3_client", failing_client)
    with store.core() as audit:
        retention = Retention(audit, destination, "parquet")
        retention.set_policy("acme", 30, actor=ALICE, source="cli")
        record(audit, "acme", 3)
        audit.integrity.sign_now()
        before = stored_rows(store, "acme")
        with pytest.raises(_StopBeforeManifestError):
            retention.run(now=datetime.now(UTC) + LATER, batch_size=2)
        assert retention.archives("acme") == []
        retention.close()
    assert stored_rows(store, "acme") == before  # nothing deleted
    bucket, prefix = split_s3(destination)
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket, Prefix=prefix)["Contents"]]
    [orphan] = keys  # the object, without its manifest
    with (
        pytest.raises(ArchiveUnreachableError, match="no manifest"),
        fetched(f"s3://{bucket}/{orphan}"),
    ):
        pass
    monkeypatch.setattr(locations, "s3_client", real)
    with store.core() as audit:
        retention = Retention(audit, destination, "parquet")
        report = retention.run(now=datetime.now(UTC) + LATER, batch_size=2)
        verified = audit.integrity.verify(pruned=retention.pruned_ranges())
        retention.check_archives(verified, audit.integrity.trusted_keys())
        retention.close()
    assert verified.ok, [p.describe() for p in verified.problems]
    assert not verified.warnings, verified.warnings
    [location] = [a for w in report.workspaces for a in w.archives if "acme" in a]
    assert location == f"s3://{bucket}/{orphan}"  # the same key, now complete
    with fetched(location) as path:
        assert archived_rows(path) == before


def test_bad_archive_locations_are_one_line_errors(tmp_path: Path, s3: Any) -> None:
    cases = [
        ["verify", "--archive", f"s3://{BUCKET}/nothing/here.parquet"],
        ["verify", "--archive", "s3://"],
        ["verify", "--archive", str(tmp_path / "none.parquet")],
        ["retention", "run", "--archive-dir", str(tmp_path), "--archive-format", "csv",
         "--event-store", str(tmp_path / "e.sqlite")],
    ]  # fmt: skip
    for arguments in cases:
        result = subprocess.run(
            [AUDITCORE, *arguments], capture_output=True, text=True, check=False,
            env=os.environ.copy(),
        )  # fmt: skip
        assert result.returncode == 2, (arguments, result.stdout, result.stderr)
        assert "Traceback" not in result.stderr, arguments
        assert result.stderr.startswith("error:"), (arguments, result.stderr)
