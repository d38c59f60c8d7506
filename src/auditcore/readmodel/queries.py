"""The read API: questions about one workspace's audit trail.

The route, decided here and nowhere else: point questions — ``get`` (one event by id) and
``history`` (one stream) — go to the event store through its indexes (``points``, which
``AuditCore.reader`` always gives: ``auditcore.store.points``), where they cost one indexed
lookup and see events the moment they are committed; every scan — filtered pages, counts,
rankings, free text, statistics, exports, current state — goes to ClickHouse. Both answer
with the same envelope (same JSON), scoped to the reader's workspace and behind the same
entitlement (``audit_events``). A reader built without ``points`` answers the point
questions from the ``audit_events`` read model instead (benchmarks and tests compare the two),
and so does a reader with fixed filters (a viewer session's): they narrow by the read model's
columns, which the store does not have.

A ``WorkspaceReader`` is bound to one workspace: every statement it runs starts with that
workspace's condition, and every value travels as a query parameter. It takes its client from
a provider at each query, on the thread running it (``auditcore.clickhouse.clients``), so one
reader may be used from any thread. ClickHouse's and the store's errors propagate.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal
from uuid import UUID

import orjson
from clickhouse_connect.driver.client import Client

from auditcore.clickhouse.connection import as_utc, query_dicts, settings_clause
from auditcore.errors import InvalidQueryError, NotEntitledError, NotFoundError
from auditcore.events.envelope import AuditEvent
from auditcore.readmodel.cursor import Cursor, query_fingerprint
from auditcore.readmodel.fields import floor_micros
from auditcore.readmodel.model import Filter, ReadModel, Row, StateTable
from auditcore.readmodel.registry import ReadModelRegistry
from auditcore.readmodel.text import fold, fold_sql, like_pattern, words
from auditcore.store.points import PointReads

MAX_LIMIT = 1000
EVENT_COLUMNS = (
    "event_id, workspace_id, stream_id, version, action, schema_version, actor_id, actor_type, "
    "actor_name, target_types, target_ids, target_names, source, occurred_at, recorded_at, ip, "
    "user_agent, request_id, api_key_id, metadata, actor_metadata, target_metadata, location"
)

_MAYBE_NOT_PROJECTED = (
    " (if it was recorded just now, it may not be projected yet: run `auditcore project`)"
)

Interval = Literal["minute", "hour", "day"]
GroupBy = Literal["action", "actor", "source"]
_GROUP_COLUMNS: dict[str, str] = {"action": "action", "actor": "actor_id", "source": "source"}


@dataclass(frozen=True)
class EventQuery:
    """Filters (by the read model's declared names; several values for one name mean any of
    them), a time range [since, until) on when events occurred and one [recorded_since,
    recorded_until) on when they were recorded (a backdated event occurred long before it was
    recorded), free text (every word must appear), and paging."""

    filters: Mapping[str, Sequence[str]] = field(default_factory=dict)
    since: datetime | None = None
    until: datetime | None = None
    text: str | None = None
    limit: int = 50
    cursor: str | None = None
    recorded_since: datetime | None = None
    recorded_until: datetime | None = None
    up_to_position: int | None = None
    """Only events at or before this store position: one fixed set of events (a snapshot)
    however many are projected meanwhile, for answers that must agree with each other."""


@dataclass(frozen=True)
class Page:
    items: list[AuditEvent]
    next_cursor: str | None


@dataclass(frozen=True)
class Ranked:
    key: str
    label: str
    events: int


TopBy = Literal["action", "actor", "target", "source"]
_TOP_KEYS: dict[str, tuple[str, str, str]] = {
    "action": ("action", "action", ""),
    "actor": ("actor_id", "if(actor_name = '', actor_id, actor_name)", ""),
    "target": (
        "concat(target.1, ':', target.2)",
        "concat(target.1, ': ', if(target.3 = '', target.2, target.3))",
        "ARRAY JOIN arrayZip(target_types, target_ids, target_names) AS target",
    ),
    "source": ("source", "source", ""),
}


@dataclass(frozen=True)
class StatsBucket:
    bucket: datetime
    key: str
    events: int


@dataclass(frozen=True)
class Stats:
    interval: Interval
    group_by: GroupBy
    since: datetime
    until: datetime
    buckets: list[StatsBucket]


class _Where:
    """Conditions and their parameters; always starts with the workspace."""

    def __init__(self, workspace_id: str) -> None:
        self.conditions = ["workspace_id = {workspace:String}"]
        self.parameters: dict[str, Any] = {"workspace": workspace_id}
        self.settings: dict[str, Any] = {}

    def add(self, condition: str, **parameters: Any) -> None:
        self.conditions.append(condition)
        self.parameters.update(parameters)

    def sql(self) -> str:
        return " AND ".join(f"({condition})" for condition in self.conditions)

    def copy(self) -> _Where:
        copied = _Where.__new__(_Where)
        copied.conditions = list(self.conditions)
        copied.parameters = dict(self.parameters)
        copied.settings = dict(self.settings)
        return copied


class WorkspaceReader:
    """Reads one workspace's read models. ``entitlements=None`` means a trusted caller."""

    def __init__(
        self,
        clients: Callable[[], Client],
        models: ReadModelRegistry,
        workspace_id: str,
        entitlements: frozenset[str] | None = None,
        *,
        cursor_key: Callable[[], bytes],
        limits: Mapping[str, Any] | None = None,
        fixed_filters: Mapping[str, str] | None = None,
        points: PointReads | None = None,
    ) -> None:
        self.clients = clients
        self.points = points
        """Where point questions go (None: the ``audit_events`` read model)."""
        self.cursor_key = cursor_key
        """The installation's cursor secret (asked for only when a cursor is made or read)."""
        self.models = models
        self.workspace_id = workspace_id
        self.entitlements = entitlements
        self.limits = dict(limits or {})
        """ClickHouse settings applied to every query (a server's per-request limits)."""
        self.fixed_filters = dict(fixed_filters or {})
        """Filters every read is narrowed by, whatever else it asks (a viewer token's): ANDed
        with the query's own, so a query can narrow them further but never widen them."""

    @property
    def client(self) -> Client:
        """The client of the thread asking (taken at each query, never kept)."""
        return self.clients()

    def model(self, name: str) -> ReadModel:
        model = self.models.get(name)
        if self.entitlements is not None and model.required_entitlement not in self.entitlements:
            raise NotEntitledError(name, model.required_entitlement)
        if not self.narrowable(model):
            raise NotEntitledError(name, f"{name}:unfiltered")
        return model

    def narrowable(self, model: ReadModel) -> bool:
        """Whether ``model`` declares every fixed filter (else it cannot be read at all)."""
        return all(model.filter(name) is not None for name in self.fixed_filters)

    def _where(self, model: ReadModel) -> _Where:
        """The workspace, and the fixed filters (their parameters apart from the query's)."""
        where = _Where(self.workspace_id)
        for name, value in sorted(self.fixed_filters.items()):
            declared = _declared_filter(model, name)
            parameter = f"fixed_{name}"
            where.add(
                declared.condition.replace("{value:", f"{{{parameter}:"),
                **{parameter: _parse_value(declared, value)},
            )
            where.settings.update(declared.settings)
        return where

    # Events.

    def get(self, event_id: UUID) -> AuditEvent:
        model = self.model("audit_events")
        # Fixed filters (a viewer session's) narrow in the read model's SQL: the store has
        # no such columns, so those sessions' point questions stay on ClickHouse.
        if self.points is not None and not self.fixed_filters:
            event = self.points.event(self.workspace_id, event_id)
            if event is None:
                raise NotFoundError(f"no event {event_id} in workspace {self.workspace_id!r}")
            return event
        where = self._where(model)
        where.add("event_id = {event_id:UUID}", event_id=event_id)
        rows = self._select(model, where, order="", limit=1)
        if not rows:
            raise NotFoundError(
                f"no event {event_id} in workspace {self.workspace_id!r}{_MAYBE_NOT_PROJECTED}"
            )
        return event_from_row(rows[0])

    def history(self, stream_id: UUID) -> list[AuditEvent]:
        model = self.model("audit_events")
        if self.points is not None and not self.fixed_filters:
            events = self.points.history(self.workspace_id, stream_id)
            if not events:
                raise NotFoundError(f"no stream {stream_id} in workspace {self.workspace_id!r}")
            return events
        where = self._where(model)
        where.add("stream_id = {stream_id:UUID}", stream_id=stream_id)
        rows = self._select(model, where, order="version", limit=None)
        if not rows:
            raise NotFoundError(
                f"no stream {stream_id} in workspace {self.workspace_id!r}{_MAYBE_NOT_PROJECTED}"
            )
        return [event_from_row(row) for row in rows]

    def events(self, query: EventQuery) -> Page:
        """Matching events, newest first, a page at a time."""
        limit = _checked_limit(query.limit)
        model, where, fingerprint = self._events_where(query)
        after = self._after(query.cursor, fingerprint)
        rows = self._newest_first(model, where, after, limit + 1)
        items = [event_from_row(row) for row in rows[:limit]]
        next_cursor = None
        if len(rows) > limit:
            last = Cursor(items[-1].occurred_at, items[-1].event_id, fingerprint)
            next_cursor = last.encode(self.cursor_key(), self.workspace_id)
        return Page(items, next_cursor)

    def _after(self, cursor: str | None, fingerprint: str) -> Cursor | None:
        if cursor is None:
            return None
        return Cursor.decode(cursor, fingerprint, self.cursor_key(), self.workspace_id)

    def rows(self, query: EventQuery, page_size: int = 10_000) -> Iterator[list[Row]]:
        """Every matching ``audit_events`` row, newest first, ``page_size`` rows at a time
        (``query.limit`` does not apply): memory stays flat however many there are."""
        model, where, fingerprint = self._events_where(query)
        after = self._after(query.cursor, fingerprint)
        while True:
            rows = self._newest_first(model, where, after, page_size)
            if rows:
                yield rows
            if len(rows) < page_size:
                return
            after = Cursor(rows[-1]["occurred_at"], rows[-1]["event_id"], fingerprint)

    def formatted(
        self, query: EventQuery, line: str, page_size: int = 10_000
    ) -> Iterator[tuple[bytes, int]]:
        """Every matching event as ``line`` (an SQL expression over ``audit_events``' columns
        giving its bytes), newest first, ``page_size`` lines at a time: each page's text and
        how many events it holds. ClickHouse formats the lines, so a big export costs this
        process one string per event, not a row of Python values to format."""
        model, where, fingerprint = self._events_where(query)
        after = self._after(query.cursor, fingerprint)
        # toJSONString writes "/" as "\/" unless told otherwise; both are JSON, one is legible.
        where.settings["output_format_json_escape_forward_slashes"] = 0
        while True:
            page = self._page_where(where, after)
            rows = self.client.query(
                f"SELECT {line} AS line, occurred_at, event_id FROM `{model.table_name}` "
                f"WHERE {page.sql()} ORDER BY occurred_at DESC, event_id DESC "
                f"LIMIT {page_size}" + settings_clause(self.limits | page.settings),
                parameters=page.parameters,
                column_formats={"line": "bytes"},
            ).result_rows
            if rows:
                yield b"".join(row[0] for row in rows), len(rows)
            if len(rows) < page_size:
                return
            _, occurred_at, event_id = rows[-1]
            after = Cursor(as_utc(occurred_at), event_id, fingerprint)

    def _newest_first(
        self, model: ReadModel, where: _Where, after: Cursor | None, limit: int
    ) -> list[Row]:
        """One keyset page: at most ``limit`` rows strictly older than ``after``."""
        page = self._page_where(where, after)
        return self._select(model, page, order="occurred_at DESC, event_id DESC", limit=limit)

    @staticmethod
    def _page_where(where: _Where, after: Cursor | None) -> _Where:
        """``where``, narrowed to events strictly older than ``after`` (newest-first order)."""
        if after is None:
            return where
        page = where.copy()
        page.add(
            "occurred_at <= {cursor_at:DateTime64(6, 'UTC')} AND "
            "(occurred_at, event_id) < ({cursor_at:DateTime64(6, 'UTC')}, {cursor_id:UUID})",
            cursor_at=after.occurred_at,
            cursor_id=after.event_id,
        )
        return page

    def count(self, query: EventQuery) -> int:
        """How many events match (the cursor and limit do not apply)."""
        model, where, _ = self._events_where(query)
        rows = self._rows(f"SELECT count() FROM `{model.table_name}` WHERE {where.sql()}", where)
        return int(rows[0][0])

    def top(self, by: TopBy, query: EventQuery, limit: int = 10) -> list[Ranked]:
        """The most frequent actions, actors, targets or sources among matching events."""
        if by not in _TOP_KEYS:
            raise InvalidQueryError("by", f"use one of {', '.join(_TOP_KEYS)}")
        model, where, _ = self._events_where(query)
        key, label, array_join = _TOP_KEYS[by]
        rows = self._rows(
            f"SELECT {key} AS key, any({label}) AS label, count() AS events "
            f"FROM `{model.table_name}` {array_join} WHERE {where.sql()} "
            f"GROUP BY key ORDER BY events DESC, key LIMIT {_checked_limit(limit)}",
            where,
        )
        return [Ranked(str(key), str(label), int(events)) for key, label, events in rows]

    def distinct(self, by: TopBy, query: EventQuery) -> int:
        """How many different actions, actors, targets or sources matching events have."""
        if by not in _TOP_KEYS:
            raise InvalidQueryError("by", f"use one of {', '.join(_TOP_KEYS)}")
        model, where, _ = self._events_where(query)
        key, _label, array_join = _TOP_KEYS[by]
        rows = self._rows(
            f"SELECT uniqExact({key}) FROM `{model.table_name}` {array_join} WHERE {where.sql()}",
            where,
        )
        return int(rows[0][0])

    def _events_where(self, query: EventQuery) -> tuple[ReadModel, _Where, str]:
        model = self.model("audit_events")
        where = self._where(model)
        self._apply_filters(model, query.filters, where)
        _apply_time_range(model.time_column, query.since, query.until, where)
        _apply_time_range(
            "recorded_at", query.recorded_since, query.recorded_until, where, "recorded_"
        )
        self._apply_text(model, query.text, where)
        _apply_position_bound(query.up_to_position, where)
        parts: dict[str, object] = {
            # The workspace too: another workspace's cursor never positions this one's pages
            # (its time and id are that workspace's data).
            "w": self.workspace_id,
            "f": {k: sorted(v) for k, v in query.filters.items()},
            "s": query.since,
            "u": query.until,
            "t": query.text,
        }
        if query.recorded_since or query.recorded_until:
            # Only then: cursors of queries without them stay valid.
            parts |= {"rs": query.recorded_since, "ru": query.recorded_until}
        if query.up_to_position is not None:
            parts["p"] = query.up_to_position
        fingerprint = query_fingerprint(parts)
        return model, where, fingerprint

    # Current state.

    def current(
        self,
        name: str,
        filters: Mapping[str, Sequence[str]] | None = None,
        *,
        text: str | None = None,
        limit: int = 50,
    ) -> list[Row]:
        """Rows of a current-state read model (e.g. incidents), most recently started first."""
        model = self.model(name)
        if not isinstance(model, StateTable):
            raise InvalidQueryError("read_model", f"{name!r} is not a current-state read model")
        where = self._where(model)
        self._apply_filters(model, filters or {}, where)
        self._apply_text(model, text, where)
        order = f"{model.time_column} DESC" if model.time_column else ""
        return query_dicts(
            self.client,
            f"SELECT * FROM `{model.table_name}` FINAL WHERE {where.sql()}"
            + (f" ORDER BY {order}" if order else "")
            + f" LIMIT {_checked_limit(limit)}",
            where.parameters,
            self.limits | where.settings,
        )

    # Statistics.

    def stats(
        self,
        *,
        group_by: GroupBy = "action",
        interval: Interval | Literal["auto"] = "auto",
        since: datetime | None = None,
        until: datetime | None = None,
        filters: Mapping[str, Sequence[str]] | None = None,
        up_to_position: int | None = None,
    ) -> Stats:
        """Event counts per interval per action, actor or source.

        Minute buckets come from the raw events; hour and day buckets from the hourly roll-up,
        which outlives raw events (older data is downsampled, not lost), except with
        ``up_to_position`` (see ``EventQuery``): a roll-up row cannot be split by position, so
        every bucket then comes from the raw events. ``auto`` picks
        minutes up to 6 hours, hours up to 30 days, days beyond. Buckets are whole: ``since``
        is rounded down and ``until`` up to the interval (UTC), as the result reports.
        """
        if group_by not in _GROUP_COLUMNS:
            raise InvalidQueryError("group_by", f"use one of {', '.join(_GROUP_COLUMNS)}")
        since = _aware("since", since)
        # Until now; a range starting later is empty rather than reversed.
        until = _aware("until", until) or max(datetime.now(UTC), since or QUERY_EARLIEST)
        if since is not None and since > until:
            raise InvalidQueryError("since", "must not be later than until")
        until = _clamped(until)
        since = _clamped(since or until - timedelta(days=1))
        chosen = _auto_interval(until - since) if interval == "auto" else interval
        if chosen not in _INTERVALS:
            raise InvalidQueryError("interval", "use minute, hour, day or auto")
        # Whole buckets only: the range widens to the interval's boundaries.
        since, until = _floor(since, chosen), _ceil(until, chosen)
        rollup = self.models.get("activity_hourly")
        if chosen == "minute" or up_to_position is not None or not self.narrowable(rollup):
            model, time_column, count = self.model("audit_events"), "occurred_at", "count()"
        else:
            model, time_column, count = self.model("activity_hourly"), "hour", "sum(events)"
        where = self._where(model)
        self._apply_filters(model, filters or {}, where)
        where.add(
            f"{time_column} >= {{since:DateTime64(6, 'UTC')}} AND "
            f"{time_column} < {{until:DateTime64(6, 'UTC')}}",
            since=since,
            until=until,
        )
        _apply_position_bound(up_to_position, where)
        key = _GROUP_COLUMNS[group_by]
        rows = self._rows(
            f"SELECT {floor_micros(time_column, _SECONDS[chosen])} AS bucket, "
            f"{key} AS key, {count} AS events FROM `{model.table_name}` WHERE {where.sql()} "
            "GROUP BY bucket, key ORDER BY bucket, key",
            where,
        )
        # Microseconds since 1970, not a datetime: a client may return a datetime in the
        # machine's local time (TZ), which would shift every bucket.
        buckets = [
            StatsBucket(_EPOCH + timedelta(microseconds=int(bucket)), str(key), int(events))
            for bucket, key, events in rows
        ]
        return Stats(chosen, group_by, since, until, buckets)

    # Building blocks.

    def _select(
        self, model: ReadModel, where: _Where, *, order: str, limit: int | None
    ) -> list[Row]:
        sql = f"SELECT {EVENT_COLUMNS} FROM `{model.table_name}` WHERE {where.sql()}"
        if order:
            sql += f" ORDER BY {order}"
        if limit is not None:
            sql += f" LIMIT {limit}"
        return query_dicts(self.client, sql, where.parameters, self.limits | where.settings)

    def _rows(self, sql: str, where: _Where) -> Sequence[Sequence[Any]]:
        """``sql``'s rows, with ``where``'s parameters and this reader's limits."""
        clause = settings_clause(self.limits | where.settings)
        return self.client.query(sql + clause, parameters=where.parameters).result_rows

    @staticmethod
    def _apply_filters(
        model: ReadModel, filters: Mapping[str, Sequence[str]], where: _Where
    ) -> None:
        for name, values in filters.items():
            declared = _declared_filter(model, name)
            alternatives = []
            for index, value in enumerate(values):
                parameter = f"{name}_{index}"
                alternatives.append(declared.condition.replace("{value:", f"{{{parameter}:"))
                where.parameters[parameter] = _parse_value(declared, value)
            where.settings.update(declared.settings)
            if alternatives:
                where.conditions.append(" OR ".join(f"({a})" for a in alternatives))

    @staticmethod
    def _apply_text(model: ReadModel, text: str | None, where: _Where) -> None:
        haystack = model.text_column or ""
        if not model.text_folded:
            haystack = fold_sql(haystack)
        for index, word in enumerate(_text_words(model, text)):
            where.add(
                f"{haystack} LIKE {{text_{index}:String}}",
                **{f"text_{index}": like_pattern(word)},
            )


def live_matcher(
    model: ReadModel, filters: Mapping[str, Sequence[str]], text: str | None
) -> Callable[[AuditEvent], bool]:
    """``events()``'s filters and free text as a test of one event, for the live tail."""
    tests: list[Callable[[AuditEvent], bool]] = []
    for name, values in filters.items():
        declared = _declared_filter(model, name)
        live = declared.live
        if live is None:
            raise InvalidQueryError(name, "this filter is not available on the live tail")
        if values:
            tests.append(_any_of(live, [_parse_value(declared, value) for value in values]))
    words = _text_words(model, text)
    if words:
        tests.append(lambda event: all(word in _searchable(event) for word in words))
    return lambda event: all(test(event) for test in tests)


def _any_of(
    live: Callable[[AuditEvent, Any], bool], wanted: list[Any]
) -> Callable[[AuditEvent], bool]:
    return lambda event: any(live(event, value) for value in wanted)


def _searchable(event: AuditEvent) -> str:
    """What free text matches in ``audit_events`` (its ``search_text`` column), folded."""
    parts = [event.action, event.actor.id, event.actor.name or "", event.source]
    parts += [t.type for t in event.targets] + [t.id for t in event.targets]
    parts += [t.name or "" for t in event.targets]
    parts.append(orjson.dumps(event.metadata, option=orjson.OPT_SORT_KEYS).decode())
    return fold(" ".join(parts))


def _declared_filter(model: ReadModel, name: str) -> Filter:
    declared = model.filter(name)
    if declared is None:
        available = ", ".join(f.name for f in model.filters)
        raise InvalidQueryError(
            name, f"{model.name} cannot be filtered by {name!r}; available: {available}"
        )
    return declared


def _text_words(model: ReadModel, text: str | None) -> list[str]:
    if not text:
        return []
    if model.text_column is None:
        raise InvalidQueryError("text", f"{model.name} has no free-text column")
    if len(text) > 200:
        raise InvalidQueryError("text", "at most 200 characters")
    return words(text)


def check_filter_value(model: ReadModel, name: str, value: str) -> None:
    """InvalidQueryError unless ``value`` is a valid value of ``model``'s filter ``name``."""
    _parse_value(_declared_filter(model, name), value)


def _parse_value(declared: Filter, value: str) -> Any:
    if not isinstance(value, str) or not 0 < len(value) <= 256:
        raise InvalidQueryError(declared.name, "each value must be 1 to 256 characters")
    try:
        if declared.parse is not None:
            return declared.parse(value)
        if "{value:UUID}" in declared.condition:
            return UUID(value)
    except ValueError as error:
        raise InvalidQueryError(declared.name, f"{value!r} is not valid: {error}") from None
    return value


def _apply_time_range(
    column: str | None,
    since: datetime | None,
    until: datetime | None,
    where: _Where,
    prefix: str = "",
) -> None:
    """``[since, until)`` on ``column``; ``prefix`` names the parameters (``recorded_``)."""
    since = _aware(f"{prefix}since", since)
    until = _aware(f"{prefix}until", until)
    # An empty range [t, t) is allowed (it selects nothing); a reversed one is a mistake.
    if since and until and since > until:
        raise InvalidQueryError(f"{prefix}since", f"must not be later than {prefix}until")
    if since:
        where.add(
            f"{column} >= {{{prefix}since:DateTime64(6, 'UTC')}}",
            **{f"{prefix}since": _clamped(since)},
        )
    if until:
        where.add(
            f"{column} < {{{prefix}until:DateTime64(6, 'UTC')}}",
            **{f"{prefix}until": _clamped(until)},
        )


def _apply_position_bound(position: int | None, where: _Where) -> None:
    if position is None:
        return
    if not 0 <= position < 2**64:
        raise InvalidQueryError("up_to_position", "must be a store position (0 or more)")
    where.add("position <= {up_to_position:UInt64}", up_to_position=position)


QUERY_EARLIEST = datetime(1900, 1, 1, tzinfo=UTC)
QUERY_LATEST = datetime(2300, 1, 1, tzinfo=UTC)
"""The read models' time columns hold 1900-01-01 to 2299-12-31 (ClickHouse's ``DateTime64``),
and ClickHouse cannot take a parameter outside that range; so a bound of a time range is
clamped to [QUERY_EARLIEST, QUERY_LATEST], which selects exactly the same events (none lies
outside) — ``since=0001-01-01`` means "from the beginning"."""


def _aware(name: str, moment: datetime | None) -> datetime | None:
    if moment is not None and moment.tzinfo is None:
        raise InvalidQueryError(name, "give a timezone, e.g. 2026-11-25T10:00:00Z")
    return moment


def _clamped(moment: datetime) -> datetime:
    """``moment`` (aware) in UTC, within [QUERY_EARLIEST, QUERY_LATEST]."""
    # Compared as instants first: year 1 east of UTC cannot be converted to UTC.
    return max(QUERY_EARLIEST, min(moment, QUERY_LATEST)).astimezone(UTC)


def _checked_limit(limit: int) -> int:
    if not 1 <= limit <= MAX_LIMIT:
        raise InvalidQueryError("limit", f"must be between 1 and {MAX_LIMIT}")
    return limit


_INTERVALS: dict[str, timedelta] = {
    "minute": timedelta(minutes=1),
    "hour": timedelta(hours=1),
    "day": timedelta(days=1),
}
_SECONDS = {name: int(length.total_seconds()) for name, length in _INTERVALS.items()}
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _floor(moment: datetime, interval: str) -> datetime:
    return moment - (moment - _EPOCH) % _INTERVALS[interval]


def _ceil(moment: datetime, interval: str) -> datetime:
    floored = _floor(moment, interval)
    return floored if floored == moment else floored + _INTERVALS[interval]


def _auto_interval(span: timedelta) -> Interval:
    if span <= timedelta(hours=6):
        return "minute"
    if span <= timedelta(days=30):
        return "hour"
    return "day"


def event_from_row(row: Row) -> AuditEvent:
    """Rebuild the envelope from an ``audit_events`` row."""
    return AuditEvent.model_validate(summary_from_row(row))


def summary_from_row(row: Row) -> dict[str, Any]:
    """An ``audit_events`` row as the envelope's JSON (``AuditEvent.summary()``), without
    building the model: exports turn millions of rows into this. The actor's and targets'
    own metadata and ``context.location`` appear only when the event has them, as in
    ``summary()``."""
    summary = {
        "event_id": str(row["event_id"]),
        "workspace_id": row["workspace_id"],
        "stream_id": str(row["stream_id"]),
        "version": row["version"],
        "action": row["action"],
        "schema_version": row["schema_version"],
        "actor": {
            "id": row["actor_id"],
            "type": row["actor_type"],
            "name": row["actor_name"] or None,
        },
        "targets": [
            {"type": kind, "id": ident, "name": name or None}
            for kind, ident, name in zip(
                row["target_types"], row["target_ids"], row["target_names"], strict=True
            )
        ],
        "source": row["source"],
        "occurred_at": _json_moment(row["occurred_at"]),
        "recorded_at": _json_moment(row["recorded_at"]),
        "context": {
            "ip": row["ip"] or None,
            "user_agent": row["user_agent"] or None,
            "request_id": row["request_id"] or None,
            "api_key_id": row["api_key_id"] or None,
        },
        "metadata": orjson.loads(row["metadata"]),
    }
    if row.get("actor_metadata"):
        summary["actor"]["metadata"] = orjson.loads(row["actor_metadata"])
    for target, metadata in zip(summary["targets"], row.get("target_metadata") or (), strict=False):
        if metadata:
            target["metadata"] = orjson.loads(metadata)
    if row.get("location"):
        summary["context"]["location"] = row["location"]
    return summary


def _json_moment(moment: datetime) -> str:
    """As pydantic writes a UTC datetime: ISO 8601 with ``Z``."""
    return moment.isoformat().replace("+00:00", "Z")
