"""Bounds on event metadata, so one careless caller cannot bloat the audit trail."""

from __future__ import annotations

from dataclasses import dataclass

import orjson
from pydantic import JsonValue

Problem = tuple[str, str]


@dataclass(frozen=True)
class MetadataLimits:
    """Metadata bounds; the defaults are WorkOS Audit Logs' limits, plus a total size."""

    max_keys: int = 50
    max_key_length: int = 40
    max_value_length: int = 500
    max_bytes: int = 32_768

    def check(self, metadata: dict[str, JsonValue]) -> list[Problem]:
        """Return one problem per breached bound, located by its path in the metadata."""
        problems: list[Problem] = []
        keys_seen = self._walk("metadata", metadata, problems)
        if keys_seen > self.max_keys:
            problems.append(
                (
                    "metadata",
                    f"has {keys_seen} keys; the limit is {self.max_keys} "
                    "(nested keys and list items count too)",
                )
            )
        try:
            size = len(orjson.dumps(metadata))
        except TypeError:  # an out-of-range integer, reported above
            return problems
        if size > self.max_bytes:
            problems.append(
                ("metadata", f"serializes to {size} bytes; the limit is {self.max_bytes}")
            )
        return problems

    def _walk(self, path: str, value: JsonValue, problems: list[Problem]) -> int:
        if isinstance(value, dict):
            count = len(value)
            for key, item in value.items():
                if len(key) > self.max_key_length:
                    problems.append(
                        (
                            f"{path}.{key[:20]}…",
                            f"key is {len(key)} characters long; "
                            f"the limit is {self.max_key_length}",
                        )
                    )
                count += self._walk(f"{path}.{key}", item, problems)
            return count
        if isinstance(value, list):
            count = len(value)
            for index, item in enumerate(value):
                count += self._walk(f"{path}[{index}]", item, problems)
            return count
        if isinstance(value, int) and not -(2**63) <= value < 2**64:
            problems.append((path, "integer is outside the 64-bit range; send it as a string"))
        if isinstance(value, str) and len(value) > self.max_value_length:
            problems.append(
                (
                    path,
                    f"value is {len(value)} characters long; the limit is {self.max_value_length}",
                )
            )
        return 0
