"""Message Batches end to end: the official SDK (2.10.0) against real servers, on memory and Redis stores.

Most tests drive the lifecycle with a `FakeClock`: a batch's state is computed from the clock on
every read, so advancing the clock is all it takes to move a batch along.
"""

from __future__ import annotations

import re
import time
import uuid
from collections import Counter
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import anthropic
import httpx
import pytest

from mockserver.clock import FakeClock
from mockserver.server import MockServer
from tests.support.redis_server import RedisServer, redis_server_fixture

HELLO = [{"role": "user", "content": "Hello"}]
MODEL = "claude-opus-4-7"
RFC3339_MICROS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")
DAY = 86_400.0
SCALE = 1000.0
# With time_scale 1000: processing takes 10 fake seconds, a cancel 1 fake second.
SLOW_BATCHES = {"processing_seconds": 10_000.0, "cancel_seconds": 1_000.0}

redis_server = redis_server_fixture(scope="module")

StartServer = Callable[..., MockServer]


def request(custom_id: str, **params: Any) -> dict[str, Any]:
    return {
        "custom_id": custom_id,
        "params": {"model": MODEL, "max_tokens": 32, "messages": HELLO, **params},
    }


def sdk(server: MockServer, key: str = "sk-test") -> anthropic.Anthropic:
    return anthropic.Anthropic(api_key=key, base_url=server.url, max_retries=0)


def fake_clock_server(start_server: StartServer, **overrides: Any) -> tuple[MockServer, FakeClock]:
    clock = FakeClock()
    overrides.setdefault("batches", SLOW_BATCHES)
    timing = {"time_scale": SCALE, "pace_non_streaming": False}
    return start_server(clock=clock, timing=timing, **overrides), clock


def results_by_id(client: Any, batch_id: str) -> dict[str, Any]:
    return {entry.custom_id: entry.result for entry in client.results(batch_id)}


def wait_until_ended(client: Any, batch_id: str) -> Any:
    deadline = time.monotonic() + 5
    while (batch := client.retrieve(batch_id)).processing_status != "ended":
        assert time.monotonic() < deadline, batch
        time.sleep(0.01)
    return batch


# -- the SDK surface ----------------------------------------------------------------------------


def test_sdk_create_retrieve_list_results_delete(client: anthropic.Anthropic) -> None:
    batches = client.messages.batches
    created = batches.create(requests=[request("a"), request("b", max_tokens=8), request("c")])
    assert created.id.startswith("msgbatch_01") and created.type == "message_batch"
    assert created._request_id.startswith("req_")
    ended = wait_until_ended(batches, created.id)
    assert ended.request_counts.succeeded == 3 and ended.request_counts.processing == 0
    base = str(client.base_url).rstrip("/")
    assert ended.results_url == f"{base}/v1/messages/batches/{created.id}/results"

    results = results_by_id(batches, created.id)
    assert sorted(results) == ["a", "b", "c"]
    for result in results.values():
        assert result.type == "succeeded"
        assert result.message.model == MODEL and result.message.content[0].type == "text"
        assert result.message.usage.service_tier == "batch" and result.message.usage.speed == "standard"
    assert results["b"].message.usage.output_tokens <= 8
    # Results are planned again on every read, identically (ids included).
    assert results_by_id(batches, created.id) == results

    assert created.id in [batch.id for batch in batches.list()]
    deleted = batches.delete(created.id)
    assert (deleted.id, deleted.type) == (created.id, "message_batch_deleted")
    with pytest.raises(anthropic.NotFoundError) as caught:
        batches.retrieve(created.id)
    assert caught.value.type == "not_found_error"


def test_beta_namespace(client: anthropic.Anthropic) -> None:
    batches = client.beta.messages.batches
    created = batches.create(requests=[request("one"), request("two")])
    assert batches.retrieve(created.id).id == created.id
    wait_until_ended(batches, created.id)
    results = results_by_id(batches, created.id)
    assert {custom_id: result.type for custom_id, result in results.items()} == {
        "one": "succeeded",
        "two": "succeeded",
    }
    assert results["one"].message.usage.service_tier == "batch"
    assert created.id in [batch.id for batch in batches.list(limit=5)]
    assert batches.delete(created.id).type == "message_batch_deleted"


def test_sdk0_style_beta_calls_are_served(server: MockServer) -> None:
    # SDK0/TS0: x-api-key, API 2023-06-01, `?beta=true` and the old batches beta header.
    headers = {
        "x-api-key": "sk-test",
        "anthropic-version": "2023-06-01",
        "anthropic-beta": "message-batches-2024-09-24",
    }
    with httpx.Client(base_url=server.url, headers=headers) as http:
        created = http.post("/v1/messages/batches?beta=true", json={"requests": [request("x")]})
        assert created.status_code == 200, created.text
        batch_id = created.json()["id"]
        assert http.get(f"/v1/messages/batches/{batch_id}?beta=true").json()["id"] == batch_id
        assert http.get("/v1/messages/batches?beta=true&limit=1").json()["data"][0]["id"] == batch_id


def test_unknown_batch_is_404(client: anthropic.Anthropic) -> None:
    with pytest.raises(anthropic.NotFoundError):
        client.messages.batches.retrieve("msgbatch_01doesnotexist")
    with pytest.raises(anthropic.NotFoundError):
        client.messages.batches.cancel("msgbatch_01doesnotexist")


def test_batches_need_credentials(server: MockServer) -> None:
    response = httpx.get(f"{server.url}/v1/messages/batches", headers={"anthropic-version": "2023-06-01"})
    assert response.status_code == 401
    assert response.json()["error"]["type"] == "authentication_error"


# -- validation at create time ------------------------------------------------------------------


def test_fast_mode_is_refused_naming_the_custom_id(client: anthropic.Anthropic) -> None:
    with pytest.raises(anthropic.BadRequestError) as caught:
        client.messages.batches.create(
            requests=[request("fine"), request("quick-one", speed="fast")],
            extra_headers={"anthropic-beta": "fast-mode-2026-02-01"},
        )
    assert caught.value.type == "invalid_request_error"
    assert "requests.1.params.speed" in caught.value.api_message
    assert "custom_id 'quick-one'" in caught.value.api_message
    assert "fast mode is not available" in caught.value.api_message


def test_standard_speed_is_accepted(client: anthropic.Anthropic) -> None:
    batches = client.messages.batches
    created = batches.create(
        requests=[request("std", speed="standard")], extra_headers={"anthropic-beta": "fast-mode-2026-02-01"}
    )
    wait_until_ended(batches, created.id)
    assert results_by_id(batches, created.id)["std"].message.usage.speed == "standard"


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"stream": True}, "requests.1.params.stream: streaming is not supported"),
        ({"max_tokens": 0}, "requests.1.params.max_tokens: must be at least 1"),
        ({"max_tokens": None}, "requests.1.params.max_tokens: Input should be a valid integer"),
        ({"messages": [{"role": "user"}]}, "requests.1.params.messages.0.content: Field required"),
        ({"temperature": 0.5}, "requests.1.params.temperature: Extra inputs are not permitted"),
    ],
)
def test_invalid_params_are_refused_naming_request_and_field(
    client: anthropic.Anthropic, params: dict[str, Any], expected: str
) -> None:
    with pytest.raises(anthropic.BadRequestError) as caught:
        client.messages.batches.create(requests=[request("ok"), request("broken", **params)])
    assert caught.value.api_message.startswith(expected)
    assert "(custom_id 'broken')" in caught.value.api_message


def test_missing_field_is_named(client: anthropic.Anthropic) -> None:
    broken = {"custom_id": "no-max", "params": {"model": MODEL, "messages": HELLO}}
    with pytest.raises(anthropic.BadRequestError) as caught:
        client.messages.batches.create(requests=[request("ok"), request("ok2"), request("ok3"), broken])
    assert caught.value.api_message == "requests.3.params.max_tokens: Field required (custom_id 'no-max')"


def test_duplicate_custom_ids_are_refused(client: anthropic.Anthropic) -> None:
    with pytest.raises(anthropic.BadRequestError) as caught:
        client.messages.batches.create(requests=[request("twin"), request("other"), request("twin")])
    message = caught.value.api_message
    assert message.startswith("requests.2.custom_id: duplicate custom_id 'twin' (also used by requests.0)")


@pytest.mark.parametrize("custom_id", ["", "has space", "x" * 65, "dots.not.allowed"])
def test_custom_id_pattern(client: anthropic.Anthropic, custom_id: str) -> None:
    with pytest.raises(anthropic.BadRequestError) as caught:
        client.messages.batches.create(requests=[request(custom_id)])
    assert caught.value.api_message.startswith("requests.0.custom_id: String should match pattern")


def test_empty_batch_is_refused(client: anthropic.Anthropic) -> None:
    with pytest.raises(anthropic.BadRequestError) as caught:
        client.messages.batches.create(requests=[])
    assert caught.value.api_message.startswith("requests: List should have at least 1 item")


def test_too_many_requests_configured_limit(start_server: StartServer) -> None:
    server = start_server(batches={"max_requests": 3})
    with pytest.raises(anthropic.BadRequestError) as caught:
        sdk(server).messages.batches.create(requests=[request(f"r{i}") for i in range(4)])
    assert caught.value.api_message == "requests: List should have at most 3 items after validation, not 4"


def test_too_many_requests_default_limit(server: MockServer) -> None:
    # 100,001 requests, kept tiny: the count is checked before any request is looked at.
    body = b'{"requests":[' + b",".join([b'{"custom_id":"a","params":{}}'] * 100_001) + b"]}"
    headers = {"x-api-key": "sk-test", "anthropic-version": "2023-06-01", "content-type": "application/json"}
    response = httpx.post(f"{server.url}/v1/messages/batches", content=body, headers=headers, timeout=30)
    assert response.status_code == 400
    assert response.json()["error"]["message"].startswith("requests: List should have at most 100000 items")


def test_body_over_the_limit_is_413(start_server: StartServer) -> None:
    server = start_server(batches={"max_body_bytes": 2_000})
    big = [request(f"r{i}", messages=[{"role": "user", "content": "x" * 500}]) for i in range(5)]
    with pytest.raises(anthropic.ContentTooLargeError) as caught:
        sdk(server).messages.batches.create(requests=big)
    assert caught.value.status_code == 413 and caught.value.type == "request_too_large"
    assert "2,000" in caught.value.api_message
    # Under the limit it is fine.
    assert sdk(server).messages.batches.create(requests=big[:1]).processing_status == "in_progress"


def test_catalog_problems_end_the_request_errored(start_server: StartServer) -> None:
    # Params are checked against the models "during processing": those requests end `errored`.
    server, clock = fake_clock_server(start_server)
    batches = sdk(server).messages.batches
    created = batches.create(
        requests=[
            request("good"),
            request("no-model", model="claude-nonexistent"),
            request("huge", max_tokens=10**7),
        ]
    )
    clock.advance(10)
    counts = batches.retrieve(created.id).request_counts
    assert (counts.succeeded, counts.errored) == (1, 2)
    results = results_by_id(batches, created.id)
    assert results["good"].type == "succeeded"
    assert results["no-model"].type == "errored"
    assert results["no-model"].error.error.type == "not_found_error"
    assert "claude-nonexistent" in results["no-model"].error.error.message
    assert results["huge"].error.error.type == "invalid_request_error"
    assert "max_tokens" in results["huge"].error.error.message


def test_fallbacks_are_checked_in_a_batch_as_on_messages(start_server: StartServer) -> None:
    # Without the server-side-fallback beta /v1/messages answers 400; in a batch that request errors.
    server, clock = fake_clock_server(start_server)
    batches = sdk(server).messages.batches
    created = batches.create(
        requests=[request("no-beta", model="claude-opus-5", fallbacks=[{"model": "claude-opus-4-8"}])]
    )
    clock.advance(10)
    error = results_by_id(batches, created.id)["no-beta"].error.error
    assert error.type == "invalid_request_error"
    assert error.message.startswith("fallbacks: requires the `anthropic-beta: server-side-fallback-")


# -- lifecycle ----------------------------------------------------------------------------------


@pytest.fixture(params=["memory", "redis"])
def storage(request: pytest.FixtureRequest) -> dict[str, str]:
    if request.param == "memory":
        return {}
    redis: RedisServer = request.getfixturevalue("redis_server")
    return {"storage": redis.url, "key_prefix": f"t-{uuid.uuid4().hex}:"}


def test_lifecycle(start_server: StartServer, storage: dict[str, str]) -> None:
    server, clock = fake_clock_server(start_server, **storage)
    batches = sdk(server).messages.batches
    created = batches.create(requests=[request(f"r{i}") for i in range(4)])
    assert created.processing_status == "in_progress"
    assert created.request_counts.to_dict() == {
        "processing": 4,
        "succeeded": 0,
        "errored": 0,
        "canceled": 0,
        "expired": 0,
    }
    assert created.ended_at is None and created.results_url is None
    assert created.expires_at - created.created_at == timedelta(days=1)
    with pytest.raises(anthropic.AnthropicError, match="No `results_url`"):
        batches.results(created.id)

    clock.advance(9.9)
    assert batches.retrieve(created.id).processing_status == "in_progress"
    clock.advance(0.1)
    ended = batches.retrieve(created.id)
    assert ended.processing_status == "ended"
    assert ended.request_counts.processing == 0 and ended.request_counts.succeeded == 4
    assert ended.ended_at - ended.created_at == timedelta(seconds=10)
    results = results_by_id(batches, created.id)
    assert sorted(results) == ["r0", "r1", "r2", "r3"]
    assert all(result.type == "succeeded" for result in results.values())

    if storage:  # a second replica on the same Redis serves the same batch, with the same results
        replica_clock = FakeClock(start=clock.now())
        replica = start_server(clock=replica_clock, timing={"time_scale": SCALE}, **storage)
        seen = sdk(replica).messages.batches.retrieve(created.id)
        assert seen.results_url.startswith(replica.url)  # each replica points at itself
        assert seen.model_copy(update={"results_url": ended.results_url}) == ended
        assert results_by_id(sdk(replica).messages.batches, created.id) == results


def test_timestamps_are_rfc3339_with_microseconds(start_server: StartServer) -> None:
    server, clock = fake_clock_server(start_server)
    batches = sdk(server).messages.batches
    batch_id = batches.create(requests=[request("a")]).id
    batches.cancel(batch_id)
    clock.advance(10)
    raw = batches.with_raw_response.retrieve(batch_id).http_response.json()
    for name in ("created_at", "expires_at", "ended_at", "cancel_initiated_at"):
        assert RFC3339_MICROS.match(raw[name]), (name, raw[name])
    assert raw["archived_at"] is None


def test_outcome_mix_is_deterministic(start_server: StartServer) -> None:
    mix = {**SLOW_BATCHES, "errored_weight": 1.0, "expired_weight": 1.0, "canceled_weight": 1.0}
    ids = [f"req-{i}" for i in range(40)]

    def outcomes(seed: int) -> dict[str, str]:
        server, clock = fake_clock_server(start_server, seed=seed, batches=mix)
        batches = sdk(server).messages.batches
        batch_id = batches.create(requests=[request(custom_id) for custom_id in ids]).id
        clock.advance(10)
        counts = batches.retrieve(batch_id).request_counts.to_dict()
        found = {custom_id: result.type for custom_id, result in results_by_id(batches, batch_id).items()}
        assert Counter(found.values()) == {k: v for k, v in counts.items() if k != "processing" and v}
        return found

    first = outcomes(seed=7)
    assert set(first.values()) == {"succeeded", "errored", "expired", "canceled"}
    assert outcomes(seed=7) == first
    assert outcomes(seed=8) != first


def test_simulated_errors_look_like_api_errors(start_server: StartServer) -> None:
    server, clock = fake_clock_server(
        start_server, batches={**SLOW_BATCHES, "succeeded_weight": 0.0, "errored_weight": 1.0}
    )
    batches = sdk(server).messages.batches
    batch_id = batches.create(requests=[request("doomed")]).id
    clock.advance(10)
    error = results_by_id(batches, batch_id)["doomed"].error
    assert (error.type, error.error.type, error.request_id) == ("error", "api_error", None)


def test_cancel_flow(start_server: StartServer) -> None:
    server, clock = fake_clock_server(start_server)
    batches = sdk(server).messages.batches
    ids = [f"c{i}" for i in range(30)]
    batch_id = batches.create(requests=[request(custom_id) for custom_id in ids]).id
    clock.advance(5)
    canceling = batches.cancel(batch_id)
    assert canceling.processing_status == "canceling"
    assert canceling.cancel_initiated_at is not None and canceling.ended_at is None
    assert canceling.request_counts.processing == 30
    assert batches.cancel(batch_id) == canceling  # a second cancel changes nothing
    assert batches.retrieve(batch_id).processing_status == "canceling"
    with pytest.raises(anthropic.BadRequestError, match="cancel it first"):
        batches.delete(batch_id)

    clock.advance(1)  # the cancel takes 1 s; requests due by then still finish
    ended = batches.retrieve(batch_id)
    assert ended.processing_status == "ended"
    assert ended.ended_at - ended.cancel_initiated_at == timedelta(seconds=1)
    counts = ended.request_counts
    assert counts.succeeded > 0 and counts.canceled > 0
    assert counts.succeeded + counts.canceled == 30 and counts.processing == 0
    results = results_by_id(batches, batch_id)
    assert Counter(result.type for result in results.values()) == {
        "succeeded": counts.succeeded,
        "canceled": counts.canceled,
    }
    with pytest.raises(anthropic.BadRequestError, match="already ended"):
        batches.cancel(batch_id)


def test_unfinished_requests_expire_after_24_hours(start_server: StartServer) -> None:
    # Processing would take 48 h: the batch ends at its expiry, with the unfinished requests expired.
    server, clock = fake_clock_server(start_server, batches={"processing_seconds": 2 * DAY * SCALE})
    batches = sdk(server).messages.batches
    created = batches.create(requests=[request(f"e{i}") for i in range(20)])
    clock.advance(DAY - 1)
    assert batches.retrieve(created.id).processing_status == "in_progress"
    clock.advance(1)
    ended = batches.retrieve(created.id)
    assert ended.processing_status == "ended" and ended.ended_at == created.expires_at
    counts = ended.request_counts
    assert counts.expired > 0 and counts.succeeded > 0 and counts.succeeded + counts.expired == 20
    assert {result.type for result in results_by_id(batches, created.id).values()} == {"succeeded", "expired"}


def test_results_are_archived_after_29_days(start_server: StartServer) -> None:
    server, clock = fake_clock_server(start_server)
    batches = sdk(server).messages.batches
    batch_id = batches.create(requests=[request("old")]).id
    clock.advance(10 + 29 * DAY)
    archived = batches.retrieve(batch_id)
    assert archived.archived_at == archived.ended_at + timedelta(days=29)
    with pytest.raises(anthropic.NotFoundError, match="archived"):
        list(batches.results(batch_id))


def test_delete_rules(start_server: StartServer) -> None:
    server, clock = fake_clock_server(start_server)
    client = sdk(server)
    batches = client.messages.batches
    batch_id = batches.create(requests=[request("d")]).id
    with pytest.raises(anthropic.BadRequestError) as caught:
        batches.delete(batch_id)
    assert caught.value.type == "invalid_request_error" and "in_progress" in caught.value.api_message
    clock.advance(10)
    assert batches.delete(batch_id).id == batch_id
    for call in (batches.retrieve, batches.delete, batches.cancel):
        with pytest.raises(anthropic.NotFoundError):
            call(batch_id)
    with pytest.raises(anthropic.NotFoundError):
        client.get(f"/v1/messages/batches/{batch_id}/results", cast_to=httpx.Response)
    assert batch_id not in [batch.id for batch in batches.list()]


def test_results_before_the_end_are_refused(start_server: StartServer) -> None:
    server, _ = fake_clock_server(start_server)
    client = sdk(server)
    batch_id = client.messages.batches.create(requests=[request("early")]).id
    with pytest.raises(anthropic.BadRequestError, match="results are available once processing has ended"):
        client.get(f"/v1/messages/batches/{batch_id}/results", cast_to=httpx.Response)


def test_list_pages_newest_first(start_server: StartServer) -> None:
    server, _ = fake_clock_server(start_server)  # the clock stands still: all five share created_at
    batches = sdk(server).messages.batches
    created = [batches.create(requests=[request(f"p{i}")]).id for i in range(5)]
    first = batches.list(limit=2)
    assert [batch.id for batch in first.data] == created[::-1][:2] and first.has_more
    assert [batch.id for batch in batches.list(limit=2)] == created[::-1]
    assert [batch.id for batch in batches.list(limit=2, after_id=created[2])] == created[1::-1]
    with pytest.raises(anthropic.BadRequestError, match="limit"):
        batches.list(limit=1001)


def test_batches_belong_to_the_organisation(start_server: StartServer) -> None:
    server, _ = fake_clock_server(start_server, organizations={"acme": {"keys": ["sk-acme-1", "sk-acme-2"]}})
    batch_id = sdk(server, "sk-acme-1").messages.batches.create(requests=[request("mine")]).id
    assert sdk(server, "sk-acme-2").messages.batches.retrieve(batch_id).id == batch_id
    outsider = sdk(server, "sk-someone-else").messages.batches
    with pytest.raises(anthropic.NotFoundError):
        outsider.retrieve(batch_id)
    with pytest.raises(anthropic.NotFoundError):
        outsider.cancel(batch_id)
    assert list(outsider.list()) == []


def test_a_request_with_an_invalid_tool_schema_is_refused_at_create(client):
    bad = {"type": "object", "properties": {"a": {"type": {}}}}
    params = {
        "model": "claude-opus-4-7",
        "max_tokens": 20,
        "messages": [{"role": "user", "content": "hi"}],
        "tools": [{"name": "f", "input_schema": bad}],
        "tool_choice": {"type": "any"},
    }
    with pytest.raises(anthropic.BadRequestError) as caught:
        client.messages.batches.create(requests=[{"custom_id": "bad-schema", "params": params}])
    assert "tools.0.input_schema" in caught.value.api_message and "bad-schema" in caught.value.api_message
