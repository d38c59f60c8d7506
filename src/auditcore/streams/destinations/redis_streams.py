"""Redis Streams: each event appended (XADD) to a Redis stream, a batch in one atomic step.

Wire format: one entry per event, in commit order, with the fields ``delivery_id``,
``position``, ``workspace_id``, ``stream_id`` (the auditcore stream), ``batch_id``,
``occurred_at`` (ISO 8601) and ``payload`` (JSON); Redis assigns the entry ids. With ``maxlen``
set, the stream is trimmed approximately (``MAXLEN ~``) as entries are added.

Idempotence: beside the Redis stream ``key`` a hash ``<key>:auditcore:positions`` holds, per
auditcore stream, the position of the last event appended. One Lua script per batch reads it,
appends only the events past it and moves it to the batch's last position. Redis runs a script
as one step, with no command of another client in between (the same isolation as MULTI/EXEC,
in one round trip and without WATCH retries), so a retried batch, or one that a restart cut
differently, appends nothing twice: a retry after the script ran appends nothing, a retry of a
script that never ran appends everything. Events are in commit order, so positions only grow
within an auditcore stream. A deliberate replay of events at or before the recorded position is
dropped the same way: delete the hash's field (``HDEL <key>:auditcore:positions <stream id>``)
to append them again. The two keys must live on one node (no Redis Cluster across slots).

Failure semantics: ``deliver`` returns once the script ran (every event of the batch is in the
Redis stream, or was before). A refused or lost connection, a timeout, Redis loading, busy or
out of memory raise a retryable ``DeliveryError``; refused credentials and a key holding
another type raise a non-retryable one. The password never appears in error messages.
"""

from __future__ import annotations

from typing import Any, ClassVar

import orjson
import redis
from pydantic import BaseModel, ConfigDict, Field

from auditcore.streams.base import Batch, DeliveryError, Destination

POSITIONS_SUFFIX = ":auditcore:positions"
_PERMANENT_CODES = ("WRONGTYPE", "NOPERM", "WRONGPASS", "NOAUTH")

# KEYS: the Redis stream, the positions hash. ARGV: the auditcore stream id, MAXLEN (0: none),
# then per event its position, delivery id, workspace id, batch id, occurred_at and payload.
_APPEND = """
local last = tonumber(redis.call('HGET', KEYS[2], ARGV[1]) or '-1')
local maxlen = tonumber(ARGV[2])
local width = 6
local added = 0
local highest = last
for i = 3, #ARGV, width do
    local position = tonumber(ARGV[i])
    if position > last then
        local entry = {KEYS[1]}
        if maxlen > 0 then
            table.insert(entry, 'MAXLEN')
            table.insert(entry, '~')
            table.insert(entry, maxlen)
        end
        table.insert(entry, '*')
        table.insert(entry, 'delivery_id') table.insert(entry, ARGV[i + 1])
        table.insert(entry, 'position') table.insert(entry, ARGV[i])
        table.insert(entry, 'workspace_id') table.insert(entry, ARGV[i + 2])
        table.insert(entry, 'stream_id') table.insert(entry, ARGV[1])
        table.insert(entry, 'batch_id') table.insert(entry, ARGV[i + 3])
        table.insert(entry, 'occurred_at') table.insert(entry, ARGV[i + 4])
        table.insert(entry, 'payload') table.insert(entry, ARGV[i + 5])
        redis.call('XADD', unpack(entry))
        added = added + 1
        if position > highest then highest = position end
    end
end
if highest > last then redis.call('HSET', KEYS[2], ARGV[1], highest) end
return added
"""


class RedisStreamsSettings(BaseModel):
    """The Redis server and the stream key to append to."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    url: str = Field(
        default="redis://127.0.0.1:6379/0",
        max_length=2048,
        pattern=r"^(redis|rediss|unix)://[^@]*$",
        description="The server, without credentials (give them as username and password).",
    )
    key: str = Field(min_length=1, max_length=1024)
    username: str | None = Field(default=None, max_length=256)
    password: str | None = Field(default=None, max_length=512, repr=False)
    maxlen: int | None = Field(default=None, ge=1)
    timeout_seconds: float = Field(default=10.0, gt=0, le=300)


class RedisStreamsDestination(Destination):
    """Redis Streams, idempotent per auditcore stream by position."""

    kind: ClassVar[str] = "redis"
    Settings: ClassVar[type[BaseModel]] = RedisStreamsSettings
    secret_fields: ClassVar[frozenset[str]] = frozenset({"password"})

    def __init__(self, settings: BaseModel) -> None:
        super().__init__(settings)
        assert isinstance(settings, RedisStreamsSettings)
        self._config = settings
        self._redis: redis.Redis = redis.Redis.from_url(
            settings.url,
            username=settings.username,
            password=settings.password,
            socket_timeout=settings.timeout_seconds,
            socket_connect_timeout=settings.timeout_seconds,
            retry_on_timeout=False,
        )
        self._append = self._redis.register_script(_APPEND)

    def arguments(self, batch: Batch) -> list[Any]:
        """The script's ARGV for the batch."""
        arguments: list[Any] = [batch.stream_id, self._config.maxlen or 0]
        for event in batch.events:
            arguments += [
                event.position,
                event.delivery_id,
                event.workspace_id,
                batch.batch_id,
                event.occurred_at.isoformat(),
                orjson.dumps(event.payload),
            ]
        return arguments

    def deliver(self, batch: Batch) -> None:
        if not batch.events:
            return
        key = self._config.key
        try:
            self._append(keys=[key, key + POSITIONS_SUFFIX], args=self.arguments(batch))
        except redis.AuthenticationError:
            raise DeliveryError(
                "redis: the server refused the credentials", retryable=False
            ) from None
        except redis.ResponseError as error:
            text = str(error)
            # Inside a script Redis may prefix the command's error code; look for it anywhere.
            reason = next((code for code in _PERMANENT_CODES if code in text), "")
            permanent = bool(reason)
            reason = reason or text.split(" ", 1)[0][:40]
            raise DeliveryError(
                f"redis: the server refused the batch ({reason})", retryable=not permanent
            ) from None
        except redis.RedisError as error:
            raise DeliveryError(f"redis: cannot append ({type(error).__name__})") from None

    def close(self) -> None:
        self._redis.close()
