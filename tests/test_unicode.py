"""Unicode is one rule everywhere: free text matches case-insensitively the same way in SQL
(the read API, exports, current state) and in Python (the live tail), for every script."""

from __future__ import annotations

import json
import unicodedata
from collections.abc import Iterator

import pytest

from auditcore import AuditCore, Settings
from auditcore.api import ApiConfig
from auditcore.readmodel.text import fold, fold_sql, words
from tests.apiserver import eventually
from tests.test_api import Deployment, deploy
from tests.test_live import Tail

TEXTS = {
    "A": "Émile Zola",  # precomposed É
    "B": "E\u0301MILE ZOLA",  # E + combining acute, upper case
    "C": "crème BRÛLÉE",
    "D": "über alles",
    "E": "Ωmega point",
    "F": "Straße",
    "G": "İstanbul",  # capital I with dot above
    "H": "ΣΊΣΥΦΟΣ",  # final sigma when lowercased
    "I": "ПРИВЕТ мир",
    "J": "東京タワー",
    "K": "🔥 fire drill",
    "L": "\u0131stanbul",  # Turkish dotless i
}
SEARCHES = {
    "émile": "AB",
    "ÉMILE": "AB",
    "e\u0301mile": "AB",
    "zola émile": "AB",
    "brûlée": "C",
    "BRULEE": "",  # accents are kept
    "ÜBER": "D",
    "ωMEGA": "E",
    "STRASSE": "F",
    "straße": "F",
    "istanbul": "G",
    "İSTANBUL": "G",
    "\u0131stanbul": "L",
    "σίσυφος": "H",
    "ΣΊΣΥΦΟΣ": "H",
    "σίσυφοσ": "H",
    "привет": "I",
    "東京": "J",
    "🔥": "K",
    "FIRE": "K",
}


def assigned_code_points() -> list[str]:
    return [
        chr(point)
        for point in range(0x20, 0x30000)
        if unicodedata.category(chr(point)) not in ("Cn", "Cs", "Co", "Cc")
    ]


def test_sql_and_python_fold_every_code_point_and_text_alike(pg_settings: Settings) -> None:
    samples = [*assigned_code_points(), *TEXTS.values(), *SEARCHES]
    samples += ["ΟΔΟΣ ΣΟΦΟΣ", "ὈΔΥΣΣΕΎΣ", "ǅemal", "ﬁre", "ẞ", "Ⅻ", "Ǆ", "a\u0308\u0301"]
    with AuditCore(pg_settings) as audit:
        folded: list[str] = []
        # 5,000 a query: a server refuses a query parameter over 128 KiB.
        for start in range(0, len(samples), 5_000):
            chunk = samples[start : start + 5_000]
            folded += audit.clickhouse.query(
                f"SELECT arrayMap(x -> {fold_sql('x')}, {{texts:Array(String)}})",
                parameters={"texts": chunk},
            ).result_rows[0][0]
    different = [(s, f, fold(s)) for s, f in zip(samples, folded, strict=True) if f != fold(s)]
    assert different == []
    assert len(samples) > 100_000


@pytest.fixture
def unicode_api(pg_settings: Settings) -> Iterator[Deployment]:
    yield from deploy(pg_settings, ApiConfig(live_keepalive=0.2))


def test_every_read_path_matches_the_same_events(unicode_api: Deployment) -> None:
    api = unicode_api
    tails = {word: Tail(api, "acme", {"text": word}) for word in SEARCHES}
    ids: dict[str, str] = {}
    with api.client("acme") as acme:
        for label, text in TEXTS.items():
            # The text is in a different field each time: actor name, target, metadata.
            event = {"action": "incident.comment_added", "metadata": {"body": f"note {label}"}}
            if label in "ABCD":
                event["actor"] = {"id": f"user_{label}", "type": "user", "name": text}
            elif label in "EFGH":
                event["targets"] = [{"type": "service", "id": f"s{label}", "name": text}]
            else:
                event["metadata"] = {"body": text}
            response = acme.post("/v1/events", json=event)
            assert response.status_code == 201, response.text
            ids[response.json()["ids"][0]] = label
            opened = acme.post(
                "/v1/events",
                json={
                    "action": "incident.opened",
                    "metadata": {"title": text, "severity": "sev3", "service": "api"},
                },
            )
            assert opened.status_code == 201, opened.text
        api.projected("acme", 2 * len(TEXTS))

        def labels(found: list[str]) -> str:
            return "".join(sorted(ids[x] for x in found if x in ids))

        for word, expected in SEARCHES.items():
            page = acme.get("/v1/events", params={"text": word, "limit": 100}).json()
            assert labels([e["event_id"] for e in page["items"]]) == expected, word
            export = acme.get("/v1/events/export", params={"text": word, "format": "jsonl"})
            exported = [json.loads(line)["event_id"] for line in export.text.splitlines()]
            assert labels(exported) == expected, word
            rows = acme.get("/v1/models/incidents/rows", params={"text": word}).json()["items"]
            titles = {row["title"] for row in rows}
            assert titles == {TEXTS[label] for label in expected}, word

        def tailed() -> dict[str, str] | None:
            found = {w: labels([e["event_id"] for e in t.events]) for w, t in tails.items()}
            return found if found == SEARCHES else None

        # The live tail matches in Python, on the stored events: the same answers.
        try:
            assert eventually(tailed) == SEARCHES
        finally:
            for tail in tails.values():
                tail.close()


def test_fold_is_the_documented_rule() -> None:
    assert fold("ÉMILE") == fold("E\u0301MILE") == "émile"
    assert fold("Straße") == fold("STRASSE") == "strasse"
    assert fold("ΣΊΣΥΦΟΣ") == fold("σίσυφος") == "σίσυφοσ"
    assert fold("İstanbul") == fold("ISTANBUL") == "istanbul"
    assert fold("\u0131stanbul") == "\u0131stanbul"
    assert fold("BRÛLÉE") != fold("brulee")
    assert words("  Zola\tÉMILE ") == ["zola", "émile"]
