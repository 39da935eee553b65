"""The core surface end to end: the official SDK (pinned 2.10.0) against a real server on loopback."""

from __future__ import annotations

import json
import subprocess

import anthropic
import httpx
import jsonschema
import pytest

FAST_BETA = "fast-mode-2026-02-01"
HELLO = [{"role": "user", "content": "Hello"}]


def test_fast_via_beta_namespace(client):
    message = client.beta.messages.create(
        model="claude-opus-4-7", max_tokens=64, speed="fast", betas=[FAST_BETA], messages=HELLO
    )
    assert message.usage.speed == "fast"
    assert message.type == "message" and message.role == "assistant"
    assert message.id.startswith("msg_01") and len(message.id) == len("msg_") + 24
    assert message._request_id.startswith("req_")
    assert message.content[0].type == "text" and message.content[0].text


def test_fast_via_extra_header(client):
    message = client.messages.create(
        model="claude-opus-4-6",
        max_tokens=64,
        speed="fast",
        messages=HELLO,
        extra_headers={"anthropic-beta": FAST_BETA},
    )
    assert message.usage.speed == "fast"


def test_speed_without_beta_header_is_refused_naming_the_header(client):
    with pytest.raises(anthropic.BadRequestError) as caught:
        client.messages.create(model="claude-opus-4-7", max_tokens=64, speed="fast", messages=HELLO)
    assert caught.value.type == "invalid_request_error"
    assert f"anthropic-beta: {FAST_BETA}" in caught.value.api_message
    assert caught.value.request_id.startswith("req_")


@pytest.mark.parametrize("speed", [None, "standard"])
def test_standard_speed_reported(client, speed):
    extra = {} if speed is None else {"speed": speed}
    message = client.messages.create(
        model="claude-opus-4-7",
        max_tokens=64,
        messages=HELLO,
        extra_headers={"anthropic-beta": FAST_BETA},
        **extra,
    )
    assert message.usage.speed == "standard"


def test_standard_only_model_works_without_speed(client):
    message = client.messages.create(model="claude-sonnet-4-6", max_tokens=32, messages=HELLO)
    assert message.usage.speed == "standard"
    assert message.model == "claude-sonnet-4-6"


def test_fast_on_unsupported_model_names_the_model(client):
    with pytest.raises(anthropic.BadRequestError) as caught:
        client.beta.messages.create(
            model="claude-sonnet-4-6", max_tokens=64, speed="fast", betas=[FAST_BETA], messages=HELLO
        )
    assert "claude-sonnet-4-6" in caught.value.api_message
    assert caught.value.type == "invalid_request_error"


def test_unknown_model_is_404(client):
    with pytest.raises(anthropic.NotFoundError) as caught:
        client.messages.create(model="claude-nonexistent-9", max_tokens=8, messages=HELLO)
    assert caught.value.type == "not_found_error"
    assert "claude-nonexistent-9" in caught.value.api_message


def test_invalid_speed_value_names_the_field(client):
    with pytest.raises(anthropic.BadRequestError) as caught:
        client.messages.create(
            model="claude-opus-4-7",
            max_tokens=8,
            messages=HELLO,
            extra_body={"speed": "ludicrous"},
            extra_headers={"anthropic-beta": FAST_BETA},
        )
    assert caught.value.api_message.startswith("speed:")


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"model": "claude-opus-4-7", "messages": HELLO}, "max_tokens"),
        ({"model": "claude-opus-4-7", "max_tokens": 8}, "messages"),
        ({"model": "claude-opus-4-7", "max_tokens": "8", "messages": HELLO}, "max_tokens"),
        (
            {"model": "claude-opus-4-7", "max_tokens": 8, "messages": [{"role": "robot", "content": "x"}]},
            "messages.0.role",
        ),
        (
            {"model": "claude-opus-4-7", "max_tokens": 8, "messages": [{"role": "user", "content": 3}]},
            "messages.0.content",
        ),
        ({"model": "claude-opus-4-7", "max_tokens": 8, "messages": HELLO, "bogus": 1}, "bogus"),
        ({"model": "claude-opus-4-7", "max_tokens": 999_999, "messages": HELLO}, "max_tokens"),
    ],
)
def test_malformed_bodies_name_the_field(server, body, field):
    response = httpx.post(f"{server.url}/v1/messages", json=body, headers=_headers())
    assert response.status_code == 400
    error = response.json()
    assert error["type"] == "error" and error["error"]["type"] == "invalid_request_error"
    assert error["error"]["message"].startswith(field)
    assert error["request_id"] == response.headers["request-id"]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (  # pydantic put the union member it tried in the path: "...content.0.TextBlock.text"
            [{"type": "document", "source": {"type": "content", "content": [{"type": "text"}]}}],
            "messages.0.content.0.source.content.0.text: Field required",
        ),
        ([{"type": "image", "source": 5}], "messages.0.content.0.source: Input should be an object whose"),
        # A caller's own capitalised names are fields, not classes: they stay in the path.
        (
            [{"type": "text", "text": "x", "CacheControl": {}}],
            "messages.0.content.0.CacheControl: Extra inputs",
        ),
    ],
)
def test_messages_name_fields_not_classes(server, content, message):
    body = {"model": "claude-opus-4-7", "max_tokens": 8, "messages": [{"role": "user", "content": content}]}
    response = httpx.post(f"{server.url}/v1/messages", json=body, headers=_headers())
    assert response.status_code == 400
    assert response.json()["error"]["message"].startswith(message)


@pytest.mark.parametrize(
    ("body", "where"),
    [
        ('{"model": "caf\xe9"}'.encode("latin-1"), "byte 0xe9 at offset 14"),
        ('{"a":1}'.encode("utf-16"), "byte 0xff at offset 0"),
    ],
)
def test_a_body_not_in_utf_8_says_so(server, body, where):
    # orjson said "str is not valid UTF-8: surrogates not allowed: line 1 column 1 (char 0)" for any of them
    response = httpx.post(f"{server.url}/v1/messages", content=body, headers=_headers())
    assert response.status_code == 400
    assert response.json()["error"]["message"] == (
        f"Request body is not valid JSON: it is not UTF-8 ({where}); send JSON in UTF-8"
    )


def test_sampling_parameters_depend_on_api_version(server):
    body = {"model": "claude-opus-4-7", "max_tokens": 8, "messages": HELLO, "temperature": 0.5}
    old = httpx.post(f"{server.url}/v1/messages", json=body, headers=_headers(version="2023-06-01"))
    new = httpx.post(f"{server.url}/v1/messages", json=body, headers=_headers(version="2026-10-21"))
    assert old.status_code == 200
    assert new.status_code == 400 and new.json()["error"]["message"].startswith("temperature:")


def test_both_auth_headers_are_accepted_and_missing_auth_is_401(server):
    body = {"model": "claude-opus-4-7", "max_tokens": 8, "messages": HELLO}
    bearer = {"authorization": "Bearer sk-x", "anthropic-version": "2026-10-21"}
    assert httpx.post(f"{server.url}/v1/messages", json=body, headers=bearer).status_code == 200
    client = anthropic.Anthropic(api_key="sk", base_url=server.url, max_retries=0)
    with pytest.raises(anthropic.AuthenticationError):
        client.messages.create(
            model="claude-opus-4-7",
            max_tokens=8,
            messages=HELLO,
            extra_headers={"Authorization": anthropic.Omit()},
        )


def test_route_and_method_errors_use_the_envelope(server):
    missing = httpx.get(f"{server.url}/v1/nothing-here", headers=_headers())
    assert missing.status_code == 404 and missing.json()["error"]["type"] == "not_found_error"
    wrong = httpx.get(f"{server.url}/v1/messages", headers=_headers())
    assert wrong.status_code == 405 and wrong.json()["type"] == "error"
    assert wrong.headers["request-id"].startswith("req_")
    for method, path in (
        ("POST", "/v1/messages/"),
        ("DELETE", "/_admin/faults/"),
        ("GET", "/_admin/requests/"),
    ):
        slashed = httpx.request(method, f"{server.url}{path}", headers=_headers(), json={})
        assert slashed.status_code == 404, (path, slashed.status_code)  # was a 307 with an empty body
        assert slashed.json()["error"] == {
            "type": "not_found_error",
            "message": f"Not found: {method} {path}",
        }


def test_body_over_32_mb_is_413(client):
    huge = "a" * (32 * 1024 * 1024 + 10)
    with pytest.raises(anthropic.ContentTooLargeError) as caught:
        client.messages.create(
            model="claude-opus-4-7", max_tokens=8, messages=[{"role": "user", "content": huge}]
        )
    assert caught.value.type == "request_too_large"


def test_same_request_and_seed_give_the_same_reply(client):
    kwargs = {
        "model": "claude-opus-4-7",
        "max_tokens": 200,
        "messages": [{"role": "user", "content": "Tell me"}],
    }
    first, second = client.messages.create(**kwargs), client.messages.create(**kwargs)
    assert first.content == second.content and first.id != second.id
    other = client.messages.create(**{**kwargs, "messages": [{"role": "user", "content": "Other"}]})
    assert other.content != first.content


def test_seed_changes_the_reply(start_server):
    texts = []
    for seed in (1, 2):
        server = start_server(seed=seed)
        client = anthropic.Anthropic(api_key="k", base_url=server.url, max_retries=0)
        texts.append(
            client.messages.create(model="claude-opus-4-7", max_tokens=100, messages=HELLO).content[0].text
        )
    assert texts[0] != texts[1]


def test_speed_does_not_change_what_the_model_says(client):
    kwargs = {"model": "claude-opus-4-7", "max_tokens": 100, "messages": HELLO, "betas": [FAST_BETA]}
    fast = client.beta.messages.create(speed="fast", **kwargs)
    standard = client.beta.messages.create(speed="standard", **kwargs)
    assert fast.content == standard.content


def test_max_tokens_truncates(client):
    message = client.messages.create(model="claude-opus-4-7", max_tokens=5, messages=HELLO)
    assert message.stop_reason == "max_tokens"
    assert message.usage.output_tokens == 5


def test_stop_sequence_from_canned_reply(start_server, tmp_path):
    (tmp_path / "r.toml").write_text('[[replies]]\ncontains = "count"\ntext = "one two three END four"\n')
    server = start_server(replies=[str(tmp_path)])
    client = anthropic.Anthropic(api_key="k", base_url=server.url, max_retries=0)
    message = client.messages.create(
        model="claude-opus-4-7",
        max_tokens=50,
        stop_sequences=["END"],
        messages=[{"role": "user", "content": "count"}],
    )
    assert message.stop_reason == "stop_sequence" and message.stop_sequence == "END"
    assert message.content[0].text == "one two three "
    plain = client.messages.create(
        model="claude-opus-4-7", max_tokens=50, messages=[{"role": "user", "content": "count"}]
    )
    assert plain.content[0].text == "one two three END four" and plain.stop_reason == "end_turn"


def test_canned_replies_from_the_fixtures_directory(start_server):
    server = start_server(replies=["fixtures/replies"])
    client = anthropic.Anthropic(api_key="k", base_url=server.url, max_retries=0)
    message = client.messages.create(
        model="claude-opus-4-7", max_tokens=200, messages=[{"role": "user", "content": "What is fast mode?"}]
    )
    assert "2.5x" in message.content[0].text


WEATHER = {
    "name": "get_weather",
    "description": "Weather for a city",
    "input_schema": {
        "type": "object",
        "properties": {
            "city": {"type": "string", "minLength": 2},
            "unit": {"type": "string", "enum": ["c", "f"]},
            "days": {"type": "integer", "minimum": 1, "maximum": 7},
            "tags": {"type": "array", "items": {"type": "string"}, "minItems": 1},
            "when": {"type": "string", "format": "date"},
        },
        "required": ["city", "unit", "days", "tags"],
    },
}


@pytest.mark.parametrize("choice", [{"type": "any"}, {"type": "tool", "name": "get_weather"}])
def test_forced_tool_use_satisfies_the_schema(client, choice):
    message = client.messages.create(
        model="claude-opus-4-7", max_tokens=300, tools=[WEATHER], tool_choice=choice, messages=HELLO
    )
    assert message.stop_reason == "tool_use"
    (block,) = message.content
    assert block.type == "tool_use" and block.name == "get_weather" and block.id.startswith("toolu_01")
    jsonschema.validate(block.input, WEATHER["input_schema"])


def test_a_tool_call_cut_by_max_tokens_bills_the_tokens_it_used(client):
    message = client.messages.create(
        model="claude-opus-4-7", max_tokens=5, tools=[WEATHER], tool_choice={"type": "any"}, messages=HELLO
    )
    assert message.stop_reason == "max_tokens" and message.content == []
    assert message.usage.output_tokens == 5  # the model wrote them; they were 0 before
    with client.messages.stream(
        model="claude-opus-4-7", max_tokens=5, tools=[WEATHER], tool_choice={"type": "any"}, messages=HELLO
    ) as stream:
        final = stream.get_final_message()
    assert final.stop_reason == "max_tokens" and final.usage.output_tokens == 5


def test_auto_tool_choice_calls_a_tool_named_in_the_prompt(client):
    messages = [{"role": "user", "content": "Please call get_weather for Paris"}]
    message = client.messages.create(
        model="claude-opus-4-7", max_tokens=300, tools=[WEATHER], messages=messages
    )
    assert [b.type for b in message.content] == ["text", "tool_use"]
    plain = client.messages.create(model="claude-opus-4-7", max_tokens=300, tools=[WEATHER], messages=HELLO)
    assert [b.type for b in plain.content] == ["text"] and plain.stop_reason != "tool_use"


def test_tool_choice_must_name_a_known_tool(client):
    with pytest.raises(anthropic.BadRequestError) as caught:
        client.messages.create(
            model="claude-opus-4-7",
            max_tokens=30,
            tools=[WEATHER],
            tool_choice={"type": "tool", "name": "x"},
            messages=HELLO,
        )
    assert caught.value.api_message.startswith("tool_choice.name")


def test_thinking_blocks(client):
    message = client.messages.create(
        model="claude-opus-4-7",
        max_tokens=2000,
        thinking={"type": "enabled", "budget_tokens": 1024},
        messages=HELLO,
    )
    assert [b.type for b in message.content] == ["thinking", "text"]
    assert message.content[0].signature and message.content[0].thinking
    assert message.usage.output_tokens_details.thinking_tokens > 0


def test_count_tokens_matches_usage(client):
    kwargs = {
        "model": "claude-opus-4-7",
        "system": "You are terse.",
        "tools": [WEATHER],
        "messages": [
            {"role": "user", "content": "What's the weather in Paris? Ünïcødé 日本語 123456"},
            {"role": "assistant", "content": [{"type": "text", "text": "Let me check."}]},
            {"role": "user", "content": [{"type": "text", "text": "Thanks"}]},
        ],
    }
    counted = client.messages.count_tokens(**kwargs)
    message = client.messages.create(max_tokens=20, **kwargs)
    assert counted.input_tokens == message.usage.input_tokens > 20


def test_models_list_paginates_like_the_sdk_expects(client):
    ids = [model.id for model in client.models.list(limit=3)]
    assert "claude-opus-4-7" in ids and "claude-opus-4-6" in ids
    assert len(ids) == len(set(ids)) >= 15
    first_page = client.models.list(limit=3)
    assert len(first_page.data) == 3 and first_page.has_more
    model = client.models.retrieve("claude-opus-4-7")
    assert model.display_name == "Claude Opus 4.7" and model.max_tokens > 0
    with pytest.raises(anthropic.NotFoundError):
        client.models.retrieve("claude-unknown")


def test_alias_resolves_to_dated_id(client):
    message = client.messages.create(model="claude-sonnet-4-5", max_tokens=8, messages=HELLO)
    assert message.model == "claude-sonnet-4-5-20250929"


def test_unknown_beta_is_refused(client):
    with pytest.raises(anthropic.BadRequestError) as caught:
        client.beta.messages.create(
            model="claude-opus-4-7", max_tokens=8, messages=HELLO, betas=["no-such-beta"]
        )
    assert "no-such-beta" in caught.value.api_message


def test_seed_curl_example_works_as_written(server):
    # The fast-mode page's first example, verbatim but for the URL and the key.
    command = [
        "curl", "-sS", f"{server.url}/v1/messages",
        "--header", "x-api-key: sk-test",
        "--header", "anthropic-version: 2023-06-01",
        "--header", "anthropic-beta: fast-mode-2026-02-01",
        "--header", "content-type: application/json",
        "--data", json.dumps({
            "model": "claude-opus-4-7",
            "max_tokens": 4096,
            "speed": "fast",
            "messages": [{"role": "user", "content": "Refactor this module to use dependency injection"}],
        }),
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=60, check=True)
    body = json.loads(result.stdout)
    assert body["usage"]["speed"] == "fast"
    assert body["content"][0]["type"] == "text"


def test_query_beta_true_is_ignored(server):
    body = {"model": "claude-opus-4-7", "max_tokens": 8, "messages": HELLO}
    response = httpx.post(f"{server.url}/v1/messages?beta=true", json=body, headers=_headers())
    assert response.status_code == 200


def _headers(version: str = "2023-06-01") -> dict[str, str]:
    return {"x-api-key": "sk-test", "anthropic-version": version}


@pytest.mark.parametrize(
    "schema",
    [
        {"type": "object", "properties": {"a": {"type": "object", "properties": "x"}}},
        {"type": "object", "properties": {"a": {"type": {}}}},
        {"type": "object", "properties": {"a": {"enum": {"x": 1}}}},
        {"type": "object", "allOf": [5]},
        {"type": "object", "properties": {"a": {"$ref": 5}}},
        {"type": "object", "properties": {"a": {"type": "string", "minLength": "3"}}},
        {"type": "object", "properties": {"a": {"type": "string", "minLength": 10**9}}},
        # jsonschema looked these up as URIs: a 500, also in count_tokens and batches
        {"$schema": 5, "type": "object"},
        {"$schema": ["x"], "type": "object"},
        {"$schema": {}, "type": "object"},
        {
            "type": "object",
            "properties": {"a": {"type": "integer", "multipleOf": 1e20, "minimum": 1}},
            "required": ["a"],
        },
    ],
)
def test_invalid_or_unanswerable_tool_schemas_are_a_400(client, schema):
    with pytest.raises(anthropic.BadRequestError) as caught:
        client.messages.create(
            model="claude-opus-4-7",
            max_tokens=50,
            messages=HELLO,
            tools=[{"name": "f", "input_schema": schema}],
            tool_choice={"type": "any"},
        )
    assert caught.value.api_message.startswith("tools.0.input_schema:")


@pytest.mark.parametrize(
    "schema",
    [
        {
            "type": "object",
            "properties": {"a": {"type": "integer", "minimum": 0, "maximum": 1e30}},
            "required": ["a"],
        },
        {
            "type": "object",
            "properties": {"a": {"type": "number", "minimum": -1e308, "maximum": 1e308}},
            "required": ["a"],
        },
        {"type": "object", "required": ["undescribed"]},
    ],
)
def test_extreme_but_valid_schemas_still_get_a_valid_input(client, schema):
    message = client.messages.create(
        model="claude-opus-4-7",
        max_tokens=100,
        messages=HELLO,
        tools=[{"name": "f", "input_schema": schema}],
        tool_choice={"type": "any"},
    )
    jsonschema.validate(message.content[0].input, schema)


def test_empty_messages_are_refused(server):
    body = {"model": "claude-opus-4-7", "max_tokens": 8, "messages": []}
    response = httpx.post(f"{server.url}/v1/messages", json=body, headers=_headers())
    assert response.status_code == 400 and response.json()["error"]["message"].startswith("messages:")


def test_one_beta_per_repeated_header(server):
    body = {"model": "claude-opus-4-7", "max_tokens": 8, "speed": "fast", "messages": HELLO}
    headers = [
        ("x-api-key", "k"),
        ("anthropic-version", "2023-06-01"),
        ("anthropic-beta", "context-1m-2025-08-07"),
        ("anthropic-beta", FAST_BETA),
    ]
    assert (
        httpx.post(f"{server.url}/v1/messages", json=body, headers=headers).json()["usage"]["speed"] == "fast"
    )
    unknown = [*headers[:3], ("anthropic-beta", "no-such-beta")]
    assert httpx.post(f"{server.url}/v1/messages", json=body, headers=unknown).status_code == 400


def test_count_tokens_applies_the_same_header_rules(client):
    with pytest.raises(anthropic.BadRequestError):
        client.beta.messages.count_tokens(model="claude-opus-4-7", messages=HELLO, betas=["no-such-beta"])
