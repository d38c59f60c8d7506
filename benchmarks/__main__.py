"""python -m benchmarks [--quick] [--only NAME ...]: run the benchmark suite."""

from __future__ import annotations

import argparse

from benchmarks import (
    api,
    append,
    catchup,
    cli,
    encryption,
    export,
    integrity,
    live,
    neighbours,
    queries,
    retention,
    server,
    streams,
    streams_destinations,
)
from benchmarks.common import console, machine

WORKLOADS = {
    "api": {
        "quick": lambda: api.run(events=5_000, seconds=2),
        "full": lambda: api.run(events=100_000, seconds=10),
    },
    "append": {
        "quick": lambda: append.run(single=1_000, batched=20_000, dispatched=20_000, repeats=1),
        "full": lambda: append.run(single=10_000, batched=200_000, dispatched=500_000, repeats=3),
    },
    "validation": {
        "quick": lambda: (
            append.metadata_only(count=5_000, repeats=1),
            append.run_validation(count=5_000, repeats=1),
        ),
        "full": lambda: (
            append.metadata_only(count=200_000, repeats=3),
            append.run_validation(count=200_000, repeats=3),
        ),
    },
    "live": {
        "quick": lambda: live.run(events=20_000, samples=30),
        "full": lambda: live.run(events=1_000_000, samples=300),
    },
    "queries": {
        "quick": lambda: queries.run(20_000),
        "full": lambda: (queries.run(1_000_000), queries.run(10_000_000)),
    },
    "export": {
        "quick": lambda: export.run(20_000),
        "full": lambda: export.run(1_000_000),
    },
    "neighbours": {
        "quick": lambda: neighbours.run(events=10_000, seconds=4),
        "full": lambda: neighbours.run(events=200_000, seconds=30, compare_unlimited=True),
    },
    "encryption": {
        "quick": lambda: encryption.run(single=200, dispatched=2_000, repeats=1),
        "full": lambda: encryption.run(single=1_000, dispatched=10_000, repeats=3),
    },
    "integrity": {
        "quick": lambda: integrity.run(events=20_000),
        "full": lambda: integrity.run(events=1_000_000),
    },
    "server": {
        "quick": lambda: server.run(catch_up_events=20_000, query_events=20_000),
        "full": lambda: server.run(catch_up_events=1_000_000, query_events=1_000_000),
    },
    "retention": {
        "quick": lambda: retention.run(events=20_000, alone_seconds=3),
        "full": lambda: retention.run(events=1_000_000),
    },
    "cli": {
        "quick": lambda: cli.run(runs=1),
        "full": lambda: cli.run(runs=5),
    },
    "streams": {
        "quick": lambda: streams.run(events=2_000, lag_seconds=2),
        "full": lambda: streams.run(events=200_000, lag_seconds=30),
    },
    "catchup": {
        "quick": lambda: catchup.run(events=50_000, library_slice=2_000),
        "full": lambda: catchup.run(events=1_000_000, library_slice=20_000),
    },
    "streams-destinations": {
        "quick": lambda: streams_destinations.run(events=5_000),
        "full": lambda: streams_destinations.run(events=200_000),
    },
}


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small N, for a CI smoke run")
    parser.add_argument("--only", nargs="*", choices=sorted(WORKLOADS), help="workloads to run")
    args = parser.parse_args()
    console.print(f"machine: {machine()}")
    for name in args.only or sorted(WORKLOADS):
        WORKLOADS[name]["quick" if args.quick else "full"]()


if __name__ == "__main__":
    main()
