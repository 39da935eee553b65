"""The regular expressions in callers' schemas, matched with a time limit.

A `pattern` or `patternProperties` key is code the caller wrote and the mock runs: `^(a|a)*$`
backtracks 2^n times on n letters and a `!`, and Python's `re` cannot be stopped once it starts (it
holds the interpreter until it is done, so one request would stall every other). The `regex`
package reads the same syntax and takes a `timeout`. `bounded_validator` gives a jsonschema
validator class whose `pattern`, `patternProperties` and `additionalProperties` match here; `screen`
covers the fourth keyword that matches with `re`, `unevaluatedProperties`.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from typing import Any

import regex

# A pattern a generated value is held against matches in microseconds; one that needs this long
# is backtracking without end, and one request cannot be allowed more than a few of these.
MATCH_TIMEOUT = 0.05


class PatternTimeout(Exception):
    """Matching `pattern` took longer than `MATCH_TIMEOUT`: the schema cannot be answered in time."""

    def __init__(self, pattern: str) -> None:
        super().__init__(pattern)
        self.pattern = pattern


def compile_error(pattern: str) -> str | None:
    """Why `pattern` is not a regular expression the mock can match, or None."""
    try:
        _compiled(pattern)
    except (regex.error, RecursionError, OverflowError, ValueError) as exc:
        return str(exc)
    return None


def search(pattern: str, text: str) -> bool:
    """`re.search(pattern, text)`, raising `PatternTimeout` rather than running on."""
    try:
        return _compiled(pattern).search(text, timeout=MATCH_TIMEOUT) is not None
    except TimeoutError:
        raise PatternTimeout(pattern) from None


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
