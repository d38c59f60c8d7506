"""Personal fields sealed in the stored event, per subject; opened (or shown erased) on read.

What is personal: the actor's name, the request's IP address, user agent and location (the
actor's subject: its id in the event's workspace), the name of a target of type ``user`` (that
target's subject: its id), e-mail addresses among the actor's and the targets' own metadata
values (a ``user`` target's: that target's; any other's: the actor's), and the metadata
fields an action's schema marks personal (``Field(json_schema_extra={"personal": True})``:
the actor's subject; ``"target"``: the first ``user`` target's, else the actor's) or that hold
an e-mail address (the actor's). Ids, actions, times, types and the rest stay in clear.

Stored form: each such field is set to ``null`` where it was, and the state gains
``"sealed": [{"s": subject, "k": key id, "p": [paths], "c": base64(nonce + AES-GCM)}]``,
one entry per subject, whose plaintext is the JSON list of the fields' values. The
associated data binds each ciphertext to its workspace, event id and subject, so it cannot
be moved to another event unnoticed. The Merkle leaves hash this stored form, so destroying a
key changes nothing they cover.

Reading puts the values back, in their places (the state's bytes are again what was given);
a subject whose key was destroyed gets ``ERASED`` in each of its fields, and a ciphertext that
does not decrypt (edited behind our back: ``auditcore verify`` says so) ``UNREADABLE``.

Failure semantics: a missing or wrong master key raises ``MasterKeyError`` (one line), on
write and on read; nothing is stored in clear when encryption is on.
"""

from __future__ import annotations

import base64
import re
import secrets
import threading
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import orjson
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from auditcore.events.actions import ActionRegistry, ActionSpec
from auditcore.events.envelope import ERASED, UNREADABLE
from auditcore.lifecycle.keys import SubjectKeys

_EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")
_NONCE = 12
Path = tuple[str | int, ...]


class Sealer:
    """Seals and opens stored states (the ``StateSealer`` the store's mapper calls)."""

    def __init__(self, registry: ActionRegistry, keys: SubjectKeys) -> None:
        self.registry = registry
        self.keys = keys
        self._marked: dict[str, tuple[ActionSpec, dict[str, bool]]] = {}
        self._ciphers: dict[bytes, AESGCM] = {}
        self._lock = threading.Lock()
        self._prefix, self._count = secrets.token_bytes(8), 0

    def seal(self, state: bytes, action: str) -> bytes:
        fields: dict[str, Any] = orjson.loads(state)
        if "sealed" in fields:
            return state  # already sealed (an event read back and stored again)
        plan = self._personal(fields, action)
        if not plan:
            return state
        workspace, event_id = fields["workspace_id"], fields["event_id"]
        sealed = []
        for subject, values in plan.items():
            key_id, key = self.keys.current(workspace, subject)
            nonce = self._nonce()
            paths = [path for path, _ in values]
            plain = orjson.dumps([value for _, value in values])
            cipher = self._cipher(key).encrypt(nonce, plain, _aad(workspace, event_id, subject))
            for path in paths:
                _put(fields, path, None)
            sealed.append(
                {
                    "s": subject,
                    "k": key_id,
                    "p": paths,
                    "c": base64.b64encode(nonce + cipher).decode(),
                }
            )
        fields["sealed"] = sealed
        return orjson.dumps(fields)

    def _nonce(self) -> bytes:
        """A nonce never used before with any key: this process's random 64-bit prefix and a
        32-bit counter (a new prefix when it wraps). Two processes share a prefix with a
        chance of 2^-64; drawing 12 random bytes per event cost more than the rest of
        sealing."""
        with self._lock:
            self._count += 1
            if self._count >= 2**32:
                self._prefix, self._count = secrets.token_bytes(8), 0
            return self._prefix + self._count.to_bytes(4, "big")

    def _cipher(self, key: bytes) -> AESGCM:
        cipher = self._ciphers.get(key)
        if cipher is None:
            if len(self._ciphers) > 100_000:  # bounded: subjects come and go
                self._ciphers.clear()
            cipher = self._ciphers[key] = AESGCM(key)
        return cipher

    def unseal(self, state: bytes) -> bytes:
        return self.unseal_many([state])[0]

    def unseal_many(self, states: Sequence[bytes]) -> list[bytes]:
        """Each state opened: its personal fields back in place, or marked erased."""
        loaded: dict[int, dict[str, Any]] = {}
        for index, state in enumerate(states):
            if b'"sealed":' in state:
                fields = orjson.loads(state)
                if isinstance(fields.get("sealed"), list):
                    loaded[index] = fields
        if not loaded:
            return list(states)
        wanted = {entry["k"] for fields in loaded.values() for entry in fields["sealed"]}
        keys = self.keys.data_keys(wanted)
        opened = list(states)
        for index, fields in loaded.items():
            for entry in fields.pop("sealed"):
                for path, value in zip(entry["p"], _open(fields, entry, keys), strict=True):
                    _put(fields, path, value)
            opened[index] = orjson.dumps(fields)
        return opened

    def _personal(self, fields: dict[str, Any], action: str) -> dict[str, list[tuple[Path, Any]]]:
        plan: dict[str, list[tuple[Path, Any]]] = defaultdict(list)
        actor = fields.get("actor") or {}
        subject = actor.get("id")
        if subject is None:
            return plan
        if actor.get("name") is not None:
            plan[subject].append((("actor", "name"), actor["name"]))
        _emails(plan[subject], ("actor", "metadata"), actor.get("metadata"))
        context = fields.get("context") or {}
        # ``location`` (WorkOS's context field) is where the actor was, often its IP address.
        for name in ("ip", "user_agent", "location"):
            if context.get(name) is not None:
                plan[subject].append((("context", name), context[name]))
        person = None
        for index, target in enumerate(fields.get("targets") or ()):
            owner = subject
            if target.get("type") == "user":
                person = person or target["id"]
                owner = target["id"]
                if target.get("name") is not None:
                    plan[owner].append((("targets", index, "name"), target["name"]))
            _emails(plan[owner], ("targets", index, "metadata"), target.get("metadata"))
        marked = self._marks(action)
        for name, value in (fields.get("metadata") or {}).items():
            if value is None:
                continue
            mark = marked.get(name)
            if mark is not None:
                plan[person if mark and person else subject].append((("metadata", name), value))
            elif isinstance(value, str) and _EMAIL.fullmatch(value):
                plan[subject].append((("metadata", name), value))
        return {owner: values for owner, values in plan.items() if values}

    def _marks(self, action: str) -> dict[str, bool]:
        """The action's personal metadata fields: True if they belong to a target person."""
        try:
            spec = self.registry.spec(action)
        except Exception:  # an unknown action has no marked fields
            return {}
        known = self._marked.get(action)
        if known is not None and known[0] is spec:
            return known[1]
        marks: dict[str, bool] = {}
        for name, info in spec.schema.model_fields.items():
            extra = info.json_schema_extra
            mark = extra.get("personal") if isinstance(extra, dict) else None
            if mark:
                marks[info.alias or name] = mark == "target"
        self._marked[action] = (spec, marks)
        return marks


def _emails(into: list[tuple[Path, Any]], where: Path, metadata: Any) -> None:
    """The e-mail addresses among an actor's or a target's own metadata values (top level,
    as for the event's metadata): personal, whoever's metadata it is."""
    if isinstance(metadata, dict):
        for name, value in metadata.items():
            if isinstance(value, str) and _EMAIL.fullmatch(value):
                into.append(((*where, name), value))


def _aad(workspace: str, event_id: str, subject: str) -> bytes:
    return orjson.dumps([workspace, event_id, subject])


def _open(
    fields: dict[str, Any], entry: dict[str, Any], keys: dict[str, bytes | None]
) -> list[Any]:
    count = len(entry["p"])
    key = keys.get(entry["k"])
    if key is None:
        return [ERASED] * count
    data = base64.b64decode(entry["c"])
    aad = _aad(fields["workspace_id"], fields["event_id"], entry["s"])
    try:
        values = orjson.loads(AESGCM(key).decrypt(data[:_NONCE], data[_NONCE:], aad))
    except (InvalidTag, ValueError, orjson.JSONDecodeError):
        return [UNREADABLE] * count
    if not isinstance(values, list) or len(values) != count:
        return [UNREADABLE] * count
    return values


def _put(fields: dict[str, Any], path: Sequence[str | int], value: Any) -> None:
    place: Any = fields
    for step in path[:-1]:
        place = place[step]
    place[path[-1]] = value
