"""Cursor pages shaped like the API's (`data`, `has_more`, `first_id`, `last_id`), for any id'd rows."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from mockserver.errors import InvalidRequestError

DEFAULT_LIMIT = 20
MAX_LIMIT = 1000


def page(rows: Sequence[Mapping[str, Any]], query: Mapping[str, str]) -> dict[str, Any]:
    """One page of `rows` (already in list order) after `after_id` or before `before_id`."""
    limit = _limit(query.get("limit"))
    after, before = query.get("after_id"), query.get("before_id")
    if after and before:
        raise InvalidRequestError("after_id and before_id cannot both be set")
    ids = [row["id"] for row in rows]
    if after:
        start = _index(ids, after, "after_id") + 1
        chosen = rows[start : start + limit]
        has_more = start + limit < len(rows)
    elif before:
        end = _index(ids, before, "before_id")
        chosen = rows[max(0, end - limit) : end]
        has_more = end - limit > 0
    else:
        chosen = rows[:limit]
        has_more = limit < len(rows)
    return {
        "data": list(chosen),
        "has_more": has_more,
        "first_id": chosen[0]["id"] if chosen else None,
        "last_id": chosen[-1]["id"] if chosen else None,
    }


def _limit(raw: str | None) -> int:
    return DEFAULT_LIMIT if raw is None else query_int(raw, "limit", 1, MAX_LIMIT)


def query_int(raw: str, name: str, low: int, high: int) -> int:
    """The query parameter `name` as a whole number in [low, high], or a 400 that names it.

    Only ASCII digits: `str.isdigit` also passes "²", which `int` refuses, and `int` of more than
    4,300 digits raises; both were 500s. The length is checked before anything is converted.
    """
    digits = raw.lstrip("0") or "0"  # leading zeros do not make a number long
    if raw.isascii() and raw.isdigit() and len(digits) <= len(str(high)) and low <= int(digits) <= high:
        return int(digits)
    raise InvalidRequestError(f"{name}: Input should be an integer between {low} and {high}")


def _index(ids: list[str], cursor: str, name: str) -> int:
    try:
        return ids.index(cursor)
    except ValueError:
        raise InvalidRequestError(f"{name}: no object with id {cursor!r} in this list") from None
