"""The errors auditcore raises: each says what went wrong, where, and how to fix it."""

from __future__ import annotations

from uuid import UUID


class AuditcoreError(Exception):
    """Base class of every error auditcore raises on purpose."""


class ConfigurationError(AuditcoreError, ValueError):
    """A setting is missing or malformed."""


class InvalidEventError(AuditcoreError, ValueError):
    """An event was rejected before anything was stored.

    ``problems`` holds one ``(location, message)`` pair per problem, e.g.
    ``("metadata.severity", "Input should be 'sev1', 'sev2', 'sev3' or 'sev4'")``.
    """

    def __init__(self, action: str, problems: list[tuple[str, str]]) -> None:
        self.action = action
        self.problems = problems
        lines = "\n".join(f"  - {location}: {message}" for location, message in problems)
        noun = "problem" if len(problems) == 1 else "problems"
        super().__init__(f"invalid event {action!r} ({len(problems)} {noun}):\n{lines}")


class UnknownActionError(InvalidEventError):
    """The action is not in the actions registry."""

    def __init__(self, action: str, suggestions: list[str]) -> None:
        hint = f"; did you mean {' or '.join(map(repr, suggestions))}?" if suggestions else "."
        super().__init__(
            action,
            [
                (
                    "action",
                    f"{action!r} is not a registered action{hint} "
                    "Register its metadata schema first: `auditcore actions register NAME "
                    "--schema FILE`, POST /v1/actions/NAME/schemas (an admin key), or "
                    "ActionRegistry.register() in Python.",
                )
            ],
        )


class DomainRuleError(AuditcoreError):
    """A command broke an aggregate's rule; nothing was recorded."""


class NotFoundError(AuditcoreError, LookupError):
    """Nothing with the given id is visible to the caller."""


class StreamNotFoundError(NotFoundError):
    """No stream has the given id (in the given workspace)."""

    def __init__(self, stream_id: UUID, kind: str = "stream") -> None:
        self.stream_id = stream_id
        super().__init__(f"no {kind} with id {stream_id} exists in the event store")


class ConflictError(AuditcoreError):
    """Another writer changed a stream between our read and our write.

    Reload the aggregate and run the command again (``AuditCore.update`` does this).
    """

    def __init__(self, streams: list[tuple[UUID, int]]) -> None:
        self.streams = streams
        described = ", ".join(f"{stream_id} at version {version}" for stream_id, version in streams)
        super().__init__(
            f"concurrent modification: another writer already recorded {described}; "
            "nothing from this save was stored. Reload the aggregate and retry the command "
            "(AuditCore.update retries automatically)."
        )


class EventIdReusedError(AuditcoreError):
    """An ``event_id`` (idempotency key) was reused for a different event."""

    def __init__(self, event_id: UUID, detail: str) -> None:
        self.event_id = event_id
        super().__init__(
            f"event_id {event_id} was already recorded for a different event ({detail}); "
            "an event_id may only be re-sent with the same content. Use a new event_id."
        )


class UnknownWorkspaceError(AuditcoreError, LookupError):
    """A workspace named at the command line holds no events and was never created."""


class InvalidQueryError(AuditcoreError, ValueError):
    """A read request has a bad parameter; ``parameter`` names it."""

    def __init__(self, parameter: str, message: str) -> None:
        self.parameter = parameter
        super().__init__(f"{parameter}: {message}")


class NotEntitledError(AuditcoreError, PermissionError):
    """The caller may not read this read model."""

    def __init__(self, read_model: str, entitlement: str) -> None:
        self.read_model = read_model
        self.entitlement = entitlement
        super().__init__(f"reading {read_model!r} needs the {entitlement!r} entitlement")


class StoreMismatchError(ConfigurationError):
    """A read model was built from a different event store than the one configured."""


class UntrackedRowsError(ConfigurationError):
    """A read model's table cannot be continued: it is missing, or holds rows of unknown origin."""


class RefusedByReadModelError(AuditcoreError):
    """A read model refuses every event, good ones included: its definition or ClickHouse is
    at fault, so nothing is parked as a dead letter and the batch is retried."""


class DefinitionChangedError(AuditcoreError):
    """A read model's declaration changed since its table was built: rebuild it."""

    def __init__(self, name: str, built: str, declared: str) -> None:
        self.name = name
        super().__init__(
            f"the read model {name!r} has changed since its table was built (definition "
            f"{built} there, {declared} now), so its rows would mix two definitions. Run "
            f"`auditcore projections rebuild {name}` to build the new version beside the live "
            "one and swap it in."
        )


class CatchUpFailedError(AuditcoreError):
    """One or more read models failed to catch up; the others did."""

    def __init__(self, done: dict[str, int], failed: dict[str, str]) -> None:
        self.done = done
        self.failed = failed
        lines = "\n".join(f"  - {name}: {error}" for name, error in failed.items())
        caught_up = [name for name in done if name not in failed]
        super().__init__(
            f"{len(failed)} read model(s) failed to catch up "
            f"(the others did: {', '.join(caught_up) or 'none'}):\n{lines}\n"
            "`auditcore projections status` shows each one's position and error."
        )


def one_line(error: BaseException) -> str:
    """An error's message on one line and at most 500 characters (a ClickHouse error quotes
    the statement, newlines and all): what a log line or a status field shows."""
    return " ".join(str(error).split())[:500]


class FollowedElsewhereError(AuditcoreError):
    """Another process follows the read model: only the holder of its lock writes its table."""

    def __init__(self, name: str, holder: str | None) -> None:
        self.name, self.holder = name, holder
        super().__init__(
            f"another process follows the read model {name} ({holder or 'its lock is held'}), "
            "and only the process holding its lock writes its table: stop that process (or "
            "run this where it runs) and try again. A rebuild stopped here resumes where it "
            "stopped."
        )


class OrphanInsertError(AuditcoreError):
    """A stopped writer's insert still runs on the server: a redo of its batch must wait."""
