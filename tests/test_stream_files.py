"""The files destination, in a local directory and in an S3 bucket served by moto's S3 server
over real HTTP: one gzipped JSON Lines object per batch plus its manifest, named by workspace,
time and batch id; a retried batch leaves one object (same name, same bytes); writes are
atomic (a write the kernel cuts short, by a file-size limit as by a full disk, leaves no
partial object under its final name and no manifest); faults are classified retryable or
not."""

from __future__ import annotations

import gzip
import hashlib
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import orjson
import pytest
from moto.server import ThreadedMotoServer

from auditcore.streams.base import DeliveryError
from auditcore.streams.destinations.files import (
    MANIFEST_SUFFIX,
    OBJECT_SUFFIX,
    FilesDestination,
    FilesSettings,
    object_name,
)
from tests.stream_receivers import HOSTILE, make_batch, refused_port, silent_port

SECRET = "s3-secret-key-9f8e7d-SECRET"
KEY_ID = "AKIAAUDITCORETEST"


def files_in(root: Path) -> list[str]:
    return sorted(str(path.relative_to(root)) for path in root.rglob("*") if path.is_file())


def read_object(data: bytes) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in gzip.decompress(data).splitlines()]


def test_a_batch_becomes_one_object_and_its_manifest(tmp_path: Path) -> None:
    batch = make_batch(range(41, 141), workspace_id="acme:eu", batch_id="b-41-140")
    destination = FilesDestination(FilesSettings(directory=str(tmp_path), prefix="audit/"))
    destination.deliver(batch)
    name = "audit/acme:eu/2026/03/04/20260304T050607Z-b-41-140"
    assert files_in(tmp_path) == [name + OBJECT_SUFFIX, name + MANIFEST_SUFFIX]
    data = (tmp_path / (name + OBJECT_SUFFIX)).read_bytes()
    lines = read_object(data)
    assert [line["position"] for line in lines] == list(range(41, 141))
    assert lines[0] == {
        "delivery_id": "stream-1:41",
        "position": 41,
        "workspace_id": "acme:eu",
        "occurred_at": batch.events[0].occurred_at.isoformat(),
        "payload": batch.events[0].payload,
    }
    assert lines[0]["payload"]["text"] == HOSTILE
    assert orjson.loads((tmp_path / (name + MANIFEST_SUFFIX)).read_bytes()) == {
        "name": name.removeprefix("audit/") + OBJECT_SUFFIX,
        "batch_id": "b-41-140",
        "stream_id": "stream-1",
        "workspace_id": "acme:eu",
        "first_position": 41,
        "last_position": 140,
        "count": 100,
        "sha256": hashlib.sha256(data).hexdigest(),
    }


def test_a_retried_batch_rewrites_the_same_object(tmp_path: Path) -> None:
    destination = FilesDestination(FilesSettings(directory=str(tmp_path)))
    batch = make_batch(range(1, 51))
    destination.deliver(batch)
    first = {name: (tmp_path / name).read_bytes() for name in files_in(tmp_path)}
    time.sleep(1.1)  # a name or a gzip header carrying the wall clock would differ now
    destination.deliver(batch)
    FilesDestination(FilesSettings(directory=str(tmp_path))).deliver(batch)  # after a restart
    assert {name: (tmp_path / name).read_bytes() for name in files_in(tmp_path)} == first
    assert len(first) == 2


def test_batches_rotate_into_objects_by_workspace_and_time(tmp_path: Path) -> None:
    destination = FilesDestination(FilesSettings(directory=str(tmp_path)))
    destination.deliver(make_batch(range(1, 11)))
    destination.deliver(make_batch(range(11, 21)))
    destination.deliver(make_batch(range(1, 6), workspace_id="other", stream_id="s2"))
    objects = [name for name in files_in(tmp_path) if name.endswith(OBJECT_SUFFIX)]
    assert len(objects) == 3
    assert sum(name.startswith("acme/2026/03/04/") for name in objects) == 2
    assert sum(name.startswith("other/2026/03/04/") for name in objects) == 1


def test_an_unsafe_batch_id_is_hashed_into_the_name() -> None:
    batch = make_batch(range(1, 3), batch_id="../../etc/passwd\u0000 東京")
    name = object_name(batch)
    assert ".." not in name
    assert name.count("/") == 4
    assert name.endswith(OBJECT_SUFFIX)


def test_settings_need_exactly_one_place() -> None:
    with pytest.raises(ValueError, match="exactly one"):
        FilesSettings()
    with pytest.raises(ValueError, match="exactly one"):
        FilesSettings(directory="/tmp", bucket="bkt")  # noqa: S108
    with pytest.raises(ValueError, match="pattern"):
        FilesSettings(directory="/tmp", prefix="../escape/")  # noqa: S108
    assert SECRET not in repr(FilesSettings(bucket="bkt", secret_access_key=SECRET))


def test_a_directory_that_cannot_be_one_is_not_retryable(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    destination = FilesDestination(FilesSettings(directory=str(blocker / "below")))
    with pytest.raises(DeliveryError) as raised:
        destination.deliver(make_batch(range(1, 3)))
    assert not raised.value.retryable


WRITER = textwrap.dedent(
    """
    import base64, os, resource, signal, sys
    from dataclasses import replace
    from auditcore.streams.base import DeliveryError
    from auditcore.streams.destinations.files import FilesDestination, FilesSettings
    from tests.stream_receivers import make_batch

    # Files may not grow past 64 KiB: a bigger write stops part way (EFBIG), as on a full disk.
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (64 * 1024, 64 * 1024))
    destination = FilesDestination(FilesSettings(directory=sys.argv[1]))
    destination.deliver(make_batch(range(1, 11), batch_id="small"))
    big = make_batch(range(11, 111), batch_id="big")
    # Incompressible payloads: the object is about 400 KiB.
    big = replace(big, events=[
        replace(event, payload={"noise": base64.b64encode(os.urandom(3000)).decode()})
        for event in big.events
    ])
    try:
        destination.deliver(big)
    except DeliveryError as error:
        print("refused", error.retryable, flush=True)
    """
)


def test_a_write_cut_short_leaves_no_object_and_no_manifest(tmp_path: Path) -> None:
    written = subprocess.run(
        [sys.executable, "-c", WRITER, str(tmp_path)],
        capture_output=True,
        cwd=Path(__file__).parent.parent,
        timeout=120,
        check=True,
    )
    assert written.stdout == b"refused True\n"
    names = files_in(tmp_path)
    finals = [name for name in names if not Path(name).name.startswith(".")]
    assert len(finals) == 2
    assert all("-small." in name for name in finals)
    manifest_name = next(name for name in finals if name.endswith(MANIFEST_SUFFIX))
    entry = orjson.loads((tmp_path / manifest_name).read_bytes())
    data = (tmp_path / entry["name"]).read_bytes()
    assert hashlib.sha256(data).hexdigest() == entry["sha256"]
    assert len(read_object(data)) == entry["count"] == 10
    # The cut write left at most a temporary file, which a later write does not mind.
    assert len(names) - len(finals) <= 1
    destination = FilesDestination(FilesSettings(directory=str(tmp_path)))
    destination.deliver(make_batch(range(11, 111), batch_id="big"))
    assert len([name for name in files_in(tmp_path) if "-big." in name]) >= 2


# --- S3 (moto's S3 server over real HTTP) ----------------------------------------------------


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    port = refused_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


def s3_client(endpoint: str) -> Any:
    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id=KEY_ID,
        aws_secret_access_key=SECRET,
    )


@pytest.fixture
def bucket(s3_endpoint: str, request: pytest.FixtureRequest) -> str:
    name = f"auditcore-{abs(hash(request.node.name)) % 10**10}"
    s3_client(s3_endpoint).create_bucket(Bucket=name)
    return name


def s3_destination(endpoint: str, bucket: str, **settings: Any) -> FilesDestination:
    return FilesDestination(
        FilesSettings.model_validate(
            {
                "bucket": bucket,
                "endpoint_url": endpoint,
                "region": "us-east-1",
                "access_key_id": KEY_ID,
                "secret_access_key": SECRET,
                "timeout_seconds": 2.0,
            }
            | settings
        )
    )


def s3_objects(endpoint: str, bucket: str) -> dict[str, bytes]:
    client = s3_client(endpoint)
    listed = client.list_objects_v2(Bucket=bucket).get("Contents", [])
    return {
        item["Key"]: client.get_object(Bucket=bucket, Key=item["Key"])["Body"].read()
        for item in listed
    }


def test_s3_holds_the_object_and_its_manifest_once_per_batch(s3_endpoint: str, bucket: str) -> None:
    destination = s3_destination(s3_endpoint, bucket, prefix="streams/")
    batch = make_batch(range(1, 201), batch_id="b1")
    destination.deliver(batch)
    destination.deliver(batch)  # retried: the same key, the same bytes
    destination.deliver(make_batch(range(201, 251), batch_id="b2"))
    destination.close()
    stored = s3_objects(s3_endpoint, bucket)
    assert len(stored) == 4
    name = "streams/acme/2026/03/04/20260304T050607Z-b1"
    data = stored[name + OBJECT_SUFFIX]
    assert [line["position"] for line in read_object(data)] == list(range(1, 201))
    entry = orjson.loads(stored[name + MANIFEST_SUFFIX])
    assert entry["sha256"] == hashlib.sha256(data).hexdigest()
    assert (entry["first_position"], entry["last_position"], entry["count"]) == (1, 200, 200)


def test_s3_missing_bucket_is_not_retryable(s3_endpoint: str) -> None:
    destination = s3_destination(s3_endpoint, "no-such-bucket-here")
    with pytest.raises(DeliveryError) as raised:
        destination.deliver(make_batch(range(1, 3)))
    assert not raised.value.retryable
    assert "NoSuchBucket" in str(raised.value)
    assert SECRET not in str(raised.value)


def test_s3_refused_connection_is_retryable_and_quotes_no_secret() -> None:
    destination = s3_destination(f"http://127.0.0.1:{refused_port()}", "bucket")
    with pytest.raises(DeliveryError) as raised:
        destination.deliver(make_batch(range(1, 3)))
    assert raised.value.retryable
    assert SECRET not in str(raised.value)
    assert KEY_ID not in str(raised.value)


def test_s3_silent_endpoint_times_out_retryably() -> None:
    with silent_port() as port:
        destination = s3_destination(f"http://127.0.0.1:{port}", "bucket", timeout_seconds=0.5)
        with pytest.raises(DeliveryError) as raised:
            destination.deliver(make_batch(range(1, 3)))
    assert raised.value.retryable
