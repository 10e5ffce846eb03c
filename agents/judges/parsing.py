"""Parsing an MLLM judge's free-text answer into a ranking of the candidates."""

from __future__ import annotations

import json
import re
from typing import Any


_ITEM = r"(?:(?:video|vid|candidate|clip)[ \t]*(?:no\.?|number)?[ \t]*#?[ \t]*)?\d+"
_SEP = r"(?:[ \t]*(?:>+|,|;|->|=>|→|\band\b|\bthen\b|\bfollowed[ \t]+by\b)[ \t]*|[ \t]+)"  # within a line
_CHAIN = re.compile(rf"{_ITEM}(?:{_SEP}{_ITEM})*", re.IGNORECASE)
_KEYWORD = re.compile(r"\brank(?:ing|ed|s)?\b", re.IGNORECASE)
_LIST_LINE = re.compile(
    r"^\s*(?:[-*•]\s*)?(?:rank(?:ing)?\s*)?#?(\d+)\s*(?:[.):]|st|nd|rd|th)\s*(?:place)?\s*[:\-–]?\s*"
    r"(?:(?:video|vid|candidate|clip)\s*#?\s*)?(\d+)\b",
    re.IGNORECASE)


def _as_ranking(numbers: list[int], n: int) -> list[int] | None:
    """1-based numbers -> 0-based ranking, only when they are a permutation of 1..n."""
    if len(numbers) == n and sorted(numbers) == list(range(1, n + 1)):
        return [k - 1 for k in numbers]
    return None


def _json_numbers(value: Any) -> list[int] | None:
    if isinstance(value, dict):
        for key, inner in value.items():
            if isinstance(key, str) and key.strip().lower() in {"ranking", "rank", "order", "ranked"}:
                return _json_numbers(inner)
        return None
    if not isinstance(value, list):
        return None
    out = []
    for item in value:
        if isinstance(item, bool):
            return None
        if isinstance(item, int):
            out.append(item)
        elif isinstance(item, float) and item.is_integer():
            out.append(int(item))
        elif isinstance(item, str) and len(found := re.findall(r"\d+", item)) == 1:
            out.append(int(found[0]))
        else:
            return None
    return out


def _from_json(text: str, n: int) -> list[int] | None:
    decoder = json.JSONDecoder()
    for match in re.finditer(r"[\[{]", text):
        try:
            value, _ = decoder.raw_decode(text, match.start())
        except ValueError:
            continue
        numbers = _json_numbers(value)
        if numbers is not None and (ranking := _as_ranking(numbers, n)) is not None:
            return ranking
    return None


def _from_list_lines(text: str, n: int) -> list[int] | None:
    entries: dict[int, int] = {}
    for line in text.splitlines():
        if m := _LIST_LINE.match(line):
            position, video = int(m.group(1)), int(m.group(2))
            if position in entries:
                return None
            entries[position] = video
    if sorted(entries) != list(range(1, n + 1)):
        return None
    return _as_ranking([entries[p] for p in range(1, n + 1)], n)


def _chain_ranking(chain: str, n: int) -> list[int] | None:
    return _as_ranking([int(d) for d in re.findall(r"\d+", chain)], n)


def _chains(text: str, n: int) -> list[list[int]]:
    return [ranking for m in _CHAIN.finditer(text) if (ranking := _chain_ranking(m.group(0), n)) is not None]


def parse_ranking(text: str, n: int) -> list[int] | None:
    """Parse a judge's answer into candidate indices (0-based, best first), or None.

    Understands ``Ranking: 2 > 1 > 4 > 3``, ``[3, 1, 2, 4]``, ``{"ranking": [...]}``,
    ``Video 2, Video 4, Video 1, Video 3``, ``3 > 1 > 2 > 4`` and numbered lists
    (``1. Video 3`` …); video numbers in the text are 1-based.  The result must be a permutation
    of all ``n`` candidates: partial, duplicated, out-of-range or prose-only answers give None.
    """
    if not isinstance(text, str) or n < 1:
        return None
    clean = re.sub(r"[*_`]", "", text)
    for parse in (_from_json, _from_list_lines):
        if (ranking := parse(clean, n)) is not None:
            return ranking
    keywords = list(_KEYWORD.finditer(clean))
    for kw in reversed(keywords):  # the last "Ranking: ..." is the answer: the first chain after it
        first = _CHAIN.search(clean, kw.end())
        if first and (ranking := _chain_ranking(first.group(0), n)) is not None:
            return ranking
    found = _chains(clean, n)
    return found[-1] if found else None
