"""Adversarial properties over real HTTP: valid requests and settings with one part made odd.

Whatever is sent, the answer is a reply or the API's error envelope naming a field, never a 500 nor an
exception the server swallowed (`state.server_errors`), the request keeps its journal row, and the
server goes on answering. Bodies and settings are generated from their real shapes (a valid body, the
server's own settings tree) with one leaf replaced by an odd value, removed, or joined by an unknown
key, so that the checks deep inside are reached and not only the outer ones.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from mockserver.server import MockServer
from tests.conftest import make_settings

CALLER = {"x-api-key": "sk-fuzz", "anthropic-version": "2023-06-01", "anthropic-beta": "fast-mode-2026-02-01"}
HELLO = [{"role": "user", "content": "Hello"}]
PLAIN = {"model": "claude-opus-4-7", "max_tokens": 20, "messages": HELLO}

# Values of every JSON type at the edges: what a careless or hostile client sends instead of the
# expected one (huge and tiny numbers, -0, whole floats, NUL, astral characters, deep nesting).
ODD_VALUES = st.sampled_from(
    [
        None,
        True,
        False,
        0,
        -1,
        -0.0,
        1.0,
        0.5,
        2**31,
        2**63,
        2**64,
        10**30,
        1e308,
        -1e308,
        5e-324,
        "",
        " ",
        "x",
        "\x00",
        "é😀",
        "1e400",
        "inf",
        "-Infinity",
        "nan",
        "a" * 5_000,
        [],
        [None],
        [[[[[]]]]],
        {},
        {"a": 1},
        {"": None},
    ]
)

BODIES = [
    PLAIN,
    {**PLAIN, "stream": True},
    {**PLAIN, "system": [{"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}}]},
    {**PLAIN, "max_tokens": 2048, "thinking": {"type": "enabled", "budget_tokens": 1024}},
    {
        **PLAIN,
        "tools": [
            {
                "name": "weather",
                "description": "Weather of a city",
                "input_schema": {
                    "type": "object",
                    "properties": {"city": {"type": "string"}, "days": {"type": "integer", "minimum": 1}},
                    "required": ["city"],
                },
            }
        ],
        "tool_choice": {"type": "any"},
    },
    {
        **PLAIN,
        "messages": [
            {"role": "user", "content": [{"type": "text", "text": "Hi"}]},
            {
                "role": "assistant",
                "content": [{"type": "tool_use", "id": "toolu_1", "name": "t", "input": {}}],
            },
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": "ok"}]},
        ],
        "stop_sequences": ["END"],
        "metadata": {"user_id": "u-1"},
    },
    {
        **PLAIN,
        "speed": "fast",
        "output_config": {"format": {"type": "json_schema", "schema": {"type": "object"}}},
    },
]


def paths(value: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    """Every path into a JSON value, the root's children first."""
    if isinstance(value, dict):
        for key, item in value.items():
            yield (*prefix, key)
            yield from paths(item, (*prefix, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield (*prefix, index)
            yield from paths(item, (*prefix, index))


def mutated(value: Any, path: tuple[Any, ...], how: str, odd: Any) -> Any:
    """A copy of `value` with the item at `path` replaced by `odd`, removed, or joined by a stray key."""
    copy = json.loads(json.dumps(value))
    parent = copy
    for step in path[:-1]:
        parent = parent[step]
    last = path[-1]
    if how == "remove":
        del parent[last]
    elif how == "extra" and isinstance(parent[last], dict):
        parent[last]["zz_unknown"] = odd
    else:
        parent[last] = odd
    return copy


@st.composite
def odd_variants(draw: st.DrawFn, base: Any) -> Any:
    path = draw(st.sampled_from(list(paths(base))))
    return mutated(
        base, path, draw(st.sampled_from(["replace", "replace", "remove", "extra"])), draw(ODD_VALUES)
    )


@pytest.fixture(scope="module")
def server() -> Iterator[MockServer]:
    # Batches end at once; the journal keeps more rows than one module sends.
    overrides = {"batches": {"processing_seconds": 0.0}, "journal": {"max_entries": 100_000}}
    with MockServer(make_settings(**overrides)) as running:
        yield running


@pytest.fixture(scope="module")
def http(server: MockServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, headers=CALLER, timeout=10) as client:
        yield client


class Watch:
    """Fails on any exception the server swallowed since the last look."""

    def __init__(self, server: MockServer) -> None:
        self.server = server
        _, self.seen = server.state.server_errors_after(0)

    def check(self) -> None:
        errors, self.seen = self.server.state.server_errors_after(self.seen)
        assert not errors, f"the server swallowed {errors!r}"


@pytest.fixture(scope="module")
def watch(server: MockServer) -> Watch:
    return Watch(server)


def assert_answered(response: httpx.Response, *, deliberate: int | None = None) -> None:
    """A reply, or an error envelope with a message and the request's id; a 5xx only if asked for."""
    if response.status_code >= 500:
        assert response.status_code == deliberate, response.text
    if response.status_code >= 300:
        body = response.json()
        assert body["type"] == "error", body
        assert isinstance(body["error"]["type"], str) and isinstance(body["error"]["message"], str)
        assert body["request_id"] == response.headers["request-id"]
        if response.status_code == 400 and deliberate is None:
            assert body["error"]["message"], body


def last_journal_row(http: httpx.Client) -> dict[str, Any]:
    return http.get("/_admin/requests", params={"limit": 1}).json()["data"][-1]


@pytest.mark.parametrize("body", BODIES)
def test_every_template_is_answered_unmutated(http, body):
    # Otherwise the properties below would only ever exercise the check that refuses the template.
    response = http.post("/v1/messages", json=body)
    assert response.status_code == 200, response.text
    good = {"custom_id": "good", "params": PLAIN}
    assert http.post("/v1/messages/batches", json={"requests": [good]}).status_code == 200


FUZZ = settings(
    max_examples=int(os.environ.get("FUZZ_EXAMPLES", "60")),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@FUZZ
@given(body=st.sampled_from(BODIES).flatmap(odd_variants))
def test_a_body_with_one_odd_part_is_answered_and_journalled(http, watch, body):
    response = http.post("/v1/messages", json=body)
    event(f"status {response.status_code}")
    assert_answered(response)
    row = last_journal_row(http)
    assert row["request_id"] == response.headers["request-id"] and row["status"] == response.status_code
    watch.check()


@FUZZ
@given(body=st.sampled_from(BODIES).flatmap(odd_variants))
def test_count_tokens_with_one_odd_part_is_answered(http, watch, body):
    body = {k: v for k, v in body.items() if k not in ("max_tokens", "stream", "stop_sequences", "metadata")}
    assert_answered(http.post("/v1/messages/count_tokens", json=body))
    watch.check()


@FUZZ
@given(params=st.sampled_from(BODIES[:1] + BODIES[2:]).flatmap(odd_variants))
def test_a_batch_with_one_odd_request_is_refused_or_ends_with_readable_results(http, watch, params):
    good = {"custom_id": "good", "params": PLAIN}
    response = http.post(
        "/v1/messages/batches", json={"requests": [good, {"custom_id": "odd", "params": params}]}
    )
    assert_answered(response)
    if response.status_code == 200:
        batch = response.json()["id"]
        assert http.get(f"/v1/messages/batches/{batch}").json()["processing_status"] == "ended"
        results = http.get(f"/v1/messages/batches/{batch}/results")
        assert results.status_code == 200
        lines = [json.loads(line) for line in results.text.splitlines()]
        assert sorted(line["custom_id"] for line in lines) == ["good", "odd"]
        assert http.delete(f"/v1/messages/batches/{batch}").status_code == 200
    watch.check()


# The settings tree the server runs on. `admin` is left out (a token set here would lock the test
# out: tests/test_settings.py covers it), and `replies` (file paths: tests/test_replies_files.py).
@pytest.fixture(scope="module")
def settings_tree(http) -> dict[str, Any]:
    tree = http.get("/_admin/settings").json()
    for name in ("admin", "replies"):
        del tree[name]
    tree["faults"] = [{"name": "f", "kind": "http_error", "status": 503, "model": "no-such-model"}]
    tree["organizations"] = {"team": {"keys": ["sk-team"], "requests_per_minute": 10}}
    tree["models"] = [{"id": "my-model", "display_name": "Mine", "speeds": ["standard", "fast"]}]
    return tree


@FUZZ
@given(data=st.data())
def test_a_settings_patch_with_one_odd_value_is_a_400_or_leaves_a_server_that_answers(
    http, watch, settings_tree, data
):
    variant = data.draw(odd_variants(settings_tree))
    top = data.draw(st.sampled_from(sorted(variant)))  # patch one top-level key, as a user would
    patch = {top: variant[top]}
    response = http.patch("/_admin/settings", json=patch)
    try:
        assert response.status_code in (200, 400), response.text
        assert_answered(response)
        if response.status_code == 400:
            assert response.json()["error"]["message"]
        if top != "timing":  # a time scale of 5e-324 is a wait without end, by request: test_pacing.py
            for body in (PLAIN, {**PLAIN, "stream": True}):
                assert_answered(http.post("/v1/messages", json=body))
        for path in ("/v1/models", "/_admin/usage", "/_admin/faults", "/metrics"):
            assert http.get(path).status_code == 200, path
        watch.check()
    finally:
        assert http.post("/_admin/reset").status_code == 200


FAULT_FIELDS = {
    "path": st.sampled_from(["/v1/messages", "/v1", "", "/nope"]),
    "model": st.sampled_from(["claude-opus-4-7", "nope"]),
    "speed": st.sampled_from(["standard", "fast"]),
    "stream": st.booleans(),
    "count": st.integers(1, 3),
    "start_at": st.floats(-1e308, 1e308),
    "end_at": st.floats(-1e308, 1e308),
    "status": st.integers(400, 599),
    "error_type": st.text(max_size=10),
    "message": st.text(max_size=30),
    "retry_after": st.floats(0, 1e308),
    "retry_after_ms": st.floats(0, 1e308),
    "should_retry": st.booleans(),
    "latency_distribution": st.sampled_from(["fixed", "uniform", "exponential"]),
    "after_tokens": st.integers(0, 2**62),
}
KINDS = ["http_error", "latency", "reset", "fast_outage", "degrade_speed", "stall", "stream_error"]
KINDS += ["stream_reset", "truncate", "malformed"]
DROPS = ("reset", "stream_reset")


@st.composite
def faults(draw: st.DrawFn) -> dict[str, Any]:
    # Waits a test can afford (their bound, 3600 s, is checked by validation); anything else may be odd.
    fault: dict[str, Any] = {
        "kind": draw(st.sampled_from(KINDS)),
        "latency_seconds": 0.01,
        "stall_seconds": 0.01,
    }
    for name in draw(st.sets(st.sampled_from(sorted(FAULT_FIELDS)), max_size=3)):
        fault[name] = draw(FAULT_FIELDS[name] | ODD_VALUES)
    return fault


def send_with_fault(http: httpx.Client, body: dict[str, Any], fault: dict[str, Any], **headers: str) -> None:
    deliberate = fault.get("status") if isinstance(fault.get("status"), int) else 529
    try:
        response = http.post("/v1/messages", json=body, headers=headers)
    except httpx.TransportError:
        assert fault["kind"] in DROPS
        return
    event(f"status {response.status_code}")
    assert_answered(response, deliberate=deliberate)


@FUZZ
@given(fault=faults(), stream=st.booleans(), retry=st.sampled_from(["0", "1", "²", "9" * 50, "-1"]))
def test_a_fault_header_of_any_shape_is_a_400_or_acts(http, watch, fault, stream, retry):
    headers = {"x-mockserver-fault": json.dumps(fault), "x-stainless-retry-count": retry.encode("latin-1")}
    body = {**PLAIN, "stream": stream, "speed": "fast" if stream else "standard"}
    send_with_fault(http, body, fault, **headers)
    watch.check()


@FUZZ
@given(fault=faults(), stream=st.booleans())
def test_an_admin_fault_of_any_shape_is_a_400_or_acts_and_is_deleted(http, watch, fault, stream):
    created = http.post("/_admin/faults", json={"name": "fuzz", **fault})
    assert created.status_code in (201, 400), created.text
    assert_answered(created)
    try:
        if created.status_code == 201:
            send_with_fault(http, {**PLAIN, "stream": stream}, fault)
            assert http.get("/_admin/faults").status_code == 200
        watch.check()
    finally:
        http.delete("/_admin/faults/fuzz")


REPLY_FIELDS = {
    "text": st.text(max_size=20),
    "tool_use": st.fixed_dictionaries(
        {"name": st.just("weather")}, optional={"input": st.just({"city": "x"})}
    ),
    "stop_reason": st.sampled_from(["end_turn", "max_tokens", "stop_sequence", "refusal"]),
    "model": st.sampled_from(["claude-opus-4-7", "claude-opus-4-6"]),
    "speed": st.sampled_from(["standard", "fast"]),
    "contains": st.sampled_from(["Hello", "x", ""]),
    "times": st.integers(0, 3),
    "error": st.fixed_dictionaries(
        {"status": st.integers(400, 599)},
        optional={
            "type": st.text(max_size=10),
            "message": st.text(max_size=20),
            "headers": st.dictionaries(
                st.sampled_from(["retry-after", "x-should-retry", "x-a"]), st.text(max_size=8)
            ),
        },
    ),
}


@st.composite
def replies(draw: st.DrawFn) -> dict[str, Any]:
    entry: dict[str, Any] = {}
    for name in draw(st.sets(st.sampled_from(sorted(REPLY_FIELDS)), min_size=1, max_size=4)):
        entry[name] = draw(REPLY_FIELDS[name] | ODD_VALUES)
    return entry


@FUZZ
@given(entry=replies(), stream=st.booleans())
def test_a_scripted_reply_of_any_shape_is_a_400_or_answers(http, watch, entry, stream):
    created = http.post("/_admin/replies", json=entry)
    assert created.status_code in (201, 400), created.text
    assert_answered(created)
    try:
        if created.status_code == 201:
            body = {**BODIES[4], "stream": stream, "tool_choice": {"type": "auto"}}
            error = entry.get("error")
            deliberate = error.get("status") if isinstance(error, dict) else None
            assert_answered(http.post("/v1/messages", json=body), deliberate=deliberate)
            assert http.get("/_admin/replies").status_code == 200
        watch.check()
    finally:
        assert http.delete("/_admin/replies").status_code == 200


HEADER_VALUES = st.sampled_from(
    [
        b"",
        b"x",
        b"\xff\xfe",
        "é".encode("latin-1"),
        "²".encode("latin-1"),
        b"a" * 8_000,
        b"a,,b",
        b"{}",
        b"null",
    ]
)
HEADER_NAMES = [
    "anthropic-version",
    "anthropic-beta",
    "x-api-key",
    "authorization",
    "x-mockserver-fault",
    "x-stainless-retry-count",
    "content-type",
]


@FUZZ
@given(odd=st.dictionaries(st.sampled_from(HEADER_NAMES), HEADER_VALUES, min_size=1, max_size=3))
def test_odd_headers_on_every_api_route_are_answered(http, watch, odd):
    headers = {**CALLER, **odd}
    for method, path, body in (
        ("POST", "/v1/messages", PLAIN),
        ("POST", "/v1/messages/count_tokens", {"model": "claude-opus-4-7", "messages": HELLO}),
        ("GET", "/v1/models", None),
        ("GET", "/v1/messages/batches", None),
    ):
        response = http.request(method, path, json=body, headers=headers)
        assert_answered(response, deliberate=529 if "x-mockserver-fault" in odd else None)
    watch.check()


def test_the_server_still_answers_and_kept_every_row(http, server):
    assert_answered(http.post("/v1/messages", json=PLAIN))
    assert http.get("/_admin/requests", params={"limit": 1}).json()["dropped"] == 0
    assert server.state.server_errors == []
