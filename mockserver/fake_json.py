"""Seeded values that satisfy a JSON Schema: tool inputs and structured outputs.

Covers what tool schemas use in practice (types, properties/required, enum/const, numeric and
length bounds, arrays, formats, local `$ref`, anyOf/oneOf/allOf). `pattern` is not solved: a
regex-satisfying generator is a project of its own, so patterned strings get a plain word.
"""

from __future__ import annotations

import random
from typing import Any

WORDS = ("alpha", "bravo", "delta", "echo", "nova", "orbit", "pixel", "quartz", "river", "solar", "tango")
MAX_DEPTH = 6
_INT_LIMIT = 2**63 - 1
_FLOAT_LIMIT = 1e300


def fake_value(schema: Any, rng: random.Random, *, root: Any = None, depth: int = 0) -> Any:
    root = schema if root is None else root
    if not isinstance(schema, dict) or depth > MAX_DEPTH:
        return None if depth > MAX_DEPTH else "value"
    if "$ref" in schema:
        return fake_value(_resolve(schema["$ref"], root), rng, root=root, depth=depth + 1)
    if "const" in schema:
        return schema["const"]
    if schema.get("enum"):
        return rng.choice(schema["enum"])
    for key in ("anyOf", "oneOf"):
        options = [o for o in schema.get(key) or () if not (isinstance(o, dict) and o.get("type") == "null")]
        if options:
            return fake_value(rng.choice(options), rng, root=root, depth=depth + 1)
    if schema.get("allOf"):
        merged: dict[str, Any] = {"type": "object", "properties": {}, "required": []}
        for part in schema["allOf"]:
            part = _resolve(part["$ref"], root) if isinstance(part, dict) and "$ref" in part else part
            merged["properties"].update(part.get("properties", {}))
            merged["required"] += part.get("required", [])
        return fake_value(merged, rng, root=root, depth=depth + 1)
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind is None:
        kind = "object" if "properties" in schema else "string"
    return _BY_TYPE.get(kind, _string)(schema, rng, root, depth)


def _object(schema: dict[str, Any], rng: random.Random, root: Any, depth: int) -> dict[str, Any]:
    properties: dict[str, Any] = schema.get("properties") or {}
    required = list(schema.get("required") or ())
    out = {}
    for name, sub in properties.items():
        if name in required or rng.random() < 0.5:
            out[name] = fake_value(sub, rng, root=root, depth=depth + 1)
    for name in required:  # required but not described: any value satisfies it
        out.setdefault(name, "value")
    return out


def _array(schema: dict[str, Any], rng: random.Random, root: Any, depth: int) -> list[Any]:
    low = int(schema.get("minItems", 1))
    high = int(schema.get("maxItems", max(low, 3)))
    items = schema.get("items", {"type": "string"})
    target = rng.randint(low, max(low, high))
    out: list[Any] = []
    for _ in range(200):  # bounded: unique items from a small domain may never reach the count
        if len(out) >= target:
            break
        value = fake_value(items, rng, root=root, depth=depth + 1)
        if not schema.get("uniqueItems") or value not in out:
            out.append(value)
    return out


def _string(schema: dict[str, Any], rng: random.Random, root: Any, depth: int) -> str:
    fmt = schema.get("format")
    if fmt == "date-time":
        value = f"2026-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}T{rng.randint(0, 23):02d}:00:00Z"
    elif fmt == "date":
        value = f"2026-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}"
    elif fmt == "email":
        value = f"{rng.choice(WORDS)}@example.com"
    elif fmt in ("uri", "url"):
        value = f"https://example.com/{rng.choice(WORDS)}"
    elif fmt == "uuid":
        value = "{:08x}-{:04x}-4{:03x}-8{:03x}-{:012x}".format(
            *tuple(rng.getrandbits(b) for b in (32, 16, 12, 12, 48))
        )
    else:
        value = " ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 3)))
    low, high = int(schema.get("minLength", 0)), schema.get("maxLength")
    while len(value) < low:
        value += "x" * (low - len(value))
    return value[: int(high)] if high is not None else value


def _integer(schema: dict[str, Any], rng: random.Random, root: Any, depth: int) -> int:
    low, high = _bounds(schema, integer=True)
    step = int(schema.get("multipleOf", 1)) or 1
    first = -(-low // step) * step
    if first > high:
        return int(first)
    return int(first + step * rng.randint(0, int((high - first) // step)))


def _number(schema: dict[str, Any], rng: random.Random, root: Any, depth: int) -> float:
    low, high = _bounds(schema, integer=False)
    return round(rng.uniform(low, high), 2) if high - low >= 0.02 else low


def _bounds(schema: dict[str, Any], *, integer: bool) -> tuple[Any, Any]:
    nudge = 1 if integer else 0.01
    low = schema.get("minimum", schema["exclusiveMinimum"] + nudge if "exclusiveMinimum" in schema else 0)
    high = schema.get(
        "maximum", schema["exclusiveMaximum"] - nudge if "exclusiveMaximum" in schema else low + 100
    )
    # JSON numbers must stay what orjson can write: 64-bit integers and finite floats.
    limit = _INT_LIMIT if integer else _FLOAT_LIMIT
    low, high = max(-limit, min(limit, low)), max(-limit, min(limit, high))
    return (low, max(low, high))


_BY_TYPE = {
    "object": _object,
    "array": _array,
    "string": _string,
    "integer": _integer,
    "number": _number,
    "boolean": lambda schema, rng, root, depth: rng.random() < 0.5,
    "null": lambda schema, rng, root, depth: None,
}


def _resolve(ref: str, root: Any) -> Any:
    if not ref.startswith("#/"):
        return {}
    node = root
    for part in ref[2:].split("/"):
        if not isinstance(node, dict) or part not in node:
            return {}
        node = node[part]
    return node
