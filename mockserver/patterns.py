"""The regular expressions in callers' schemas, matched with a time limit.

A `pattern` or `patternProperties` key is code the caller wrote and the mock runs: `^(a|a)*$`
backtracks 2^n times on n letters and a `!`, and Python's `re` cannot be stopped once it starts (it
holds the interpreter until it is done, so one request would stall every other). The `regex`
package reads the same syntax and takes a `timeout`. `bounded_validator` gives a jsonschema
validator class whose `pattern`, `patternProperties` and `additionalProperties` match here; `screen`
covers the fourth keyword that matches with `re`, `unevaluatedProperties`.
"""

from __future__ import annotations

import contextlib
import functools
import time
from collections.abc import Iterator
from contextvars import ContextVar
from typing import Any

import regex

# A pattern a generated value is held against matches in microseconds; one that needs this long
# is backtracking without end, and one request cannot be allowed more than a few of these.
MATCH_TIMEOUT = 0.05


class _Limit:
    """The `time_limit` in force: its deadline, and the time each pattern has taken under it."""

    __slots__ = ("deadline", "spent")

    def __init__(self, deadline: float) -> None:
        self.deadline = deadline
        self.spent: dict[str, float] = {}

    def count(self, pattern: str, started: float) -> None:
        self.spent[pattern] = self.spent.get(pattern, 0.0) + time.monotonic() - started

    def slowest(self, running: str) -> str:
        # The pattern to blame when time runs out: the one that took it, not the one that happened
        # to be running (a quick pattern can be the last of many slow matches).
        return max(self.spent, key=self.spent.__getitem__, default=running)


# When set, every match of the current answer must be done by its deadline: 50 ms a match still
# allows a schema a few hundred slow ones (a slow pattern times many names).
_LIMIT: ContextVar[_Limit | None] = ContextVar("mockserver_pattern_limit", default=None)


class PatternTimeout(Exception):
    """Matching `pattern` took longer than `MATCH_TIMEOUT`, or the matches ran past the `time_limit`
    of all of them (`cumulative`; `pattern` is then the one that took most of it)."""

    def __init__(self, pattern: str, *, cumulative: bool = False) -> None:
        super().__init__(pattern)
        self.pattern = pattern
        self.cumulative = cumulative


@contextlib.contextmanager
def time_limit(deadline: float) -> Iterator[None]:
    """Every match within the block must end by `deadline` (a `time.monotonic()` reading)."""
    token = _LIMIT.set(_Limit(deadline))
    try:
        yield
    finally:
        _LIMIT.reset(token)


def compile_error(pattern: str) -> str | None:
    """Why `pattern` is not a regular expression the mock can match, or None."""
    try:
        _compiled(pattern)
    except (regex.error, RecursionError, OverflowError, ValueError) as exc:
        return str(exc)
    return None


def search(pattern: str, text: str) -> bool:
    """`re.search(pattern, text)`, raising `PatternTimeout` rather than running on."""
    limit = _LIMIT.get()
    if limit is None:
        try:
            return _compiled(pattern).search(text, timeout=MATCH_TIMEOUT) is not None
        except TimeoutError:
            raise PatternTimeout(pattern) from None
    started = time.monotonic()
    left = limit.deadline - started
    if left <= 0:
        raise PatternTimeout(limit.slowest(pattern), cumulative=True)
    try:
        found = _compiled(pattern).search(text, timeout=min(MATCH_TIMEOUT, left)) is not None
    except TimeoutError:
        limit.count(pattern, started)
        if left >= MATCH_TIMEOUT:
            raise PatternTimeout(pattern) from None
        raise PatternTimeout(limit.slowest(pattern), cumulative=True) from None
    limit.count(pattern, started)
    return found


@functools.lru_cache(maxsize=1024)
def _compiled(pattern: str) -> Any:
    return regex.compile(pattern)


# -- jsonschema keywords, matched here ----------------------------------------------------------------


@functools.cache
def bounded_validator(base: type) -> type:
    """`base` (a jsonschema validator class) with every keyword that matches a regular expression
    going through `search`, so validating a value raises `PatternTimeout` instead of hanging."""
    from jsonschema import validators

    checks = base.VALIDATORS  # type: ignore[attr-defined]
    replaced = {
        "pattern": _pattern,
        "patternProperties": _pattern_properties,
        "additionalProperties": _additional_properties,
    }
    return validators.extend(base, {k: v for k, v in replaced.items() if k in checks})


def _pattern(validator: Any, pattern: Any, instance: Any, schema: Any) -> Iterator[Any]:
    from jsonschema.exceptions import ValidationError

    if validator.is_type(instance, "string") and not search(pattern, instance):
        yield ValidationError(f"{instance!r} does not match {pattern!r}")


def _pattern_properties(validator: Any, patterns: Any, instance: Any, schema: Any) -> Iterator[Any]:
    if not validator.is_type(instance, "object"):
        return
    for pattern, subschema in patterns.items():
        for name, value in instance.items():
            if search(pattern, name):
                yield from validator.descend(value, subschema, path=name, schema_path=pattern)


def _additional_properties(validator: Any, extra: Any, instance: Any, schema: Any) -> Iterator[Any]:
    from jsonschema.exceptions import ValidationError

    if not validator.is_type(instance, "object"):
        return
    declared = schema.get("properties", {})
    patterns = list(schema.get("patternProperties", {}))
    extras = [
        name
        for name in instance
        if name not in declared and not any(search(pattern, name) for pattern in patterns)
    ]
    if validator.is_type(extra, "object"):
        for name in extras:
            yield from validator.descend(instance[name], extra, path=name)
    elif not extra and extras:
        listed = ", ".join(repr(name) for name in sorted(extras))
        if patterns:
            verb = "does" if len(extras) == 1 else "do"
            yield ValidationError(
                f"{listed} {verb} not match any of the regexes: {', '.join(map(repr, sorted(patterns)))}"
            )
        else:
            verb = "was" if len(extras) == 1 else "were"
            yield ValidationError(f"Additional properties are not allowed ({listed} {verb} unexpected)")


def screen(patterns: list[str], value: Any) -> None:
    """Match each of `patterns` against every property name in `value`, raising `PatternTimeout`
    for one that runs on. jsonschema's `unevaluatedProperties` matches `patternProperties` keys with
    `re` deep in its search for evaluated names, which is not worth rewriting for a rare combination:
    a value whose names all match in time here matches in time there too."""
    if not patterns:
        return
    stack = [value]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            for name in node:
                for pattern in patterns:
                    search(pattern, name)
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)


def pattern_keys(schema: Any) -> list[str]:
    """Every `patternProperties` key anywhere in `schema`."""
    found: list[str] = []
    stack = [schema]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            if isinstance(node.get("patternProperties"), dict):
                found.extend(key for key in node["patternProperties"] if isinstance(key, str))
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    return list(dict.fromkeys(found))
