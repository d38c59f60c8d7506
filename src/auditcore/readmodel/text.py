"""Free-text matching: one case-insensitive rule, the same in SQL and in Python.

The text and the words searched for are both *folded*: Unicode lowercase (the full mapping,
no locale: ``lowerUTF8`` in ClickHouse, ``str.lower`` in Python, which agree on every code
point), NFC normalisation (so a precomposed ``é`` and ``e`` + combining acute are one
letter), then three foldings lowercase leaves apart: Greek final sigma as the other small
sigma, ``ß`` as ``ss``, and ``i`` + combining dot above (what ``İ`` lowercases to) as
``i``. A word matches where its folded form appears inside the folded text. So ``ÉMILE``
finds ``émile``, ``STRASSE`` finds ``Straße``, ``ΚΟΣΜΟΣ`` finds ``κοσμος``, ``istanbul``
finds ``İstanbul``; accents are kept (``emile`` does not find ``Émile``), and Turkish
dotless i (U+0131) is its own letter.
"""

from __future__ import annotations

import unicodedata

FOLDINGS = (("\u03c2", "\u03c3"), ("ß", "ss"), ("i\u0307", "i"))
"""After lowercasing and NFC: final sigma → sigma, sharp s → ss, i + dot above → i."""


def fold(text: str) -> str:
    """``text`` folded for case-insensitive matching (see the module's rule)."""
    folded = unicodedata.normalize("NFC", text.lower())
    for before, after in FOLDINGS:
        folded = folded.replace(before, after)
    return folded


def fold_sql(expr: str) -> str:
    """The same folding of a SQL string expression, in ClickHouse."""
    sql = f"normalizeUTF8NFC(lowerUTF8({expr}))"
    for before, after in FOLDINGS:
        sql = f"replaceAll({sql}, '{before}', '{after}')"
    return sql


def words(text: str) -> list[str]:
    """The folded words of a search: each must appear."""
    return fold(text).split()


def like_pattern(word: str) -> str:
    """A ``LIKE`` pattern finding ``word`` anywhere (its wildcards taken literally)."""
    escaped = word.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"
