"""``auditcore erase`` and ``auditcore keys new-master|rotate-master``: erasure from the shell.

Failure semantics: a missing or wrong master key, or an erasure asked of a store without
encryption, is one line on stderr and exit 2 (``MasterKeyError``); an erasure whose read
models could not be re-projected here says why and exits 1 (run it again to finish it).
"""

from __future__ import annotations

import json
from typing import Annotated

import typer

from auditcore.cli_options import (
    ClickHouseOption,
    ClusterOption,
    EventStoreOption,
    cli_actor,
    console,
    errors,
    open_core,
)
from auditcore.clickhouse.connection import DEFAULT_CLICKHOUSE
from auditcore.lifecycle.master import (
    MASTER_KEY_ENV,
    MASTER_KEY_FILE_ENV,
    MasterKeyError,
    new_master_key,
)
from auditcore.store.settings import DEFAULT_EVENT_STORE


def erase(
    subject: Annotated[
        str, typer.Option("--subject", "-s", help="The subject's id (e.g. the actor's id).")
    ],
    workspace: Annotated[str, typer.Option("--workspace", "-w", help="Its workspace.")],
    event_store: EventStoreOption = DEFAULT_EVENT_STORE,
    clickhouse: ClickHouseOption = DEFAULT_CLICKHOUSE,
    cluster: ClusterOption = None,
) -> None:
    """Erase a subject's personal data (crypto-shredding): destroy its keys, record the
    erasure, re-project its events. Safe to run again: it finishes an interrupted erasure."""
    with open_core(event_store, clickhouse, cluster) as audit:
        done = audit.erase(workspace, subject, actor=cli_actor(), source="cli")
    summary = {
        "workspace_id": done.workspace_id,
        "subject_id": done.subject_id,
        "requested_at": done.requested_at.isoformat(),
        "keys_destroyed": done.keys_destroyed,
        "event_id": str(done.event_id),
        "streams_reprojected": done.streams if done.finished else 0,
        "finished": done.finished,
    }
    console.out(json.dumps(summary), highlight=False)
    if not done.finished:
        errors.print(
            f"[yellow]keys destroyed and the erasure recorded, but the read models were not "
            f"re-projected: {done.unfinished_because}. Run this again to finish.[/yellow]",
            highlight=False,
        )
        raise typer.Exit(code=1)


def new_master() -> None:
    """Print a new random master key (base64): keep it in a file of mode 600, outside the
    database and its backups, and point AUDITCORE_MASTER_KEY_FILE at it."""
    console.out(new_master_key(), highlight=False)


def rotate_master(event_store: EventStoreOption = DEFAULT_EVENT_STORE) -> None:
    """Re-wrap every subject key with the first master key listed (the new one); older keys
    listed after it are then no longer needed."""
    with open_core(event_store) as audit:
        if audit.subject_keys is None:
            raise MasterKeyError(
                f"no master key set: set {MASTER_KEY_FILE_ENV} (or {MASTER_KEY_ENV}) to the new "
                "key first, then the old one, one per line"
            )
        count = audit.subject_keys.rotate_master()
        current = audit.subject_keys.masters.current_id
    console.print(f"Re-wrapped {count} subject key(s) with master key {current}.")
