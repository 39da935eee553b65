"""Is a tool's `input_schema` (or an output format's `schema`) a JSON Schema the mock can answer?

The real API refuses an invalid schema with a 400; the mock must too, and must also refuse what its
value generator could not honour in reasonable time (a `minLength` of a billion, or arrays of
`minItems: 80` nested three deep, would stall the event loop for everyone). jsonschema's
meta-schema check does the first part: it is the reference implementation, and a hand-written
validator of JSON Schema would be a project of its own. `check_json_schema` runs when a request is
parsed, for every schema in it; `answer` runs when a reply is planned, for the schema it answers,
and validates what `fake_json` generated against the caller's schema before anyone sees it.
"""

from __future__ import annotations

import copy
import functools
import time
from collections.abc import Iterator
from dataclasses import dataclass
from random import Random
from typing import Any

import orjson

from mockserver.fake_json import GiveUp, generate, kinds, resolve
from mockserver.patterns import (
    MATCH_TIMEOUT,
    PatternTimeout,
    bounded_validator,
    compile_error,
    pattern_keys,
    screen,
    time_limit,
)
from mockserver.rng import SeededRandom

# Beyond these a generated value could not be streamed within any model's output limit anyway.
MAX_GENERATED_SIZE = 10_000  # one keyword's count
MAX_TOTAL_SIZE = 20_000  # values in all, a string counting its minLength
MAX_NESTING = 64  # levels of a schema document
REDRAWS = 4  # draws with the request's seed before the schema's own known-good value is used
PROBES = 8  # draws (fixed seeds, the last one minimal) that decide whether a schema can be answered
# Wall-clock backstops behind the budget, far above what a schema within the caps takes (~0.1 s for
# 9,000 generated properties each checked against a `not`): the probe is once per schema, a redraw
# once per request, and either past its time leaves the event loop to the other requests.
PROBE_SECONDS = 2.0
ANSWER_SECONDS = 0.5
_SIZE_KEYWORDS = ("minLength", "minItems", "minProperties")
_SIZER_VISITS = 100_000
_INFINITE = 10**18


# What reading a schema that is valid but odd (a `$ref` into a list of keywords) may raise.
_ODD_SCHEMA = (TypeError, ValueError, KeyError, IndexError, AttributeError, RecursionError, OverflowError)


class Unanswerable(Exception):
    """The generator finds no value for the schema; the message names the keyword and where."""


def check_json_schema(value: Any) -> Any:
    if not isinstance(value, dict):
        return value  # pydantic reports the wrong type with the field's path
    try:
        canonical = orjson.dumps(value, option=orjson.OPT_SORT_KEYS)
    except orjson.JSONEncodeError:  # beyond orjson's 254 levels
        raise ValueError(f"JSON schema is nested more than {MAX_NESTING} levels deep") from None
    problem = _problem(canonical)
    if problem is not None:
        raise ValueError(problem)
    return value


@functools.lru_cache(maxsize=1024)
def _problem(canonical: bytes) -> str | None:
    # Cached by content: clients send the same tool definitions with every request.
    from jsonschema.exceptions import SchemaError
    from jsonschema.validators import validator_for

    schema = orjson.loads(canonical)
    if deeper_than(schema, MAX_NESTING):  # before anything recurses through it
        return f"JSON schema is nested more than {MAX_NESTING} levels deep"
    dialect = schema.get("$schema")
    if dialect is not None and not isinstance(dialect, str):  # validator_for would look it up as a URI
        shown = _shorten(orjson.dumps(dialect).decode(), 60)
        return f"JSON schema is invalid at $schema: expected a meta-schema URI (a string), got {shown}"
    try:
        validator_for(schema).check_schema(schema)
    except SchemaError as exc:
        where = "/".join(str(part) for part in exc.absolute_path) or "(root)"
        return f"JSON schema is invalid at {where}: {exc.message}"
    return _keyword_problem(schema, "") or _size_problem(schema)


def deeper_than(node: Any, limit: int) -> bool:
    """Does the JSON value `node` nest more than `limit` levels (a scalar is one)?

    Asked of every free-form field of every request (a tool input in a tool loop's history can hold
    thousands of values), so first the cheap question to orjson, in C: can it write `node` inside
    `_ORJSON_DEPTH - limit + 1` more lists? It writes at most `_ORJSON_DEPTH` levels of containers,
    so yes means `node`'s containers nest at most `limit - 1` deep and its scalars at most `limit`.
    Only a no (deep values, or a number orjson cannot write) is walked in Python: iteratively, since
    it may nest too deep to recurse."""
    if limit <= _ORJSON_DEPTH:
        wrapped = node
        for _ in range(_ORJSON_DEPTH - limit + 1):
            wrapped = [wrapped]
        try:
            orjson.dumps(wrapped)
            return False
        except orjson.JSONEncodeError:
            pass
    stack = [(node, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > limit:
            return True
        if isinstance(node, dict):
            stack.extend((child, depth + 1) for child in node.values())
        elif isinstance(node, list):
            stack.extend((child, depth + 1) for child in node)
    return False


# The container nesting orjson writes before it gives up ("Recursion limit reached").
_ORJSON_DEPTH = 254


def _keyword_problem(node: Any, where: str) -> str | None:
    """A count over the cap, or a pattern that is not a regular expression, anywhere in the schema."""
    if isinstance(node, dict):
        place = where or "(root)"
        for keyword in _SIZE_KEYWORDS:
            size = node.get(keyword)
            if isinstance(size, int) and size > MAX_GENERATED_SIZE:
                return f"{keyword} at {place} is {size}; the mock generates at most {MAX_GENERATED_SIZE}"
        patterns = [node.get("pattern")]
        if isinstance(node.get("patternProperties"), dict):
            patterns += list(node["patternProperties"])
        for pattern in patterns:
            if isinstance(pattern, str) and (error := compile_error(pattern)) is not None:
                return f"pattern at {place} is not a valid regular expression: {error}"
        children: Any = node.items()
    elif isinstance(node, list):
        children = enumerate(node)
    else:
        return None
    for key, child in children:
        found = _keyword_problem(child, f"{where}/{key}" if where else str(key))
        if found is not None:
            return found
    return None


# -- the least size of a value ----------------------------------------------------------------------

# (keyword, where, count): the multiplying keywords on the way to the heaviest part of a value.
Chain = tuple[tuple[str, str, int | None], ...]


@dataclass(frozen=True, slots=True)
class _Size:
    least: int
    chain: Chain = ()
    cut: bool = False  # a `$ref` cycle was cut below: not memoised, another way in may differ


class _TooComplex(Exception):
    pass


class _Sizer:
    """The least size of a value for each subschema, following what the generator must produce:
    required properties, `minItems` items, `minProperties` members, `minLength` characters. Sizes
    multiply along nested counts, which is what makes a small schema ask for an enormous value."""

    def __init__(self, root: Any) -> None:
        self.root = root
        self.memo: dict[int, _Size] = {}
        self.path: list[int] = []
        self.visits = 0

    def least(self, node: Any) -> int:
        try:
            return self.measure(node, "").least
        except _TooComplex:
            return _INFINITE

    def measure(self, node: Any, where: str) -> _Size:
        if not isinstance(node, dict):
            return _Size(0 if node is False else 1)
        key = id(node)
        if key in self.memo:
            return self.memo[key]
        if key in self.path:  # the value would have to contain itself
            return _Size(_INFINITE, (("$ref", where or "(root)", None),), cut=True)
        self.visits += 1
        if self.visits > _SIZER_VISITS:
            raise _TooComplex
        self.path.append(key)
        try:
            size = self._measure(node, where)
        finally:
            self.path.pop()
        if not size.cut:
            self.memo[key] = size
        return size

    def _measure(self, node: dict[str, Any], where: str) -> _Size:
        parts = [self._own(node, where)]
        if "$ref" in node:
            target = resolve(node["$ref"], self.root)
            if target is not None:
                parts.append(self.measure(target, _pointer_place(node["$ref"])))
        for index, part in enumerate(_listed(node.get("allOf"))):
            parts.append(self.measure(part, _join(where, f"allOf/{index}")))
        size = max(parts, key=lambda s: s.least)
        cut = any(part.cut for part in parts)
        for keyword in ("anyOf", "oneOf"):
            options = [
                self.measure(option, _join(where, f"{keyword}/{index}"))
                for index, option in enumerate(_listed(node.get(keyword)))
            ]
            if options:
                smallest = min(options, key=lambda s: s.least)
                cut = cut or any(option.cut for option in options)
                if smallest.least > size.least:
                    size = smallest
        return _Size(size.least, size.chain, cut)

    def _own(self, node: dict[str, Any], where: str) -> _Size:
        if "const" in node or "enum" in node:
            return _Size(1)
        kind = (kinds(node) or ["null"])[0]
        if kind == "object":
            return self._object(node, where)
        if kind == "array":
            return self._array(node, where)
        if kind == "string":
            length = _count(node.get("minLength"))
            return _Size(max(1, length), (("minLength", where or "(root)", length),) if length > 1 else ())
        return _Size(1)

    def _object(self, node: dict[str, Any], where: str) -> _Size:
        properties = node.get("properties") if isinstance(node.get("properties"), dict) else {}
        required = [name for name in dict.fromkeys(_listed(node.get("required"))) if isinstance(name, str)]
        members = [
            self.measure(properties[name], _join(where, f"properties/{name}"))
            if name in properties
            else _Size(1)
            for name in required
        ]
        extra = max(0, _count(node.get("minProperties")) - len(required))
        if extra:
            other = node.get("additionalProperties", True)
            each = self.measure(other, _join(where, "additionalProperties"))
            members.append(_times(each, extra, "minProperties", where))
        return _total(members)

    def _array(self, node: dict[str, Any], where: str) -> _Size:
        count = _count(node.get("minItems"))
        items = node.get("items")
        prefix = items if isinstance(items, list) else _listed(node.get("prefixItems"))
        rest = (
            node.get("additionalItems", True)
            if isinstance(items, list)
            else (items if items is not None else True)
        )
        rest_place = _join(where, "additionalItems" if isinstance(items, list) else "items")
        members = [
            self.measure(
                sub, _join(where, f"{'items' if isinstance(items, list) else 'prefixItems'}/{index}")
            )
            for index, sub in enumerate(prefix[:count])
        ]
        if count > len(prefix):
            members.append(_times(self.measure(rest, rest_place), count - len(prefix), "minItems", where))
        return _total(members)


def _total(members: list[_Size]) -> _Size:
    """One container plus its members; the chain is its heaviest member's."""
    least = min(_INFINITE, 1 + sum(member.least for member in members))
    heaviest = max(members, key=lambda s: s.least, default=_Size(0))
    return _Size(least, heaviest.chain, any(member.cut for member in members))


def _times(each: _Size, count: int, keyword: str, where: str) -> _Size:
    return _Size(
        min(_INFINITE, each.least * count), ((keyword, where or "(root)", count), *each.chain), each.cut
    )


def _size_problem(schema: Any) -> str | None:
    sizer = _Sizer(schema)
    try:
        size = sizer.measure(schema, "")
    except _ODD_SCHEMA:
        return None  # what the sizer cannot read, the generator's own budget still bounds
    except _TooComplex:
        return f"JSON schema is too complex for the mock to size (more than {_SIZER_VISITS} subschemas)"
    if size.least <= MAX_TOTAL_SIZE:
        return None
    *outer, (keyword, where, count) = size.chain or (("schema", "(root)", None),)
    if count is None:
        return (
            f"{keyword} at {where} makes a value contain itself: no finite value satisfies the schema, "
            "so the mock cannot generate one"
        )
    inside = ", inside " + " and ".join(f"{k} {n} at {w}" for k, w, n in reversed(outer)) if outer else ""
    return (
        f"{keyword} at {where} is {count}{inside}: a value needs at least {size.least:,} values in all; "
        f"the mock generates at most {MAX_TOTAL_SIZE:,} (a string counts its minLength)"
    )


def _pointer_place(ref: Any) -> str:
    pointer = ref[2:] if isinstance(ref, str) and ref.startswith("#/") else ""
    return pointer or "(root)"


def _join(where: str, step: str) -> str:
    return f"{where}/{step}" if where else step


def _listed(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _count(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


# -- answering: a value that validates ---------------------------------------------------------------


def unanswerable(schema: Any) -> str | None:
    """Why the mock cannot answer `schema` (naming the keyword and where), or None: a property of
    the schema alone, whatever the seed."""
    return _answerer(orjson.dumps(schema)).problem


def answer(schema: Any, rng: Random) -> Any:
    """A value valid against `schema`, drawn with `rng` (the same seed gives the same value).

    Draws again (a bounded number of times) when a value breaks the schema, then falls back to the
    value the schema's own probe found; raises `Unanswerable` when the probe found none.
    """
    answerer = _answerer(orjson.dumps(schema))
    if answerer.problem is not None:
        raise Unanswerable(answerer.problem)
    deadline = time.monotonic() + ANSWER_SECONDS
    with time_limit(deadline):
        for _ in range(REDRAWS):
            try:
                value = answerer.draw(rng, deadline=deadline)
                if answerer.valid(value):
                    return value
            except GiveUp:
                continue
            except PatternTimeout:
                break  # another draw would only meet the same pattern again
    return copy.deepcopy(answerer.fallback)


@functools.lru_cache(maxsize=512)
def _answerer(exact: bytes) -> _Answerer:
    # Keyed by the exact bytes, key order included: the order of properties is the order drawn in.
    return _Answerer(orjson.loads(exact))


class _Answerer:
    """One schema, compiled once: its validator, its sizes, and a value known to satisfy it."""

    def __init__(self, schema: Any) -> None:
        from jsonschema.validators import validator_for
        from referencing import Registry

        self.schema = schema
        # An empty registry: a `$ref` to anywhere but this document is unresolvable, never fetched.
        self.validator = bounded_validator(validator_for(schema))(schema, registry=Registry())
        # What `unevaluatedProperties` matches with `re` is matched first where it has a time limit.
        self.screened = pattern_keys(schema) if _mentions(schema, "unevaluatedProperties") else []
        self.sizer = _Sizer(schema)
        self.problem: str | None = None
        self.fallback: Any = None
        self._probe()

    def draw(self, rng: Random, *, minimal: bool = False, deadline: float | None = None) -> Any:
        try:
            return generate(
                self.schema,
                rng,
                check=self.check,
                least_size=self.sizer.least,
                minimal=minimal,
                deadline=deadline,
            )
        except _ODD_SCHEMA as exc:  # a valid but strange schema (a $ref into a non-schema): no 500
            raise GiveUp(f"the generator cannot read this schema ({type(exc).__name__})") from exc

    def valid(self, value: Any) -> bool:
        screen(self.screened, value)
        try:
            return bool(self.validator.is_valid(value))
        except PatternTimeout:
            raise
        except Exception:  # an unresolvable $ref, a $ref loop: the probe reports it
            return False

    def check(self, subschema: Any, value: Any) -> bool:
        screen(self.screened, value)
        try:
            return bool(self.validator.evolve(schema=subschema).is_valid(value))
        except PatternTimeout:
            raise
        except Exception:
            return False

    def _probe(self) -> None:
        deadline = time.monotonic() + PROBE_SECONDS
        try:
            with time_limit(deadline):  # all the matches of the probe together, its explaining too
                self.problem = self._find_fallback(deadline)
        except PatternTimeout as exc:
            self.problem = _too_slow(self.schema, exc)

    def _find_fallback(self, deadline: float) -> str | None:
        """Draws until one is valid (kept as the fallback); else why none is, as a problem."""
        drawn: list[Any] = []  # the first invalid value, if any draw finished
        gave_up: GiveUp | None = None
        for seed in range(PROBES):
            try:
                value = self.draw(SeededRandom(seed), minimal=seed == PROBES - 1, deadline=deadline)
                if self.valid(value):
                    self.fallback = value
                    return None
            except GiveUp as exc:
                gave_up = gave_up or exc
                continue
            drawn = drawn or [value]
        if drawn:
            return self._explain(drawn[0])
        return f"the mock cannot generate a value for this schema: {gave_up}"

    def _explain(self, value: Any) -> str:
        from jsonschema.exceptions import best_match

        try:
            error = best_match(self.validator.iter_errors(value))
        except RecursionError:
            return "$ref refers back to itself without consuming the value: the schema cannot be checked"
        except Exception as exc:  # referencing's Unresolvable, wrapped by jsonschema
            ref = getattr(exc, "ref", None)
            if ref is None:  # resolved, to something jsonschema cannot read as a schema
                return _not_a_schema(self.schema) or "the mock cannot check a value against this schema"
            return (
                f"$ref {ref!r} cannot be resolved; the mock follows only references within the schema (#/...)"
            )
        if error is None:
            return "the mock cannot generate a value for this schema"
        path = list(error.absolute_schema_path)
        if error.validator is not None:
            keyword, path = str(error.validator), path[:-1]  # the path ends with the keyword
        else:  # a `false` subschema; jsonschema leaves the property's name out of its paths
            keyword = "false schema"
            if path and path[-1] == "properties":
                path += self._false_property(path)[:1]
        where = "/".join(str(part) for part in path)
        return (
            f"{keyword} at {where or '(root)'}: the mock found no value that satisfies it "
            f"({_shorten(error.message)})"
        )

    def _false_property(self, path: list[Any]) -> list[str]:
        """The names whose subschema is `false` in the `properties` at `path` (through no `$ref`)."""
        node = self.schema
        try:
            for part in path:
                node = node[part]
        except (KeyError, IndexError, TypeError):
            return []
        return [name for name, sub in node.items() if sub is False] if isinstance(node, dict) else []


def _too_slow(schema: Any, timeout: PatternTimeout) -> str:
    keyword, where = _pattern_place(schema, timeout.pattern)
    shown = _shorten(repr(timeout.pattern), 80)
    if timeout.cumulative:
        return (
            f"{keyword} at {where}: matching the pattern {shown} against the generated strings takes "
            f"longer in all than the {PROBE_SECONDS:.0f} s the mock gives one schema (it backtracks), "
            "so the mock cannot answer it"
        )
    return (
        f"{keyword} at {where}: the pattern {shown} takes longer than "
        f"{MATCH_TIMEOUT * 1000:.0f} ms to match a generated string (it backtracks without end), "
        "so the mock cannot check a value against it"
    )


def _pattern_place(schema: Any, pattern: str) -> tuple[str, str]:
    """The keyword (`pattern` or `patternProperties`) that holds `pattern`, and where."""
    for node, where in _objects(schema):
        if node.get("pattern") == pattern:
            return "pattern", where or "(root)"
        if isinstance(node.get("patternProperties"), dict) and pattern in node["patternProperties"]:
            return "patternProperties", where or "(root)"
    return "pattern", "(root)"


def _not_a_schema(schema: Any) -> str | None:
    """Names the first local `$ref` that points at a value that is not a schema (`#/required`)."""
    for node, where in _objects(schema):
        ref = node.get("$ref")
        target = resolve(ref, schema)
        if isinstance(ref, str) and target is not None and not isinstance(target, dict | bool):
            kind = "an array" if isinstance(target, list) else f"the value {_shorten(repr(target), 40)}"
            return f"$ref at {where or '(root)'}: {ref!r} points at {kind}, not a schema"
    return None


def _mentions(schema: Any, keyword: str) -> bool:
    return any(keyword in node for node, _ in _objects(schema))


def _objects(schema: Any) -> Iterator[tuple[dict[str, Any], str]]:
    """Every object in `schema`, in document order, with where it stands ("properties/a"; "" at the
    root)."""
    stack: list[tuple[Any, str]] = [(schema, "")]
    while stack:
        node, where = stack.pop()
        if isinstance(node, dict):
            yield node, where
            children = [(child, _join(where, str(key))) for key, child in node.items()]
        elif isinstance(node, list):
            children = [(child, _join(where, str(index))) for index, child in enumerate(node)]
        else:
            continue
        stack.extend(reversed(children))


def _shorten(text: str, limit: int = 200) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."
