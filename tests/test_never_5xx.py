"""Property: whatever arrives at /v1/messages, the answer is a reply or a 4xx envelope, never a 5xx."""

from __future__ import annotations

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

HEADERS = {
    "x-api-key": "sk-test",
    "anthropic-version": "2023-06-01",
    "anthropic-beta": "fast-mode-2026-02-01",
}

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=20,
)

blocks = st.one_of(
    st.fixed_dictionaries({"type": st.just("text"), "text": st.text(max_size=30)}),
    st.fixed_dictionaries(
        {"type": st.sampled_from(["image", "document", "tool_use", "tool_result", "thinking"])}
    ),
    st.dictionaries(
        st.sampled_from(["type", "text", "source", "id", "input", "content"]), json_values, max_size=4
    ),
)
messages = st.lists(
    st.fixed_dictionaries(
        {
            "role": st.sampled_from(["user", "assistant", "system", "x"]),
            "content": st.text(max_size=30) | st.lists(blocks, max_size=3),
        }
    ),
    max_size=3,
)
tool_schema = st.fixed_dictionaries(
    {
        "type": st.just("object"),
        "properties": st.dictionaries(
            st.text(min_size=1, max_size=5),
            st.fixed_dictionaries(
                {
                    "type": st.sampled_from(
                        ["string", "integer", "number", "boolean", "array", "object", "null"]
                    )
                }
            ),
            max_size=3,
        ),
    }
)
# Property schemas from arbitrary JSON: most are invalid JSON Schema (a 400), some are odd but valid.
odd_schema = st.fixed_dictionaries(
    {
        "type": st.just("object"),
        "properties": st.dictionaries(st.text(min_size=1, max_size=5), json_values, max_size=3),
    }
)
tools = st.lists(
    st.fixed_dictionaries(
        {"name": st.from_regex(r"[a-z_]{1,10}", fullmatch=True), "input_schema": tool_schema | json_values}
    ),
    max_size=2,
)

# Bodies near the valid shape reach deep validation; fully random ones check the outer layers.
near_valid = st.fixed_dictionaries(
    {},
    optional={
        "model": st.sampled_from(["claude-opus-4-7", "claude-opus-4-6", "claude-sonnet-4-6", "nope"])
        | json_values,
        "max_tokens": st.integers(-5, 300) | json_values,
        "messages": messages | json_values,
        "speed": st.sampled_from(["fast", "standard", None, "warp"]),
        "stream": st.booleans(),
        "system": st.text(max_size=20) | st.lists(blocks, max_size=2),
        "tools": tools,
        "tool_choice": st.sampled_from(
            [{"type": "any"}, {"type": "auto"}, {"type": "tool", "name": "a"}, {"type": "none"}]
        )
        | json_values,
        "thinking": st.sampled_from(
            [{"type": "enabled", "budget_tokens": 1024}, {"type": "adaptive"}, {"type": "disabled"}]
        )
        | json_values,
        "stop_sequences": st.lists(st.text(max_size=5), max_size=3),
        "temperature": st.floats(-1, 2),
        "metadata": json_values,
        "output_config": json_values,
    },
)


@pytest.fixture(scope="module")
def http(server):
    with httpx.Client(base_url=server.url, headers=HEADERS, timeout=30) as client:
        yield client


def _check(response: httpx.Response) -> None:
    assert response.status_code < 500, response.text
    if response.status_code != 200:
        body = response.json()
        assert body["type"] == "error" and set(body["error"]) >= {"type", "message"}
        assert body["request_id"] == response.headers["request-id"]


@settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(body=near_valid | json_values)
def test_any_json_body_gets_a_reply_or_a_4xx(http, body):
    _check(http.post("/v1/messages", json=body))


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(payload=st.binary(max_size=200))
def test_any_bytes_get_a_4xx(http, payload):
    response = http.post("/v1/messages", content=payload, headers={"content-type": "application/json"})
    _check(response)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=near_valid | json_values)
def test_count_tokens_never_5xx(http, body):
    _check(http.post("/v1/messages/count_tokens", json=body))


def test_server_keeps_serving_afterwards(http):
    body = {"model": "claude-opus-4-7", "max_tokens": 8, "messages": [{"role": "user", "content": "hi"}]}
    assert http.post("/v1/messages", json=body).status_code == 200


HUGE_NUMBER = "9" * 5_000  # int() refuses more than 4,300 digits
LISTS = ("/_admin/requests", "/v1/messages/batches", "/v1/models")


def _refused(response: httpx.Response, parameter: str) -> None:
    assert response.status_code == 400, response.text
    body = response.json()
    assert body["error"]["type"] == "invalid_request_error"
    assert body["error"]["message"].startswith(f"{parameter}:")
    assert body["request_id"] == response.headers["request-id"]


@pytest.mark.parametrize("retry_count", [HUGE_NUMBER, "²".encode(), "many", ""])
def test_an_odd_retry_count_header_is_noted_as_unknown(http, retry_count):
    response = http.post(
        "/v1/messages",
        json={"model": "claude-opus-4-7", "max_tokens": 8, "messages": [{"role": "user", "content": "hi"}]},
        headers={"x-stainless-retry-count": retry_count},
    )
    assert response.status_code == 200, response.text
    assert http.get("/v1/models", headers={"x-stainless-retry-count": retry_count}).status_code == 200
    entries = http.get("/_admin/requests", params={"limit": 2}).json()["data"]
    assert [entry["retry_count"] for entry in entries] == [None, None]


@pytest.mark.parametrize("path", LISTS)
@pytest.mark.parametrize("limit", ["²", HUGE_NUMBER, "-1", "1.5", " 3", "٣"])
def test_a_bad_limit_is_a_400_naming_it(http, path, limit):
    _refused(http.get(path, params={"limit": limit}), "limit")


@pytest.mark.parametrize("path", LISTS[1:])
def test_bad_cursors_are_a_400_naming_them(http, path):
    for name in ("after_id", "before_id"):
        for cursor in ("²", HUGE_NUMBER, "msgbatch_\x00"):
            _refused(http.get(path, params={name: cursor}), name)


@pytest.mark.parametrize("name", ["since", "until"])
@pytest.mark.parametrize("value", ["nan", "inf", "-Infinity", "1e999", HUGE_NUMBER, "yesterday"])
def test_usage_bounds_must_be_finite_epoch_seconds(http, name, value):
    _refused(http.get("/_admin/usage", params={name: value}), name)


def test_a_status_filter_in_other_digits_is_a_400(http):
    _refused(http.get("/_admin/requests", params={"status": "²"}), "status")
    _refused(http.get("/_admin/requests", params={"status": HUGE_NUMBER}), "status")


query_names = st.sampled_from(
    ["limit", "after_id", "before_id", "since", "until", "status", "stream", "model", "lifecycle", "x"]
)
query_values = st.text(max_size=12) | st.sampled_from(["nan", "inf", "²", HUGE_NUMBER, "0", "-0", "1e9"])


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    path=st.sampled_from([*LISTS, "/_admin/usage"]),
    query=st.lists(st.tuples(query_names, query_values), max_size=3),
)
def test_any_query_on_a_list_gets_a_reply_or_a_4xx(http, path, query):
    _check(http.get(path, params=query))
