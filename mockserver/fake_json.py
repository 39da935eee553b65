"""Seeded values for a JSON Schema: tool inputs and structured outputs.

The generator reads what tool and output schemas ask for: types, `properties`/`required`,
`additionalProperties`/`patternProperties`, `minProperties`/`maxProperties`, `dependentRequired`,
`enum`/`const`, numeric bounds and `multipleOf`, string lengths, `pattern` and common formats, arrays
with `prefixItems`/`items`/`contains`/`uniqueItems`, local `$ref` (JSON pointers with `~0`/`~1` and
percent escapes), `allOf` (merged into one schema), `anyOf`, `oneOf` (exactly one), `not` and
`if`/`then`/`else`. It aims rather than proves: `json_schema.answer` validates each value with
jsonschema and draws again when it misses. Every draw spends from a budget, so no schema can make it
run away (a `$ref` loop, an exploding product of counts); a draw that runs out raises `GiveUp`, as
does one still running at its deadline (the budget counts values, not the time a check of one takes).
"""

from __future__ import annotations

import copy
import math
import re
import string
import time
from collections.abc import Callable, Iterator
from fractions import Fraction
from random import Random

# CPython's own regex parser, private since 3.11 (`sre_parse` before): the regex-to-string libraries
# (rstr's xeger, exrex) sit on it too, and hypothesis's from_regex is test tooling. Opcodes are
# matched by name and every value is validated against the schema anyway, so a change in a later
# Python shows as a pattern the mock refuses (a 400 naming it), never a wrong value.
from re import _parser as regex_parser  # type: ignore[attr-defined]
from typing import Any
from urllib.parse import unquote

from mockserver import patterns

WORDS = ("alpha", "bravo", "delta", "echo", "nova", "orbit", "pixel", "quartz", "river", "solar", "tango")
BUDGET = 40_000  # work units per draw: a generated value is one, a string one more per 64 characters
SOFT_DEPTH = 4  # deeper than this, or past half the budget, only what the schema requires
MAX_DEPTH = 64  # a value nested deeper is not attempted
MAX_HOPS = 32  # $ref/allOf/anyOf steps taken for one value before it must produce something
ATTEMPTS = 4  # tries at a value that must pass `not`, `oneOf` or `if` checks
_CLOCK_EVERY = 256  # spends between looks at the clock
_INT_LIMIT = 2**63 - 1  # JSON numbers must stay what orjson can write: 64-bit integers, finite floats
_FLOAT_LIMIT = 1e300
_PATTERN_REPEAT = 3  # `*`, `+` and `{n,}` repeat at most this many times beyond their minimum
_PATTERN_LENGTH = 10_000
_ALPHABET = string.ascii_letters + string.digits + "_-. "

# (subschema, value) -> does the value satisfy the subschema (resolved against the whole schema)?
Check = Callable[[Any, Any], bool]
# subschema -> the least size a value for it has, in the units of `BUDGET`.
LeastSize = Callable[[Any], int]

_COMPOSITION = frozenset(("$ref", "allOf", "anyOf", "oneOf", "not", "if", "then", "else"))
_OBJECT_KEYS = ("properties", "required", "additionalProperties", "patternProperties", "minProperties")
_ARRAY_KEYS = ("items", "prefixItems", "minItems", "maxItems", "contains", "uniqueItems")
_STRING_KEYS = ("minLength", "maxLength", "pattern", "format")
_NUMBER_KEYS = ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf")
_ANY_KIND = ("string", "integer", "number", "boolean", "object", "array", "null")


class GiveUp(Exception):
    """This draw cannot finish within the generator's bounds (budget, depth, `$ref` hops)."""


def generate(
    schema: Any,
    rng: Random,
    *,
    check: Check | None = None,
    least_size: LeastSize | None = None,
    minimal: bool = False,
    deadline: float | None = None,
) -> Any:
    """A value drawn for `schema`; `check` lets it test `not`/`oneOf`/`if` choices as it goes,
    `least_size` lets it leave out optional parts too large for what is left of the budget,
    `minimal` makes it generate only what the schema requires, and past `deadline` (a
    `time.monotonic()` reading) it gives up."""
    return _Generator(schema, rng, check, least_size, minimal, deadline).value(schema, 0)


def kinds(schema: dict[str, Any]) -> list[str]:
    """The JSON types a value for `schema` may take, in the order the generator prefers them."""
    declared = schema.get("type")
    if isinstance(declared, str):
        found = [declared]
    elif isinstance(declared, list):
        found = [kind for kind in declared if isinstance(kind, str)]
    elif any(key in schema for key in _OBJECT_KEYS):
        found = ["object"]
    elif any(key in schema for key in _ARRAY_KEYS):
        found = ["array"]
    elif any(key in schema for key in _STRING_KEYS):
        found = ["string"]
    elif any(key in schema for key in _NUMBER_KEYS):
        found = ["number"]
    else:
        found = list(_ANY_KIND)
    return sorted(found, key=lambda kind: kind == "null")  # a value is more use than a null


def resolve(ref: Any, root: Any) -> Any:
    """The subschema a local `$ref` ("#/$defs/a~1b") points at; None when it is not a local pointer."""
    if not isinstance(ref, str) or not ref.startswith("#"):
        return None
    pointer = unquote(ref[1:])  # a URI fragment: percent escapes first, then JSON pointer escapes
    if not pointer:
        return root
    if not pointer.startswith("/"):
        return None  # a named anchor: not followed
    node = root
    for token in pointer[1:].split("/"):
        token = token.replace("~1", "/").replace("~0", "~")
        if isinstance(node, dict) and token in node:
            node = node[token]
        elif isinstance(node, list) and token.isdigit() and int(token) < len(node):
            node = node[int(token)]
        else:
            return None
    return node


class _Generator:
    def __init__(
        self,
        root: Any,
        rng: Random,
        check: Check | None,
        least_size: LeastSize | None,
        minimal: bool,
        deadline: float | None,
    ) -> None:
        self.root = root
        self.rng = rng
        self.check = check
        self.least_size = least_size
        self.minimal = minimal
        self.deadline = deadline
        self.left = BUDGET
        self.spends = 0

    def spend(self, units: int = 1) -> None:
        self.left -= units
        if self.left < 0:
            raise GiveUp("the value grows beyond the generator's budget")
        self.spends += 1
        if self.deadline is not None and self.spends % _CLOCK_EVERY == 0 and time.monotonic() > self.deadline:
            raise GiveUp("the value takes too long to generate")

    def frugal(self, depth: int) -> bool:
        return self.minimal or depth > SOFT_DEPTH or self.left < BUDGET // 2

    def affordable(self, schema: Any) -> bool:
        return self.least_size is None or self.least_size(schema) * 4 < self.left

    # -- one value ----------------------------------------------------------------------------

    def value(self, schema: Any, depth: int) -> Any:
        if depth > MAX_DEPTH:
            raise GiveUp(f"values nest deeper than {MAX_DEPTH} levels")
        self.spend()
        if isinstance(schema, dict) and _COMPOSITION.isdisjoint(schema):
            return self.draw(schema, depth)  # most subschemas: nothing to resolve or check
        value = None
        for _ in range(ATTEMPTS):
            checks: list[tuple[str, Any]] = []
            flat = self.flatten(schema, checks, 0)
            before = self.left
            value = self.draw(flat, depth)
            if not checks or self.check is None:
                return value
            # Checking costs about the value's size for each subschema it is held against.
            self.spend((before - self.left + 1) * sum(_check_width(c) for c in checks))
            if all(self.passes(check, value) for check in checks):
                return value
        return value  # the caller's validation names what it breaks

    def passes(self, check: tuple[str, Any], value: Any) -> bool:
        assert self.check is not None
        kind, payload = check
        if kind == "not":
            return not self.check(payload, value)
        if kind == "oneOf":
            return sum(1 for option in payload if self.check(option, value)) == 1
        condition, expected = payload
        return self.check(condition, value) is expected

    # -- composition: one plain schema for this value ------------------------------------------

    def flatten(self, schema: Any, checks: list[tuple[str, Any]], hops: int) -> Any:
        """`schema` with `$ref`, `allOf`, `anyOf`, `oneOf` and `if` resolved into one schema (a
        branch drawn where there is a choice); what must still be checked goes into `checks`."""
        if schema is True or not isinstance(schema, dict):
            return {} if schema is not False else False
        if _COMPOSITION.isdisjoint(schema):
            return schema
        if hops > MAX_HOPS:
            raise GiveUp("$ref and composition go round in a loop")
        self.spend()
        merged: Any = {key: sub for key, sub in schema.items() if key not in _COMPOSITION}
        if "$ref" in schema:
            target = resolve(schema["$ref"], self.root)
            merged = _merge(merged, self.flatten({} if target is None else target, checks, hops + 1))
        for part in _listed(schema.get("allOf")):
            merged = _merge(merged, self.flatten(part, checks, hops + 1))
        for key in ("anyOf", "oneOf"):
            options = _listed(schema.get(key))
            if options:
                merged = _merge(merged, self.flatten(self.choose(options), checks, hops + 1))
                if key == "oneOf" and len(options) > 1:
                    checks.append(("oneOf", options))
        negated = schema.get("not")
        if isinstance(negated, dict) and set(negated) == {"not"}:  # not-not: what the inner one says
            merged = _merge(merged, self.flatten(negated["not"], checks, hops + 1))
        elif "not" in schema:
            checks.append(("not", schema["not"]))
            merged = _merge(merged, {"not": schema["not"]})
        if "if" in schema and ("then" in schema or "else" in schema):
            holds = "else" not in schema or ("then" in schema and self.rng.random() < 0.5)
            branch = schema.get("then" if holds else "else", True)
            merged = _merge(merged, self.flatten(branch, checks, hops + 1))
            checks.append(("if", (schema["if"], holds)))
        return merged

    def choose(self, options: list[Any]) -> Any:
        usable = [option for option in options if option is not False]
        if not usable:
            return False
        # A value rather than a null, as a model filling in an optional field would.
        preferred = [option for option in usable if not _only_null(option)] or usable
        if self.minimal and self.least_size is not None:
            return min(preferred, key=self.least_size)
        return self.rng.choice(preferred)

    # -- plain schemas -------------------------------------------------------------------------

    def draw(self, schema: Any, depth: int) -> Any:
        if schema is False:
            return None  # nothing satisfies it; validation says where
        if "const" in schema:
            return copy.deepcopy(schema["const"])
        enum = schema.get("enum")
        if isinstance(enum, list) and enum:
            return copy.deepcopy(self.rng.choice(self.fitting(enum, schema)))
        allowed = [kind for kind in kinds(schema) if kind not in _excluded_kinds(schema.get("not"))]
        if not allowed:
            return None
        return _BY_KIND.get(allowed[0], _Generator.string)(self, schema, depth)

    def fitting(self, enum: list[Any], schema: dict[str, Any]) -> list[Any]:
        """The members of `enum` that also satisfy the rest of `schema`."""
        rest = {key: sub for key, sub in schema.items() if key != "enum" and key not in _ANNOTATIONS}
        if not rest:
            return enum
        if rest.keys() == {"type"}:  # the usual case, answered without the validator
            return [value for value in enum if _has_type(value, rest["type"])] or enum
        if self.check is None:
            return enum
        self.spend(len(enum))
        return [value for value in enum if self.check(rest, value)] or enum

    def object(self, schema: dict[str, Any], depth: int) -> dict[str, Any]:
        properties = _mapping(schema.get("properties"))
        required = [name for name in _listed(schema.get("required")) if isinstance(name, str)]
        needs = _dependencies(schema)
        optional_allowed = _mapping(schema.get("dependentSchemas"))
        names = list(dict.fromkeys(required))
        if not self.frugal(depth):
            picked = set(names)
            for name, sub in properties.items():
                if name in picked or name in optional_allowed or self.rng.random() >= 0.5:
                    continue
                if self.affordable(sub):
                    names.append(name)
        names = _closed(names, needs)
        high = schema.get("maxProperties")
        if isinstance(high, int) and len(names) > high:
            kept = set(_closed(required, needs))
            optional = [name for name in names if name not in kept]
            dropped = set(optional[max(0, len(optional) - (len(names) - high)) :])  # the last ones
            names = [name for name in names if name not in dropped]
        low = schema.get("minProperties")
        if isinstance(low, int) and len(names) < low:
            taken = set(names)  # shared with `spare_names`, so it never offers a name already here
            spare = self.spare_names(schema, properties, taken)
            while len(names) < low:
                name = next(spare, None)
                if name is None:
                    break
                _close_into(names, taken, [name], needs)
        for trigger in names:
            if trigger in optional_allowed:
                schema = _merge(schema, self.flatten(optional_allowed[trigger], [], 0))
        return {name: self.value(_property_schema(schema, name), depth + 1) for name in names}

    def spare_names(
        self, schema: dict[str, Any], properties: dict[str, Any], taken: set[str]
    ) -> Iterator[str]:
        """Names to add for `minProperties`, none in `taken` (which the caller keeps up to date):
        declared ones first, then new ones if allowed."""
        yield from (name for name in properties if name not in taken)
        if schema.get("additionalProperties") is False and not schema.get("patternProperties"):
            return
        name_patterns = list(_mapping(schema.get("patternProperties")))
        namer = schema.get("propertyNames")
        for index in range(1, 1 + 10_000):
            self.spend()
            if name_patterns:
                name = _from_pattern(name_patterns[index % len(name_patterns)], self.rng)
            elif isinstance(namer, dict) and namer:
                name = self.string(self.flatten(namer, [], 0), depth=0)
            else:
                name = f"{self.rng.choice(WORDS)}_{index}"
            if name not in taken and name not in properties:
                yield name

    def array(self, schema: dict[str, Any], depth: int) -> list[Any]:
        items = schema.get("items")
        if isinstance(items, list):  # drafts before 2020-12: a tuple, then additionalItems
            prefix, rest = items, schema.get("additionalItems", True)
        else:
            prefix = _listed(schema.get("prefixItems"))
            rest = items if items is not None else ({"type": "string"} if not prefix else True)
        low = _count(schema.get("minItems"), 0)
        high = _count(schema.get("maxItems"), math.inf)
        if rest is False:
            high = min(high, len(prefix))
        if self.frugal(depth):
            target = low
        else:
            target = max(self.rng.randint(low, max(low, int(min(high, max(low, 3))))), min(len(prefix), high))
            if not self.affordable(rest):
                target = max(low, min(target, len(prefix)))
        contains = schema.get("contains")
        wanted = _count(schema.get("minContains"), 1) if contains is not None else 0
        target = max(target, min(len(prefix) + wanted, high) if wanted else 0)
        unique = schema.get("uniqueItems") is True
        out: list[Any] = []
        for _ in range(2 * target + 8):  # bounded: unique items from a small domain may never suffice
            if len(out) >= target:
                break
            index = len(out)
            sub = prefix[index] if index < len(prefix) else rest
            if contains is not None and len(prefix) <= index < len(prefix) + wanted:
                sub = {"allOf": [sub, contains]}
            value = self.value(sub, depth + 1)
            if not unique or value not in out:
                out.append(value)
        return out

    def string(self, schema: dict[str, Any], depth: int) -> str:
        pattern = schema.get("pattern")
        low = _count(schema.get("minLength"), 0)
        high = _count(schema.get("maxLength"), math.inf)
        value = ""
        for _ in range(ATTEMPTS):
            if isinstance(pattern, str):
                value = _from_pattern(pattern, self.rng)
                if low <= len(value) <= high:
                    break
                continue
            value = _formatted(schema.get("format"), self.rng)
            if len(value) < low:
                value += "x" * (low - len(value))
            value = value[: int(high)] if high < len(value) else value
            break
        self.spend(len(value) // 64)
        return value

    def integer(self, schema: dict[str, Any], depth: int) -> int:
        low, high = _int_bounds(schema)
        step = _integer_step(schema.get("multipleOf"))
        first = -(-low // step) * step
        last = high // step * step
        if first > last:
            # No multiple in range (or none that fits in 64 bits, which is all orjson writes): a
            # bound it can write, and validation names the keyword it breaks.
            return max(-_INT_LIMIT, min(_INT_LIMIT, first))
        for _ in range(ATTEMPTS):
            value = first + step * self.rng.randint(0, (last - first) // step)
            if _is_multiple(value, schema.get("multipleOf")):
                return value
        return first

    def number(self, schema: dict[str, Any], depth: int) -> float | int:
        low, low_open, high, high_open = _float_bounds(schema)
        step = schema.get("multipleOf")

        def inside(value: float) -> bool:
            above = value > low if low_open else value >= low
            below = value < high if high_open else value <= high
            return above and below

        if isinstance(step, int | float) and step > 0:
            first, last = math.ceil(low / step), math.floor(high / step)
            for k in (*(self.rng.randint(first, last) for _ in range(ATTEMPTS) if first <= last), 0):
                for value in (round(k * step, 12), k * step):
                    if inside(value) and _is_multiple(value, step):
                        return value
            return first * step
        value = round(self.rng.uniform(low, high), 2)
        if not inside(value):
            value = (low + high) / 2
        return value

    def boolean(self, schema: dict[str, Any], depth: int) -> bool:
        return self.rng.random() < 0.5

    def null(self, schema: dict[str, Any], depth: int) -> None:
        return None


_BY_KIND: dict[str, Callable[[_Generator, dict[str, Any], int], Any]] = {
    "object": _Generator.object,
    "array": _Generator.array,
    "string": _Generator.string,
    "integer": _Generator.integer,
    "number": _Generator.number,
    "boolean": _Generator.boolean,
    "null": _Generator.null,
}


# -- merging schemas (allOf, $ref with siblings, a chosen branch with the rest) ---------------------

_AT_LEAST = frozenset(("minimum", "minLength", "minItems", "minProperties", "minContains"))
_AT_MOST = frozenset(("maximum", "maxLength", "maxItems", "maxProperties", "maxContains"))
_BOTH_HOLD = frozenset(
    ("items", "additionalProperties", "additionalItems", "contains", "propertyNames", "unevaluatedItems")
)


def _merge(ours: Any, theirs: Any) -> Any:
    """One schema a value satisfies only by satisfying both (as near as the generator needs)."""
    if ours is False or theirs is False:
        return False
    if not isinstance(theirs, dict) or not theirs:
        return ours
    if not isinstance(ours, dict) or not ours:
        return theirs
    out = dict(ours)
    for key, value in theirs.items():
        if key not in out or out[key] == value:
            out[key] = value
        else:
            out[key] = _merge_keyword(key, out[key], value)
    return out


def _merge_keyword(key: str, ours: Any, theirs: Any) -> Any:
    if key == "type":
        return _common_types(ours, theirs)
    if key == "required" and isinstance(ours, list) and isinstance(theirs, list):
        return list(dict.fromkeys([*ours, *theirs]))
    if key in ("properties", "patternProperties", "dependentSchemas"):
        ours, theirs = _mapping(ours), _mapping(theirs)
        return {**ours, **{n: {"allOf": [ours[n], s]} if n in ours else s for n, s in theirs.items()}}
    if key == "enum" and isinstance(ours, list) and isinstance(theirs, list):
        return [value for value in ours if value in theirs]
    if key in ("exclusiveMinimum", "exclusiveMaximum") and (
        isinstance(ours, bool) or isinstance(theirs, bool)
    ):
        return bool(ours) or bool(theirs)  # draft 4: a flag on minimum/maximum
    if key in _AT_LEAST or key == "exclusiveMinimum":
        return max(ours, theirs)
    if key in _AT_MOST or key == "exclusiveMaximum":
        return min(ours, theirs)
    if key == "multipleOf":
        return _common_multiple(ours, theirs)
    if key == "not":
        return {"anyOf": [ours, theirs]}
    if key in _BOTH_HOLD and not isinstance(ours, list) and not isinstance(theirs, list):
        return {"allOf": [ours, theirs]}
    return ours  # a conflict the generator cannot reconcile (two consts, two patterns): validation tells


def _common_types(ours: Any, theirs: Any) -> list[str]:
    mine = [ours] if isinstance(ours, str) else list(ours)
    other = [theirs] if isinstance(theirs, str) else list(theirs)
    common = [kind for kind in mine if kind in other]
    if "integer" in mine and "number" in other and "integer" not in common:
        common.append("integer")
    if "number" in mine and "integer" in other and "integer" not in common:
        common.append("integer")
    return common


def _common_multiple(ours: Any, theirs: Any) -> Any:
    try:
        a, b = Fraction(str(ours)), Fraction(str(theirs))
    except (ValueError, ZeroDivisionError):
        return ours
    lcm = Fraction(math.lcm(a.numerator, b.numerator), math.gcd(a.denominator, b.denominator))
    return int(lcm) if lcm.denominator == 1 else float(lcm)


# -- small readers --------------------------------------------------------------------------------


def _listed(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _mapping(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _count(value: Any, default: float) -> Any:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else default


def _check_width(check: tuple[str, Any]) -> int:
    kind, payload = check
    return len(payload) if kind == "oneOf" else 1


_ANNOTATIONS = frozenset(("title", "description", "default", "examples", "$comment", "deprecated"))
_JSON_TYPES: dict[str, Callable[[Any], bool]] = {
    "string": lambda v: isinstance(v, str),
    "integer": lambda v: (
        (isinstance(v, int) and not isinstance(v, bool)) or (isinstance(v, float) and v.is_integer())
    ),
    "number": lambda v: isinstance(v, int | float) and not isinstance(v, bool),
    "boolean": lambda v: isinstance(v, bool),
    "null": lambda v: v is None,
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
}


def _has_type(value: Any, declared: Any) -> bool:
    listed = [declared] if isinstance(declared, str) else declared if isinstance(declared, list) else []
    return any(_JSON_TYPES.get(kind, lambda v: True)(value) for kind in listed)


def _only_null(schema: Any) -> bool:
    return isinstance(schema, dict) and schema.get("type") == "null"


def _excluded_kinds(negated: Any) -> tuple[str, ...]:
    """Types a `not` rules out whole (`{"not": {"type": "string"}}`)."""
    if not isinstance(negated, dict) or set(negated) != {"type"}:
        return ()
    declared = negated["type"]
    return (declared,) if isinstance(declared, str) else tuple(declared)


def _dependencies(schema: dict[str, Any]) -> dict[str, list[str]]:
    needs = {name: list(names) for name, names in _mapping(schema.get("dependentRequired")).items()}
    for name, value in _mapping(schema.get("dependencies")).items():  # draft 7 and before
        if isinstance(value, list):
            needs[name] = [*needs.get(name, []), *value]
    return needs


def _closed(names: list[str], needs: dict[str, list[str]]) -> list[str]:
    """`names` plus every name they require through `dependentRequired`, in order."""
    out: list[str] = []
    _close_into(out, set(), names, needs)
    return out


def _close_into(names: list[str], taken: set[str], added: list[str], needs: dict[str, list[str]]) -> None:
    """Append to `names` (whose members `taken` holds) those of `added` it lacks and every name
    they require, dependencies of dependencies included; both grow in step."""
    start = len(names)
    for name in added:
        if name not in taken:
            taken.add(name)
            names.append(name)
    index = start
    while index < len(names):  # grows while it is walked
        for needed in needs.get(names[index], ()):
            if isinstance(needed, str) and needed not in taken:
                taken.add(needed)
                names.append(needed)
        index += 1


def _property_schema(schema: dict[str, Any], name: str) -> Any:
    parts = []
    properties = _mapping(schema.get("properties"))
    if name in properties:
        parts.append(properties[name])
    for pattern, sub in _mapping(schema.get("patternProperties")).items():
        if patterns.search(pattern, name):
            parts.append(sub)
    if not parts:
        extra = schema.get("additionalProperties", True)
        return {} if extra is True else extra
    return parts[0] if len(parts) == 1 else {"allOf": parts}


# -- numbers --------------------------------------------------------------------------------------


def _int_bounds(schema: dict[str, Any]) -> tuple[int, int]:
    low: int | None = None
    high: int | None = None
    minimum, maximum = schema.get("minimum"), schema.get("maximum")
    ex_min, ex_max = schema.get("exclusiveMinimum"), schema.get("exclusiveMaximum")
    if _is_number(minimum):
        low = (
            math.floor(minimum) + 1
            if ex_min is True and minimum == math.floor(minimum)
            else math.ceil(minimum)
        )
    if _is_number(ex_min):
        low = max(low if low is not None else -_INT_LIMIT, math.floor(ex_min) + 1)
    if _is_number(maximum):
        high = (
            math.ceil(maximum) - 1
            if ex_max is True and maximum == math.ceil(maximum)
            else math.floor(maximum)
        )
    if _is_number(ex_max):
        high = min(high if high is not None else _INT_LIMIT, math.ceil(ex_max) - 1)
    if low is None and high is None:
        low, high = 0, 100
    elif low is None:
        assert high is not None
        low = 0 if high >= 0 else high - 100
    elif high is None:
        high = low + 100
    return max(-_INT_LIMIT, min(_INT_LIMIT, low)), max(-_INT_LIMIT, min(_INT_LIMIT, high))


def _float_bounds(schema: dict[str, Any]) -> tuple[float, bool, float, bool]:
    low, low_open, high, high_open = None, False, None, False
    minimum, maximum = schema.get("minimum"), schema.get("maximum")
    ex_min, ex_max = schema.get("exclusiveMinimum"), schema.get("exclusiveMaximum")
    if _is_number(minimum):
        low, low_open = minimum, ex_min is True
    if _is_number(ex_min) and (low is None or ex_min >= low):
        low, low_open = ex_min, True
    if _is_number(maximum):
        high, high_open = maximum, ex_max is True
    if _is_number(ex_max) and (high is None or ex_max <= high):
        high, high_open = ex_max, True
    if low is None and high is None:
        low, high = 0.0, 100.0
    elif low is None:
        assert high is not None
        low = 0.0 if high > 0 else high - 100.0
    elif high is None:
        high = low + 100.0
    low = max(-_FLOAT_LIMIT, min(_FLOAT_LIMIT, float(low)))
    high = max(-_FLOAT_LIMIT, min(_FLOAT_LIMIT, float(high)))
    return low, low_open, high, high_open


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _integer_step(multiple: Any) -> int:
    """The least positive integer step whose multiples are all integer multiples of `multiple`."""
    if not _is_number(multiple) or multiple <= 0:
        return 1
    try:
        return max(1, Fraction(str(multiple)).numerator)  # k * p/q is an integer when q divides k
    except (ValueError, OverflowError):
        return 1


def _is_multiple(value: float, multiple: Any) -> bool:
    """jsonschema's own test: float division for a float `multipleOf`, exact remainder otherwise."""
    if not _is_number(multiple) or multiple <= 0:
        return True
    if isinstance(multiple, float):
        quotient = value / multiple
        return math.isfinite(quotient) and int(quotient) == quotient
    return value % multiple == 0


# -- strings --------------------------------------------------------------------------------------


def _formatted(fmt: Any, rng: Random) -> str:
    if fmt == "date-time":
        return f"2026-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}T{rng.randint(0, 23):02d}:00:00Z"
    if fmt == "date":
        return f"2026-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}"
    if fmt == "time":
        return f"{rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}:00Z"
    if fmt == "email":
        return f"{rng.choice(WORDS)}@example.com"
    if fmt in ("uri", "url", "iri"):
        return f"https://example.com/{rng.choice(WORDS)}"
    if fmt == "hostname":
        return f"{rng.choice(WORDS)}.example.com"
    if fmt == "ipv4":
        return ".".join(str(rng.randint(1, 254)) for _ in range(4))
    if fmt == "uuid":
        return "{:08x}-{:04x}-4{:03x}-8{:03x}-{:012x}".format(
            *tuple(rng.getrandbits(b) for b in (32, 16, 12, 12, 48))
        )
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 3)))


def _from_pattern(pattern: str, rng: Random) -> str:
    """A string matching the regular expression `pattern` (lookarounds and anchors are not solved)."""
    try:
        parsed = regex_parser.parse(pattern)
    except (re.error, RecursionError, OverflowError):
        raise GiveUp(f"pattern {pattern!r} cannot be read") from None
    out: list[str] = []
    _emit(parsed, rng, out, {})
    return "".join(out)


def _emit(items: Any, rng: Random, out: list[str], groups: dict[int, str]) -> None:
    for op, arg in items:
        name = str(op)
        if name == "LITERAL":
            out.append(chr(arg))
        elif name == "NOT_LITERAL":
            out.append(rng.choice([c for c in _ALPHABET if ord(c) != arg]))
        elif name == "ANY":
            out.append(rng.choice(string.ascii_letters + string.digits))
        elif name == "IN":
            out.append(_char_from_class(arg, rng))
        elif name == "BRANCH":
            _emit(rng.choice(arg[1]), rng, out, groups)
        elif name == "SUBPATTERN":
            start = len(out)
            _emit(arg[-1], rng, out, groups)
            if arg[0] is not None:
                groups[arg[0]] = "".join(out[start:])
        elif name == "ATOMIC_GROUP":
            _emit(arg, rng, out, groups)
        elif name in ("MAX_REPEAT", "MIN_REPEAT", "POSSESSIVE_REPEAT"):
            low, high, body = arg
            if low > _PATTERN_LENGTH:
                raise GiveUp(f"a pattern repeats {low} times")
            for _ in range(rng.randint(low, min(high, low + _PATTERN_REPEAT))):
                _emit(body, rng, out, groups)
        elif name == "GROUPREF":
            out.append(groups.get(arg, ""))
        elif name == "GROUPREF_EXISTS":
            group, yes, no = arg
            chosen = yes if group in groups else no
            if chosen is not None:
                _emit(chosen, rng, out, groups)
        elif name not in ("AT", "ASSERT", "ASSERT_NOT"):
            raise GiveUp(f"pattern construct {name} is not generated")
        if len(out) > _PATTERN_LENGTH:
            raise GiveUp("a pattern's string grows too long")


def _char_from_class(members: Any, rng: Random) -> str:
    negated = bool(members) and str(members[0][0]) == "NEGATE"
    pool: list[str] = []
    for op, arg in members[1:] if negated else members:
        name = str(op)
        if name == "LITERAL":
            pool.append(chr(arg))
        elif name == "RANGE":
            low, high = arg
            pool.append(
                chr(rng.randint(low, high)) if high - low > 256 else "".join(map(chr, range(low, high + 1)))
            )
        elif name == "CATEGORY":
            pool.append(_CATEGORIES.get(str(arg), "a"))
    if negated:
        banned = set("".join(pool))
        return rng.choice([c for c in _ALPHABET if c not in banned] or ["~"])
    return rng.choice(rng.choice(pool)) if pool else "a"


_CATEGORIES = {
    "CATEGORY_DIGIT": string.digits,
    "CATEGORY_NOT_DIGIT": string.ascii_letters,
    "CATEGORY_SPACE": " ",
    "CATEGORY_NOT_SPACE": string.ascii_letters + string.digits,
    "CATEGORY_WORD": string.ascii_letters + string.digits + "_",
    "CATEGORY_NOT_WORD": "-. ",
}
