"""``Integrity``: the tamper-evidence side of one event store, as the facade, CLI and API use
it — its Merkle logs, the follower's thread, proofs, exports and ``verify``."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping, Sequence
from functools import cached_property
from typing import Any
from uuid import UUID

from auditcore.errors import AuditcoreError
from auditcore.integrity.export import ProofExport, proof_export
from auditcore.integrity.follower import FollowerStatus, IntegrityFollower, follow_with_retries
from auditcore.integrity.log import IntegrityLog, StoredCheckpoint, integrity_log
from auditcore.integrity.note import SignerKey, VerifierKey
from auditcore.integrity.proofs import EventProof, consistency_proof, event_proof
from auditcore.integrity.publish import (
    CheckpointPublisher,
    DirectoryPublisher,
    published_notes,
)
from auditcore.integrity.settings import IntegritySettings
from auditcore.integrity.verify import OutsideCheckpoint, Verifier, VerifyReport
from auditcore.store.application import AuditApplication


class FollowerBusyError(AuditcoreError):
    """Another process's integrity follower holds the logs."""


class Integrity:
    def __init__(self, app: AuditApplication, settings: IntegritySettings) -> None:
        self.app = app
        self.settings = settings
        self.status = FollowerStatus()

    @cached_property
    def log(self) -> IntegrityLog:
        return integrity_log(self.app)

    @cached_property
    def signer(self) -> SignerKey | None:
        """The signing key (read once: a new key takes a restart, see key rotation)."""
        return self.settings.signer()

    @cached_property
    def log_key(self) -> str | None:
        """The signing key's verifier key, as published."""
        return self.signer.verifier().encode() if self.signer else None

    def publishers(self) -> list[CheckpointPublisher]:
        directory = self.settings.checkpoint_dir
        return [DirectoryPublisher(directory)] if directory else []

    def follower(self, **options: Any) -> IntegrityFollower:
        return IntegrityFollower(
            self.app,
            self.log,
            signer=self.signer,
            publishers=self.publishers(),
            checkpoint_interval=self.settings.checkpoint_interval,
            checkpoint_events=self.settings.checkpoint_events,
            **options,
        )

    def follow(self, stop: threading.Event) -> list[threading.Thread]:
        """Start the follower in a thread of its own (retrying after failures) until ``stop``."""
        _ = self.signer  # a bad key file is an error now, not in the thread
        thread = threading.Thread(
            target=follow_with_retries,
            args=(self.follower, stop, self.status),
            name="auditcore-integrity",
            daemon=True,
        )
        thread.start()
        return [thread]

    def sign_now(
        self, progress: Callable[[int], None] | None = None, *, wait: float = 10.0
    ) -> list[StoredCheckpoint]:
        """Catch the logs up and sign a checkpoint of every log that changed, now. Another
        follower holding the logs is waited for up to ``wait`` seconds."""
        follower = self.follower()
        lock = self.log.lock()
        deadline = time.monotonic() + wait
        while not lock.acquire():
            if time.monotonic() > deadline:
                lock.release()
                raise FollowerBusyError(
                    "another integrity follower (in `auditcore serve`, `project --follow` or "
                    "`integrity follow`) holds the logs and signs them every "
                    f"{self.settings.checkpoint_interval:g} s; stop it to sign now"
                )
            time.sleep(0.2)
        try:
            follower.resume()
            follower.catch_up(progress)
            return follower.checkpoint()
        finally:
            follower.close()
            lock.release()

    @cached_property
    def _configured_keys(self) -> list[VerifierKey]:
        return self.settings.trusted_keys()

    def trusted_keys(self, extra: Sequence[VerifierKey] = ()) -> list[VerifierKey]:
        return [*extra, *self._configured_keys]

    def event_proof(self, workspace_id: str, event_id: UUID) -> EventProof:
        return event_proof(self.log, workspace_id, event_id, self.trusted_keys())

    def consistency(self, workspace_id: str, old_size: int, new_size: int) -> dict[str, Any]:
        return consistency_proof(self.log, workspace_id, old_size, new_size)

    def latest_checkpoint(self, workspace_id: str) -> StoredCheckpoint | None:
        return self.log.latest_checkpoint(workspace_id)

    def export(
        self, workspace_id: str, from_size: int = 0, to_size: int | None = None
    ) -> ProofExport:
        return proof_export(self.log, workspace_id, from_size, to_size)

    def verify(
        self,
        *,
        workspace_id: str | None = None,
        keys: Sequence[VerifierKey] = (),
        outside: Sequence[OutsideCheckpoint] = (),
        progress: Callable[[int], None] | None = None,
        pruned: Mapping[str, Sequence[tuple[int, int]]] | None = None,
    ) -> VerifyReport:
        """Check the store against its logs and checkpoints (and the published ones);
        ``pruned``: log ranges archived by retention, whose events may be gone."""
        published = []
        if self.settings.checkpoint_dir is not None:
            published = [
                OutsideCheckpoint(str(path), note)
                for path, note in published_notes(self.settings.checkpoint_dir)
            ]
        return Verifier(
            self.app,
            self.log,
            self.trusted_keys(keys),
            workspace_id=workspace_id,
            outside=[*outside, *published],
            pruned=pruned,
        ).run(progress)

    def close(self) -> None:
        if "log" in self.__dict__:
            self.log.close()
