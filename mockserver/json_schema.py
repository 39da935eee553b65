"""Is a tool's `input_schema` (or an output format's `schema`) a JSON Schema the mock can answer?

The real API refuses an invalid schema with a 400; the mock must too, and must also refuse what its
value generator could not honour in reasonable time (a `minLength` of a billion would stall the
event loop for everyone). jsonschema's meta-schema check does the first part: it is the reference
implementation, and a hand-written validator of JSON Schema would be a project of its own.
"""

from __future__ import annotations

import functools
from typing import Any

import orjson

# Beyond these a generated value could not be streamed within any model's output limit anyway.
MAX_GENERATED_SIZE = 10_000
_SIZE_KEYWORDS = ("minLength", "minItems", "minProperties")


def check_json_schema(value: Any) -> Any:
    if not isinstance(value, dict):
        return value  # pydantic reports the wrong type with the field's path
    problem = _problem(orjson.dumps(value, option=orjson.OPT_SORT_KEYS))
    if problem is not None:
        raise ValueError(problem)
    return value


@functools.lru_cache(maxsize=1024)
def _problem(canonical: bytes) -> str | None:
    # Cached by content: clients send the same tool definitions with every request.
    from jsonschema.exceptions import SchemaError
    from jsonschema.validators import validator_for

    schema = orjson.loads(canonical)
    try:
        validator_for(schema).check_schema(schema)
    except SchemaError as exc:
        where = "/".join(str(part) for part in exc.absolute_path) or "(root)"
        return f"JSON schema is invalid at {where}: {exc.message}"
    return _too_large(schema, "")


def _too_large(node: Any, where: str) -> str | None:
    if isinstance(node, dict):
        for keyword in _SIZE_KEYWORDS:
            size = node.get(keyword)
            if isinstance(size, int) and size > MAX_GENERATED_SIZE:
                place = where or "(root)"
                return f"{keyword} at {place} is {size}; the mock generates at most {MAX_GENERATED_SIZE}"
        children = node.items()
    elif isinstance(node, list):
        children = enumerate(node)
    else:
        return None
    for key, child in children:
        found = _too_large(child, f"{where}/{key}" if where else str(key))
        if found is not None:
            return found
    return None
