"""Scripted replies on the server side: the admin API's checks; no store call while nothing is scripted."""

from __future__ import annotations

import anthropic
import httpx
import pytest

from mockserver.admin_client import AdminClient
from tests.support.redis_server import RedisServer, redis_server_fixture, unique_key_prefix

HELLO = [{"role": "user", "content": "Hello"}]

redis_server = redis_server_fixture(scope="module")


@pytest.fixture
def running(start_server):
    server = start_server()
    admin = AdminClient(server.url)
    client = anthropic.Anthropic(api_key="sk-test", base_url=server.url, max_retries=0)
    yield server, admin, client
    admin.close()
    client.close()


def ask(client):
    return client.messages.create(model="claude-opus-4-7", max_tokens=20, messages=HELLO)


def test_an_empty_script_costs_no_store_call_per_request(running, monkeypatch):
    server, admin, client = running
    reads: list[str] = []
    store = server.state.store
    for name in ("items", "get_many", "incr"):
        real = getattr(store, name)

        async def counting(key, *args, _real=real, **kwargs):
            keys = key if isinstance(key, list) else [key]
            reads.extend(k for k in keys if k.startswith("scripted:"))
            return await _real(key, *args, **kwargs)

        monkeypatch.setattr(store, name, counting)
    ask(client)  # the first request of a worker reads the (empty) script once
    assert reads == ["scripted:entries"]
    for _ in range(5):
        ask(client)
    assert reads == ["scripted:entries"]
    admin.add_replies({"text": "Scripted."})
    assert ask(client).content[0].text == "Scripted."  # read again after the change, then claimed
    used = len(reads)
    ask(client)
    ask(client)
    assert len(reads) == used  # used up: known to this worker without asking the store


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ({}, "give the reply (text, tool_use or both) or an error"),
        ({"text": "a", "error": {"status": 500}}, "a scripted error cannot also carry text"),
        ({"error": {"status": 200}}, "error.status: Input should be greater than or equal to 400"),
        ({"error": {"status": 429, "headers": {"retry-after": 1}}}, "error.headers.retry-after: Input"),
        ({"text": "a", "speed": "slow"}, "speed: Input should be 'standard' or 'fast'"),
        ({"text": "a", "times": -1}, "times: Input should be greater than or equal to 0"),
        ({"tool_use": {"input": {}}}, "tool_use.name: Field required"),
        ({"text": "a", "colour": "red"}, "colour: Extra inputs are not permitted"),
        ({"replies": []}, "replies: expected a non-empty list of replies"),
        ({"replies": [{"text": "a"}, "b"]}, "replies.1: Input should be a valid dictionary"),
        ({"replies": [{"text": "a"}], "text": "b"}, "text: give either one reply or {'replies': [...]}"),
    ],
)
def test_a_bad_entry_is_a_400_naming_the_field_and_queues_nothing(running, body, words):
    server, admin, _ = running
    response = httpx.post(f"{server.url}/_admin/replies", json=body)
    assert response.status_code == 400
    error = response.json()
    assert error["type"] == "error" and error["error"]["type"] == "invalid_request_error"
    assert words in error["error"]["message"]
    assert admin.replies() == []


def test_the_routes_need_the_admin_token(start_server):
    server = start_server(admin={"token": "secret"})
    for method in ("GET", "POST", "DELETE"):
        response = httpx.request(method, f"{server.url}/_admin/replies", json={"text": "a"})
        assert response.status_code == 401, method
    with AdminClient(server.url, token="secret") as admin:
        [entry] = admin.add_replies({"text": "a", "times": 0})
        assert entry["id"].startswith("scripted_") and entry["remaining"] is None
        assert admin.clear_replies() == 1


@pytest.mark.redis
def test_a_script_change_is_seen_by_every_worker_without_rebuilding_its_runtime(
    start_server, redis_server: RedisServer
):
    # Two servers on one Redis and key prefix are two workers of one mockserver.
    shared = {"storage": redis_server.url, "key_prefix": unique_key_prefix()}
    first, second = start_server(**shared), start_server(**shared)
    clients = [anthropic.Anthropic(api_key="sk-test", base_url=s.url, max_retries=0) for s in (first, second)]
    with AdminClient(first.url) as admin:
        admin.configure(seed=3)  # a stored patch: a rebuild would make a new runtime from it
        ask(clients[1])  # the second worker has read the (empty) script
        runtimes = first.state.runtime, second.state.runtime
        admin.add_replies({"text": "Scripted on the first."}, {"text": "Then on the second."})
        assert ask(clients[0]).content[0].text == "Scripted on the first."
        assert ask(clients[1]).content[0].text == "Then on the second."  # seen as soon as the call answered
        assert admin.clear_replies() == 2
        # The same objects: no worker rebuilt its runtime (re-validated settings, re-read replies files).
        assert (first.state.runtime is runtimes[0], second.state.runtime is runtimes[1]) == (True, True)
        admin.configure(seed=5)  # a settings change still rebuilds every worker's runtime
        ask(clients[1])
        assert second.state.runtime.settings.seed == 5
    for client in clients:
        client.close()
