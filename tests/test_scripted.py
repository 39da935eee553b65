"""Scripted replies on the server side: the admin API's checks; no store call while nothing is scripted."""

from __future__ import annotations

import anthropic
import httpx
import pytest

from mockserver.admin_client import AdminClient

HELLO = [{"role": "user", "content": "Hello"}]


@pytest.fixture
def running(start_server):
    server = start_server()
    admin = AdminClient(server.url)
    client = anthropic.Anthropic(api_key="sk-test", base_url=server.url, max_retries=0)
    yield server, admin, client
    admin.close()
    client.close()


def scripted_429(headers):
    return {"error": {"status": 429, "headers": headers}}


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
        (scripted_429({"retry-after": "😀"}), "error.headers: retry-after: a header value is printable"),
        (scripted_429({"x-a": "1\r\nx-b: 2"}), "error.headers: x-a: a header value is printable ASCII"),
        (scripted_429({"bad name": "1"}), "error.headers: 'bad name' is not an HTTP header name"),
        (scripted_429({"é": "1"}), "error.headers: 'é' is not an HTTP header name"),
        (scripted_429({"Content-Length": "5"}), "error.headers: 'Content-Length' is set by the server"),
        (scripted_429({"request-id": "x"}), "error.headers: 'request-id' is set by the server"),
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


def test_a_scripted_header_is_sent_as_given(running):
    server, admin, client = running
    admin.add_replies({"error": {"status": 429, "headers": {"Retry-After": "7", "x-note": "a\tb c"}}})
    with pytest.raises(anthropic.RateLimitError) as caught:
        ask(client)
    assert caught.value.response.headers["retry-after"] == "7"
    assert caught.value.response.headers["x-note"] == "a\tb c"
    assert server.state.server_errors == []
