"""Log streams: events/s delivered to each destination (a local receiver), and the end-to-end
lag (recorded → received) under a steady 1,000 events/s, beside the plain read of the log
(the ceiling: what a stream costs before it formats or sends anything) in the same run.

Each destination is one entry of ``THROUGHPUT`` (name → a function that starts a receiver and
returns the stream's settings and a way to count what arrived); add brokers there."""

from __future__ import annotations

import base64
import secrets
import statistics
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import orjson
from rich.table import Table

from auditcore import AuditCore, Settings
from auditcore.projection.log import LogReader
from auditcore.streams.config import StreamConfigs, StreamSpec, stream_configs
from auditcore.streams.streamer import StreamFollower
from benchmarks.common import (
    bench_registry,
    console,
    fresh_database,
    realistic_drafts,
    save_results,
)

SIGNING_KEY = "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()
LONG_AGO = datetime(2000, 1, 1, tzinfo=UTC)


class Arrivals:
    """What a receiver got: event count, and each event's arrival time by its id."""

    def __init__(self) -> None:
        self.count = 0
        self.at: dict[str, float] = {}
        self.lock = threading.Lock()

    def add(self, events: list[dict[str, Any]], track: bool) -> None:
        now = time.time()
        with self.lock:
            self.count += len(events)
            if track:
                for event in events:
                    self.at.setdefault(event["event"]["event_id"], now)


@contextmanager
def webhook_receiver(track: bool) -> Iterator[tuple[dict[str, Any], Arrivals]]:
    """A plain HTTP receiver on 127.0.0.1 answering 200 (signatures are checked by the
    tests; here only the sender is measured)."""
    arrivals = Arrivals()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["content-length"]))
            arrivals.add(orjson.loads(body)["events"], track)
            self.send_response(200)
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, *_: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/hook"
    try:
        yield {"kind": "webhook", "settings": {"url": url, "secret": SIGNING_KEY}}, arrivals
    finally:
        server.shutdown()
        server.server_close()


THROUGHPUT: dict[str, Callable[[bool], Any]] = {"webhook": webhook_receiver}


def plain_read(audit: AuditCore) -> tuple[int, float]:
    """Every event read and decoded, nothing else: the ceiling."""
    reader = LogReader(audit.app)
    started = time.perf_counter()
    position = count = 0
    while batch := reader.after(position, 1_000):
        for event in batch:
            orjson.loads(event.state)
        count += len(batch)
        position = batch[-1].position
    return count, time.perf_counter() - started


def deliver(
    audit: AuditCore, configs: StreamConfigs, name: str, target: dict[str, Any], start: Any
) -> tuple[str, threading.Event, threading.Thread]:
    head = audit.app.recorder.max_notification_id() or 0
    info = configs.add("ws0", StreamSpec(name=name, start=start, **target), head)
    stop = threading.Event()
    follower = StreamFollower(audit.app, configs, audit.read_models.get("audit_events"), info.id)
    thread = threading.Thread(target=follower.run, args=(stop,), daemon=True)
    thread.start()
    return info.id, stop, thread


def throughput(audit: AuditCore, configs: StreamConfigs, kind: str, events: int) -> float:
    with THROUGHPUT[kind](False) as (target, arrivals):
        started = time.perf_counter()
        _, stop, thread = deliver(audit, configs, f"{kind}-throughput", target, LONG_AGO)
        deadline = time.monotonic() + 600
        while arrivals.count < events and time.monotonic() < deadline:
            time.sleep(0.01)
        elapsed = time.perf_counter() - started
        stop.set()
        thread.join(timeout=30)
    return arrivals.count / elapsed


def steady_lag(
    audit: AuditCore, configs: StreamConfigs, seconds: float, rate: int = 1_000
) -> list[float]:
    """Record ``rate`` events a second (in tenths) for ``seconds``; each event's lag from its
    recorded_at to its arrival at the webhook receiver (default batching bounds)."""
    recorded: dict[str, float] = {}
    drafts = realistic_drafts(int(seconds * rate) + rate, seed=7, workspaces=1)
    with webhook_receiver(True) as (target, arrivals):
        _, stop, thread = deliver(audit, configs, "webhook-lag", target, None)
        time.sleep(0.5)  # the stream is following
        started = time.monotonic()
        tick = 0
        while time.monotonic() - started < seconds:
            chunk = [draft for _, draft in zip(range(rate // 10), drafts, strict=False)]
            for event in audit.record_many(chunk):
                assert event.recorded_at is not None
                recorded[str(event.event_id)] = event.recorded_at.timestamp()
            tick += 1
            time.sleep(max(0.0, tick / 10 - (time.monotonic() - started)))
        deadline = time.monotonic() + 30
        while len(arrivals.at) < len(recorded) and time.monotonic() < deadline:
            time.sleep(0.05)
        stop.set()
        thread.join(timeout=30)
    return [arrivals.at[i] - at for i, at in recorded.items() if i in arrivals.at]


def run(events: int, lag_seconds: float) -> None:
    console.rule(f"streams: {events:,} events of one workspace, lag at 1,000 events/s")
    with (
        fresh_database("bench_streams") as url,
        AuditCore(Settings(url), registry=bench_registry()) as audit,
    ):
        for start in range(0, events, 5_000):
            count = min(5_000, events - start)
            audit.record_many(realistic_drafts(count, seed=start + 1, workspaces=1))
        configs = stream_configs(audit)
        try:
            read, read_seconds = plain_read(audit)
            ceiling = read / read_seconds
            rates = {kind: throughput(audit, configs, kind, events) for kind in THROUGHPUT}
            lags = sorted(steady_lag(audit, configs, lag_seconds))
        finally:
            configs.close()
    p50 = statistics.median(lags) if lags else float("nan")
    p99 = lags[min(len(lags) - 1, int(len(lags) * 0.99))] if lags else float("nan")
    table = Table(title="log streams", title_justify="left")
    for column in ("measure", "value", "vs. plain read"):
        table.add_column(column)
    table.add_row("plain read of the log (ceiling)", f"{ceiling:,.0f} events/s", "1.00")
    for kind, rate in rates.items():
        table.add_row(f"{kind}: delivered", f"{rate:,.0f} events/s", f"{rate / ceiling:.2f}")
    table.add_row("lag p50 at 1,000 events/s", f"{p50:.3f} s", "")
    table.add_row("lag p99 at 1,000 events/s", f"{p99:.3f} s", "")
    console.print(table)
    save_results(
        f"streams_{events}",
        {
            "events": events,
            "plain_read_events_per_second": ceiling,
            "delivered_events_per_second": rates,
            "lag_seconds": {"p50": p50, "p99": p99, "samples": len(lags)},
        },
    )
