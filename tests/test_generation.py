"""Generated tool inputs and structured outputs end to end: the official SDK against a real server.

What a schema asks for comes back valid (checked with jsonschema, the caller's own validator), the
same request gives the same value, and a schema the mock cannot answer (or one that would make it
generate an enormous value) is a 400 naming the keyword and the field, before any stream starts.
"""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import anthropic
import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from jsonschema.validators import validator_for

from mockserver import fake_json
from mockserver.json_schema import MAX_TOTAL_SIZE, deeper_than
from mockserver.rng import SeededRandom
from mockserver.tokens import split_tokens

MODEL = "claude-opus-4-7"
HELLO = [{"role": "user", "content": "Hello"}]
HEADERS = {"x-api-key": "sk-test", "anthropic-version": "2023-06-01"}
PROMPTS = ["Hello", "Plan a trip", "Summarise the report", "What now?", "One more time"]


def assert_valid(value: Any, schema: dict[str, Any]) -> None:
    validator_for(schema)(schema).validate(value)


def tool_input(client: anthropic.Anthropic, schema: dict[str, Any], prompt: str = "Hello") -> Any:
    message = client.messages.create(
        model=MODEL,
        max_tokens=2000,
        messages=[{"role": "user", "content": prompt}],
        tools=[{"name": "f", "input_schema": schema}],
        tool_choice={"type": "any"},
    )
    assert message.stop_reason == "tool_use", message
    return message.content[-1].input


def structured_output(client: anthropic.Anthropic, schema: dict[str, Any], prompt: str = "Hello") -> Any:
    message = client.messages.create(
        model=MODEL,
        max_tokens=2000,
        messages=[{"role": "user", "content": prompt}],
        extra_body={"output_config": {"format": {"type": "json_schema", "schema": schema}}},
    )
    return json.loads(message.content[0].text)


# -- item: nested counts multiply; the server stays responsive ----------------------------------

NESTED_80 = {
    "type": "object",
    "properties": {
        "a": {
            "type": "array",
            "minItems": 80,
            "items": {"type": "array", "minItems": 80, "items": {"type": "array", "minItems": 80}},
        }
    },
    "required": ["a"],
}
# The same product through $refs: each definition is small, the value is not.
REF_CHAIN_80 = {
    "type": "object",
    "$defs": {
        "x": {"type": "array", "minItems": 80, "items": {"$ref": "#/$defs/y"}},
        "y": {"type": "array", "minItems": 80, "items": {"$ref": "#/$defs/z"}},
        "z": {"type": "array", "minItems": 80, "items": {"type": "string"}},
    },
    "properties": {"a": {"$ref": "#/$defs/x"}},
    "required": ["a"],
}


def test_nested_min_items_are_refused_at_once_naming_the_keyword(client):
    with pytest.raises(anthropic.BadRequestError) as caught:
        tool_input(client, NESTED_80)
    message = caught.value.api_message
    assert message.startswith("tools.0.input_schema: minItems at properties/a/items/items is 80, inside ")
    assert "minItems 80 at properties/a" in message and f"at most {MAX_TOTAL_SIZE:,}" in message
    with pytest.raises(anthropic.BadRequestError) as caught:
        structured_output(client, REF_CHAIN_80)
    assert caught.value.api_message.startswith("output_config.format.schema: minItems at $defs/z is 80")


def test_the_server_answers_others_while_refusing_huge_schemas(server):
    bad = {
        "model": MODEL,
        "max_tokens": 100,
        "messages": HELLO,
        "tools": [{"name": "f", "input_schema": NESTED_80}],
        "tool_choice": {"type": "any"},
    }
    refusals: list[tuple[int, float]] = []

    def hammer() -> None:
        with httpx.Client(base_url=server.url, headers=HEADERS, timeout=30) as http:
            for index in range(20):
                bad["messages"] = [{"role": "user", "content": f"again {index}"}]
                started = time.monotonic()
                status = http.post("/v1/messages", json=bad).status_code
                refusals.append((status, time.monotonic() - started))

    thread = threading.Thread(target=hammer)
    thread.start()
    answered = 0
    with httpx.Client(base_url=server.url, headers=HEADERS, timeout=30) as http:
        while thread.is_alive() or answered < 3:
            body = {"model": MODEL, "max_tokens": 8, "messages": HELLO}
            started = time.monotonic()
            assert http.post("/v1/messages", json=body).status_code == 200
            assert time.monotonic() - started < 2.0  # generous: a blocked loop took seconds
            answered += 1
    thread.join()
    assert [status for status, _ in refusals] == [400] * 20
    assert max(seconds for _, seconds in refusals) < 2.0


# -- many properties, and patterns that backtrack without end: answered or refused, never a stall --

MANY_PROPERTIES = {
    "type": "object",
    "minProperties": 9000,
    "additionalProperties": {"type": "string", "not": {"const": "a"}},
}


def forced_tool_stream(schema: dict[str, Any], max_tokens: int) -> dict[str, Any]:
    """A streamed request that must call tool `f` with an input for `schema`."""
    return {
        "model": MODEL,
        "max_tokens": max_tokens,
        "stream": True,
        "messages": HELLO,
        "tools": [{"name": "f", "input_schema": schema}],
        "tool_choice": {"type": "any"},
    }


def test_thousands_of_generated_properties_are_answered(server):
    body = forced_tool_stream(MANY_PROPERTIES, 128_000)
    pieces: list[str] = []
    # The timeout guards against a stall only; bench/schema_generation.py measures the time
    # (quadratic naming took 64 s cold at 9,000 properties, now ~1 s).
    with httpx.stream(
        "POST", f"{server.url}/v1/messages", json=body, headers=HEADERS, timeout=60
    ) as response:
        assert response.status_code == 200
        for line in response.iter_lines():
            if line.startswith("data:") and '"input_json_delta"' in line:
                pieces.append(json.loads(line[5:])["delta"]["partial_json"])
    value = json.loads("".join(pieces))
    assert len(value) == 9000
    assert_valid(value, MANY_PROPERTIES)


EVIL = "^(a|a)*$"  # 2^n steps to fail on n letters and a "!"


@pytest.mark.parametrize(
    ("schema", "expected"),
    [
        (
            {"type": "object", "minProperties": 2, "patternProperties": {"^a{26}!$": {}, EVIL: {}}},
            "patternProperties at (root): the pattern '^(a|a)*$' takes longer than 50 ms",
        ),
        (
            {"type": "string", "allOf": [{"pattern": "^a{30}!$"}, {"pattern": EVIL}]},
            "pattern at allOf/1: the pattern '^(a|a)*$' takes longer than 50 ms",
        ),
        (
            {
                "type": "object",
                "minProperties": 2,
                "additionalProperties": False,
                "patternProperties": {"^a{26}!$": {}},
                "allOf": [{"additionalProperties": False, "patternProperties": {EVIL: {}}}],
            },
            "patternProperties at allOf/0: the pattern",
        ),
        (  # jsonschema matches these with `re` itself: the names are screened first
            {
                "type": "object",
                "minProperties": 2,
                "unevaluatedProperties": False,
                "patternProperties": {"^a{26}!$": {}},
                "anyOf": [{"patternProperties": {EVIL: {}}}],
            },
            "patternProperties at anyOf/0: the pattern",
        ),
        (  # ~6 ms a name, far under the 50 ms one match may take even on a busy machine, times
            # 400 names: seconds in all (a{17}, ~35-46 ms a name, came too close to 50 ms in CI)
            {
                "type": "object",
                "minProperties": 400,
                "additionalProperties": False,
                "patternProperties": {
                    "^a{14}[b-z][b-z][b-z]$": {"type": "integer"},
                    EVIL: {"type": "integer"},
                },
            },
            "patternProperties at (root): matching the pattern '^(a|a)*$' against the generated strings "
            "takes longer in all than the 2 s",
        ),
    ],
)
def test_a_pattern_that_backtracks_without_end_is_a_400_naming_it(server, schema, expected):
    body = {
        "model": MODEL,
        "max_tokens": 100,
        "messages": HELLO,
        "output_config": {"format": {"type": "json_schema", "schema": schema}},
    }
    # With `re` these were answered 200 after 9 to 45 s; bench/schema_generation.py times the refusal.
    with httpx.Client(base_url=server.url, headers=HEADERS, timeout=60) as http:
        for attempt in range(2):  # the second is answered from the schema's cached verdict
            response = http.post(
                "/v1/messages", json={**body, "messages": [{"role": "user", "content": f"{attempt}"}]}
            )
            assert response.status_code == 400, response.text
            error = response.json()["error"]
            assert error["type"] == "invalid_request_error"
            assert error["message"].startswith(f"output_config.format.schema: {expected}"), error["message"]


def test_a_draw_past_its_deadline_gives_up():
    # The budget counts values, not the time each check takes: the clock is the backstop.
    schema = {"type": "array", "minItems": 1000, "items": {"type": "integer"}}
    assert len(fake_json.generate(schema, SeededRandom(1), deadline=time.monotonic() + 60)) >= 1000
    with pytest.raises(fake_json.GiveUp, match="takes too long"):
        fake_json.generate(schema, SeededRandom(1), deadline=time.monotonic() - 1)


def test_patterns_that_match_promptly_are_still_checked(client):
    schema = {
        "type": "object",
        "minProperties": 3,
        "additionalProperties": False,
        "patternProperties": {"^x_[0-9]+$": {"type": "integer"}},
        "required": ["id"],
        "properties": {"id": {"type": "string", "pattern": "^(ab)+$"}},
    }
    value = structured_output(client, schema)
    assert len(value) >= 3 and all(name.startswith("x_") for name in value if name != "id")
    assert_valid(value, schema)


@pytest.mark.parametrize(
    "schema",
    [
        # Optional parts whose product is huge: the generator must leave them out, not build them.
        {
            "type": "object",
            "properties": {
                "big": {
                    "type": "array",
                    "minItems": 200,
                    "items": {
                        "type": "array",
                        "minItems": 200,
                        "items": {"type": "string", "minLength": 200},
                    },
                },
                "name": {"type": "string"},
            },
            "required": ["name"],
        },
        # Recursion that is optional at every level.
        {
            "type": "object",
            "$defs": {
                "n": {
                    "type": "object",
                    "properties": {"kids": {"type": "array", "items": {"$ref": "#/$defs/n"}}},
                }
            },
            "properties": {"root": {"$ref": "#/$defs/n"}},
            "required": ["root"],
        },
    ],
)
def test_optional_bulk_and_recursion_stay_small(client, schema):
    for prompt in PROMPTS:
        started = time.monotonic()
        value = tool_input(client, schema, prompt)
        assert time.monotonic() - started < 2.0
        assert_valid(value, schema)
        assert len(json.dumps(value)) < 200_000


@pytest.mark.parametrize(
    ("schema", "expected"),
    [
        ({"type": "object", "properties": {"a": {"$ref": "#"}}, "required": ["a"]}, "$ref at (root)"),
        ({"$ref": "#", "type": "object"}, "$ref at (root)"),
    ],
)
def test_a_schema_whose_value_must_contain_itself_is_refused(client, schema, expected):
    with pytest.raises(anthropic.BadRequestError) as caught:
        tool_input(client, schema)
    assert caught.value.api_message.startswith(
        f"tools.0.input_schema: {expected} makes a value contain itself"
    )


# -- item: boolean subschemas and deep JSON are 4xx, never 500 ------------------------------------


@pytest.mark.parametrize(
    "schema",
    [
        {"type": "object", "allOf": [True]},
        {"type": "object", "properties": {"a": True}, "required": ["a"]},
        {"type": "object", "properties": {"a": {"anyOf": [False, {"type": "integer"}]}}, "required": ["a"]},
        {"type": "object", "properties": {"a": {"type": "array", "items": True, "minItems": 2}}},
    ],
)
def test_boolean_subschemas_are_answered(client, schema):
    assert_valid(tool_input(client, schema), schema)
    assert_valid(structured_output(client, schema), schema)


def test_a_false_subschema_that_must_be_met_is_a_400(client):
    schema = {"type": "object", "properties": {"a": False}, "required": ["a"]}
    with pytest.raises(anthropic.BadRequestError) as caught:
        tool_input(client, schema)
    assert caught.value.api_message.startswith("tools.0.input_schema: false schema at properties/a")
    with pytest.raises(anthropic.BadRequestError) as caught:
        structured_output(client, {"allOf": [False]})
    assert caught.value.api_message.startswith("output_config.format.schema: false schema")


def nested(depth: int) -> dict[str, Any]:
    value: dict[str, Any] = {}
    for _ in range(depth - 1):
        value = {"a": value}
    return value


def history_with_tool_input(tool_input: Any) -> list[dict[str, Any]]:
    return [
        {"role": "user", "content": "Hello"},
        {
            "role": "assistant",
            "content": [{"type": "tool_use", "id": "toolu_1", "name": "f", "input": tool_input}],
        },
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": "ok"}]},
    ]


def test_deeply_nested_tool_input_in_history_is_a_400_naming_the_field(client):
    messages = history_with_tool_input(nested(300))
    expected = "messages.1.content.0.input: JSON nested more than 128 levels deep is not supported"
    with pytest.raises(anthropic.BadRequestError) as caught:
        client.messages.create(model=MODEL, max_tokens=20, messages=messages)
    assert caught.value.api_message == expected
    with pytest.raises(anthropic.BadRequestError) as caught:
        client.messages.count_tokens(model=MODEL, messages=messages)
    assert caught.value.api_message == expected


@pytest.mark.parametrize("depth", [255, 1000])
def test_deep_json_beyond_what_orjson_writes_is_a_400(server, depth):
    # Built as text: the SDK's own encoder (and Python's) stops short of 1,000 levels.
    deep = '{"a":' * (depth - 1) + "{}" + "}" * (depth - 1)
    messages = json.dumps(history_with_tool_input("DEEP")).replace('"DEEP"', deep)
    for path, extra in (("/v1/messages", ',"max_tokens":20'), ("/v1/messages/count_tokens", "")):
        body = f'{{"model":"{MODEL}","messages":{messages}{extra}}}'
        response = httpx.post(
            f"{server.url}{path}", content=body, headers={**HEADERS, "content-type": "application/json"}
        )
        assert response.status_code == 400, response.text
        assert response.json()["error"]["message"].startswith("messages.1.content.0.input: JSON nested")


def test_nesting_within_the_limit_is_served(client):
    messages = history_with_tool_input(nested(128))
    counted = client.messages.count_tokens(model=MODEL, messages=messages)
    message = client.messages.create(model=MODEL, max_tokens=20, messages=messages)
    assert counted.input_tokens == message.usage.input_tokens


def test_deep_params_in_a_batch_are_a_400_at_create(client):
    params = {"model": MODEL, "max_tokens": 20, "messages": history_with_tool_input(nested(300))}
    with pytest.raises(anthropic.BadRequestError) as caught:
        client.messages.batches.create(requests=[{"custom_id": "deep", "params": params}])
    assert "requests.0.params" in caught.value.api_message and "deep" in caught.value.api_message


# -- item: values honour what the caller's schema asks for ------------------------------------------

KEYWORD_SCHEMAS = {
    "multipleOf": {
        "type": "object",
        "properties": {
            "price": {"type": "number", "multipleOf": 0.01, "minimum": 0.5, "maximum": 3},
            "tenth": {"type": "number", "multipleOf": 0.1, "minimum": 0.25, "maximum": 3},
            "week": {"type": "integer", "multipleOf": 7, "minimum": -30, "maximum": -1},
            "half": {"type": "integer", "multipleOf": 2.5},
        },
        "required": ["price", "tenth", "week", "half"],
    },
    "prefixItems": {
        "type": "object",
        "properties": {
            "row": {
                "type": "array",
                "prefixItems": [{"type": "integer"}, {"type": "string", "format": "date"}, {"const": True}],
                "items": False,
                "minItems": 3,
            }
        },
        "required": ["row"],
    },
    "minProperties": {
        "type": "object",
        "properties": {
            "labels": {
                "type": "object",
                "properties": {"x": {"type": "integer"}},
                "additionalProperties": {"type": "string"},
                "minProperties": 3,
                "maxProperties": 4,
            }
        },
        "required": ["labels"],
    },
    "allOf": {
        "type": "object",
        "allOf": [
            {"properties": {"a": {"type": "integer", "minimum": 5}}, "required": ["a"]},
            {"properties": {"a": {"maximum": 6}, "b": {"type": "string", "maxLength": 4}}, "required": ["b"]},
        ],
    },
    "$ref with ~1": {
        "type": "object",
        "$defs": {
            "a/b": {"type": "integer", "minimum": 3, "maximum": 3},
            "c~d": {"enum": ["only"]},
            "e f": {"type": "boolean"},
        },
        "properties": {
            "x": {"$ref": "#/$defs/a~1b"},
            "y": {"$ref": "#/$defs/c~0d"},
            "z": {"$ref": "#/$defs/e%20f"},
        },
        "required": ["x", "y", "z"],
    },
    "dependentRequired": {
        "type": "object",
        "properties": {
            "card": {"type": "string"},
            "cvv": {"type": "string", "pattern": "^[0-9]{3}$"},
            "zip": {"type": "string"},
        },
        "required": ["card"],
        "dependentRequired": {"card": ["cvv"], "cvv": ["zip"]},
    },
    "not": {
        "type": "object",
        "properties": {
            "anything_but_text": {"not": {"type": "string"}},
            "big": {"type": "integer", "minimum": 0, "maximum": 12, "not": {"maximum": 10}},
        },
        "required": ["anything_but_text", "big"],
    },
    "oneOf": {
        "type": "object",
        "properties": {
            "n": {"oneOf": [{"type": "number"}, {"type": "integer"}]},
            "shape": {
                "oneOf": [
                    {
                        "type": "object",
                        "properties": {"kind": {"const": "circle"}, "r": {"type": "number"}},
                        "required": ["kind", "r"],
                    },
                    {
                        "type": "object",
                        "properties": {"kind": {"const": "square"}, "side": {"type": "number"}},
                        "required": ["kind", "side"],
                    },
                ]
            },
        },
        "required": ["n", "shape"],
    },
    "draft-07 tuple": {
        "$schema": "http://json-schema.org/draft-07/schema#",
        "type": "object",
        "definitions": {"x": {"type": "integer", "exclusiveMinimum": 5, "exclusiveMaximum": 7}},
        "properties": {
            "t": {
                "type": "array",
                "items": [{"type": "string"}, {"$ref": "#/definitions/x"}],
                "additionalItems": False,
                "minItems": 2,
            }
        },
        "required": ["t"],
    },
    "pattern": {
        "type": "object",
        "properties": {
            "code": {"type": "string", "pattern": "^[A-Z]{3}-\\d{2,4}$"},
            "colour": {"type": "string", "pattern": "^#[0-9a-fA-F]{6}$"},
        },
        "required": ["code", "colour"],
    },
}


@pytest.mark.parametrize("name", list(KEYWORD_SCHEMAS))
def test_tool_inputs_satisfy_the_schema(client, name):
    schema = KEYWORD_SCHEMAS[name]
    for prompt in PROMPTS:
        assert_valid(tool_input(client, schema, prompt), schema)


@pytest.mark.parametrize("name", ["multipleOf", "oneOf", "$ref with ~1", "not"])
def test_structured_outputs_satisfy_the_schema(client, name):
    schema = KEYWORD_SCHEMAS[name]
    for prompt in PROMPTS:
        assert_valid(structured_output(client, schema, prompt), schema)


def test_the_same_request_gives_the_same_value(client):
    schema = KEYWORD_SCHEMAS["oneOf"]
    assert tool_input(client, schema, "Same") == tool_input(client, schema, "Same")
    assert structured_output(client, schema, "Same") == structured_output(client, schema, "Same")


UNANSWERABLE = {
    "type": "object",
    "properties": {"code": {"type": "string", "minLength": 5, "maxLength": 3}},
    "required": ["code"],
}


def test_a_schema_no_value_satisfies_is_a_400_naming_the_keyword(client):
    with pytest.raises(anthropic.BadRequestError) as caught:
        tool_input(client, UNANSWERABLE)
    assert caught.value.api_message.startswith(
        "tools.0.input_schema: minLength at properties/code: the mock found no value that satisfies it"
    )
    remote = {
        "type": "object",
        "properties": {"r": {"$ref": "https://example.com/x.json"}},
        "required": ["r"],
    }
    with pytest.raises(anthropic.BadRequestError) as caught:
        structured_output(client, remote)
    assert caught.value.api_message.startswith(
        "output_config.format.schema: $ref 'https://example.com/x.json' cannot be resolved"
    )
    not_a_schema = {"type": "object", "properties": {"a": {"$ref": "#/required"}}, "required": ["a"]}
    with pytest.raises(anthropic.BadRequestError) as caught:
        structured_output(client, not_a_schema)
    assert caught.value.api_message == (  # was "$ref None cannot be resolved"
        "output_config.format.schema: $ref at properties/a: '#/required' points at an array, not a schema"
    )


def test_a_stream_with_an_unanswerable_schema_is_a_400_before_any_event(server):
    body = forced_tool_stream(UNANSWERABLE, 100)
    with httpx.stream("POST", f"{server.url}/v1/messages", json=body, headers=HEADERS) as response:
        assert response.status_code == 400
        assert response.headers["content-type"].startswith("application/json")
        error = json.loads(response.read())
    assert error["type"] == "error" and error["error"]["message"].startswith(
        "tools.0.input_schema: minLength"
    )


def test_an_unused_tool_with_an_unanswerable_schema_does_not_matter(client):
    message = client.messages.create(
        model=MODEL, max_tokens=50, messages=HELLO, tools=[{"name": "f", "input_schema": UNANSWERABLE}]
    )
    assert [block.type for block in message.content] == ["text"] and message.stop_reason != "tool_use"


BEYOND_64_BITS = {  # every multiple of 1e20 but 0 is an integer orjson cannot write: was a 500
    "type": "object",
    "properties": {"a": {"type": "integer", "multipleOf": 1e20, "minimum": 1}},
    "required": ["a"],
}


@pytest.mark.parametrize(
    ("schema", "expected"),
    [
        (UNANSWERABLE, "tools.0.input_schema: minLength at properties/code"),
        (BEYOND_64_BITS, "tools.0.input_schema: multipleOf at properties/a"),
    ],
)
def test_a_batch_request_with_an_unanswerable_schema_ends_errored(client, schema, expected):
    good = {"model": MODEL, "max_tokens": 100, "messages": HELLO}
    bad = {**good, "tools": [{"name": "f", "input_schema": schema}], "tool_choice": {"type": "any"}}
    batches = client.messages.batches
    created = batches.create(
        requests=[{"custom_id": "good", "params": good}, {"custom_id": "bad", "params": bad}]
    )
    deadline = time.monotonic() + 10
    while (batch := batches.retrieve(created.id)).processing_status != "ended":
        assert time.monotonic() < deadline
        time.sleep(0.01)
    assert batch.request_counts.succeeded == 1 and batch.request_counts.errored == 1
    results = {entry.custom_id: entry.result for entry in batches.results(created.id)}
    assert results["good"].type == "succeeded"
    assert results["bad"].type == "errored"
    assert results["bad"].error.error.type == "invalid_request_error"
    assert results["bad"].error.error.message.startswith(expected)


# A property: for schemas built from the keywords above, a reply's value validates, or the request
# is a 400 that names a keyword (a combination no value satisfies).
leaf = st.one_of(
    st.fixed_dictionaries(
        {"type": st.just("integer")},
        optional={
            "minimum": st.integers(-50, 50),
            "maximum": st.integers(-50, 50),
            "multipleOf": st.sampled_from([2, 3, 5, 0.5, 2.5]),
            "not": st.fixed_dictionaries({"const": st.integers(-5, 5)}),
        },
    ),
    st.fixed_dictionaries(
        {"type": st.just("number")},
        optional={
            "minimum": st.floats(-100, 100),
            "exclusiveMaximum": st.floats(-100, 100),
            "multipleOf": st.sampled_from([0.1, 0.25, 0.01, 3]),
        },
    ),
    st.fixed_dictionaries(
        {"type": st.just("string")},
        optional={
            "minLength": st.integers(0, 12),
            "maxLength": st.integers(0, 12),
            "pattern": st.sampled_from(["^[a-z]{2,5}$", "^\\d+-[A-Z]$", "x|y|z", "^(ab)+c?$"]),
            "format": st.sampled_from(["date", "email", "uuid", "date-time"]),
        },
    ),
    st.fixed_dictionaries(
        {"enum": st.lists(st.integers(0, 9) | st.text(max_size=3), min_size=1, max_size=4)}
    ),
    st.booleans(),
)


def _compose(inner: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    names = st.sampled_from(["a", "b", "c", "d~e", "f/g"])
    return st.one_of(
        st.builds(
            lambda props, required, extra: {
                "type": "object",
                "properties": props,
                "required": [name for name in props if name in required],
                **extra,
            },
            st.dictionaries(names, inner, max_size=3),
            st.lists(names, max_size=3),
            st.fixed_dictionaries(
                {},
                optional={
                    "minProperties": st.integers(0, 4),
                    "maxProperties": st.integers(1, 5),
                    "dependentRequired": st.dictionaries(names, st.lists(names, max_size=2), max_size=2),
                    "additionalProperties": st.booleans(),
                },
            ),
        ),
        st.builds(
            lambda items, prefix, extra: {"type": "array", "items": items, "prefixItems": prefix, **extra},
            inner,
            st.lists(inner, min_size=1, max_size=2),
            st.fixed_dictionaries(
                {},
                optional={
                    "minItems": st.integers(0, 4),
                    "maxItems": st.integers(0, 5),
                    "uniqueItems": st.booleans(),
                },
            ),
        ),
        st.builds(lambda parts: {"allOf": parts}, st.lists(inner, min_size=1, max_size=2)),
        st.builds(lambda parts: {"anyOf": parts}, st.lists(inner, min_size=1, max_size=3)),
        st.builds(lambda parts: {"oneOf": parts}, st.lists(inner, min_size=1, max_size=3)),
        st.builds(lambda sub: {"not": sub}, inner),
    )


schemas = st.recursive(leaf, _compose, max_leaves=8)
tool_schemas = st.builds(
    lambda sub, defs: {
        "type": "object",
        "$defs": {"d/x": defs},
        "properties": {"v": sub, "w": {"$ref": "#/$defs/d~1x"}},
        "required": ["v", "w"],
    },
    schemas,
    schemas,
)


@pytest.fixture(scope="module")
def http(server):
    with httpx.Client(base_url=server.url, headers=HEADERS, timeout=30) as client:
        yield client


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(schema=tool_schemas, prompt=st.sampled_from(PROMPTS))
def test_generated_values_validate_or_the_keyword_is_named(http, schema, prompt):
    body = {
        "model": MODEL,
        "max_tokens": 4000,
        "messages": [{"role": "user", "content": prompt}],
        "tools": [{"name": "f", "input_schema": schema}],
        "tool_choice": {"type": "any"},
    }
    response = http.post("/v1/messages", json=body)
    assert response.status_code in (200, 400), response.text
    if response.status_code == 400:
        message = response.json()["error"]["message"]
        assert message.startswith("tools.0.input_schema: "), message
        return
    (block,) = response.json()["content"]
    assert_valid(block["input"], schema)


# -- item: a stop sequence that empties the reply still counts its tokens ---------------------------


def sse_events(server, body: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    with httpx.stream(
        "POST", f"{server.url}/v1/messages", json={**body, "stream": True}, headers=HEADERS
    ) as r:
        assert r.status_code == 200
        text = r.read().decode()
    events = []
    for block in text.strip().split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.split("\n"))
        events.append((fields["event"], json.loads(fields["data"])))
    return events


def test_a_stop_sequence_at_the_start_still_bills_its_tokens(client, server):
    plain = client.messages.create(model=MODEL, max_tokens=50, messages=HELLO)
    first_word = plain.content[0].text.split()[0]
    body = {"model": MODEL, "max_tokens": 50, "messages": HELLO, "stop_sequences": [first_word]}
    message = client.messages.create(**body)
    assert message.stop_reason == "stop_sequence" and message.stop_sequence == first_word
    assert message.content == []
    assert message.usage.output_tokens >= 1

    events = sse_events(server, body)
    counts = [data["message"]["usage"]["output_tokens"] for name, data in events if name == "message_start"]
    counts += [data["usage"]["output_tokens"] for name, data in events if name == "message_delta"]
    assert counts == sorted(counts) and counts[-1] == message.usage.output_tokens  # never backwards
    with client.messages.stream(**body) as stream:
        final = stream.get_final_message()
    assert final.usage.output_tokens == message.usage.output_tokens and final.content == []

    created = client.messages.batches.create(requests=[{"custom_id": "stop", "params": body}])
    deadline = time.monotonic() + 10
    while client.messages.batches.retrieve(created.id).processing_status != "ended":
        assert time.monotonic() < deadline
        time.sleep(0.01)
    (entry,) = client.messages.batches.results(created.id)
    assert entry.result.type == "succeeded"
    assert entry.result.message.usage.output_tokens == message.usage.output_tokens
    assert entry.result.message.stop_reason == "stop_sequence"


def test_a_stop_sequence_mid_reply_counts_the_text_and_the_sequence(client, server):
    plain = client.messages.create(model=MODEL, max_tokens=50, messages=HELLO)
    words = plain.content[0].text.split()
    body = {"model": MODEL, "max_tokens": 50, "messages": HELLO, "stop_sequences": [" " + words[3]]}
    message = client.messages.create(**body)
    assert message.stop_reason == "stop_sequence"
    # The pieces before it (a word with its space, a punctuation mark) and the stop sequence itself.
    assert message.usage.output_tokens == len(split_tokens(message.content[0].text)) + 1
    events = sse_events(server, body)
    (delta,) = [data for name, data in events if name == "message_delta"]
    assert delta["usage"]["output_tokens"] == message.usage.output_tokens


def reference_depth_check(node: Any, limit: int) -> bool:
    """The plain definition: a scalar is one level, each container one more."""
    stack = [(node, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > limit:
            return True
        children = node.values() if isinstance(node, dict) else node if isinstance(node, list) else ()
        stack.extend((child, depth + 1) for child in children)
    return False


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(2**70), max_value=2**70) | st.text(max_size=3),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=2), inner, max_size=3),
    max_leaves=40,
)


@settings(max_examples=300, deadline=None)
@given(
    value=JSON_VALUES,
    wrap=st.integers(min_value=0, max_value=140),
    limit=st.sampled_from([2, 64, 128, 254, 300]),
)
def test_the_nesting_check_agrees_with_its_definition(value, wrap, limit):
    # orjson answers first (C, up to its 254 levels), Python only when orjson says no: same answers,
    # big integers orjson cannot write included.
    for _ in range(wrap):
        value = [value]
    assert deeper_than(value, limit) == reference_depth_check(value, limit)
