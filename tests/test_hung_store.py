"""A hung Redis (paused with SIGSTOP: connections stay open, nothing answers) costs a request one
store deadline in all, whatever number of store calls it makes, and the 503 says how long."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from typing import Any

import anthropic
import httpx
import pytest

from mockserver import redis_client
from mockserver.redis_client import REQUEST_STORE_WAIT
from mockserver.server import MockServer
from tests.support.redis_server import RedisServer, redis_server_fixture, unique_key_prefix

redis_server = redis_server_fixture(scope="module")
pytestmark = pytest.mark.redis

HELLO = [{"role": "user", "content": "Hello"}]
# The wait, and what a loaded shared machine may add to it; a timeout per store call took 5 s.
SLACK = 0.8


@pytest.fixture
def hung(redis_server: RedisServer) -> Iterator[Callable[[], None]]:
    yield redis_server.pause
    redis_server.resume()


def timed(call: Callable[[], Any]) -> tuple[float, Any]:
    started = time.monotonic()
    try:
        result = call()
    except Exception as exc:
        result = exc
    return time.monotonic() - started, result


def assert_one_deadline(elapsed: float, error: Any) -> None:
    assert isinstance(error, anthropic.APIStatusError), error
    assert error.status_code == 503 and error.type == "api_error"
    assert f"no reply within {REQUEST_STORE_WAIT:g} s" in error.message
    assert REQUEST_STORE_WAIT * 0.9 <= elapsed < REQUEST_STORE_WAIT + SLACK


def test_a_hung_store_costs_a_request_one_deadline_and_the_503_says_so(
    start_server, redis_server: RedisServer, hung
) -> None:
    server: MockServer = start_server(storage=redis_server.url, key_prefix=unique_key_prefix())
    client = anthropic.Anthropic(api_key="sk-hung", base_url=server.url, max_retries=0, timeout=30)

    def create(**extra: Any) -> Any:
        return client.messages.create(model="claude-opus-4-7", max_tokens=5, messages=HELLO, **extra)

    def stream() -> Any:
        with client.messages.stream(model="claude-opus-4-7", max_tokens=5, messages=HELLO) as events:
            return events.get_final_message()

    assert create()  # connections are open and the settings read
    time.sleep(0.05)
    hung()
    for call in (create, stream, create):  # a settings read, then admission, for each
        assert_one_deadline(*timed(call))
    elapsed, response = timed(lambda: httpx.get(f"{server.url}/_admin/requests", timeout=30))
    assert response.status_code == 503 and elapsed < REQUEST_STORE_WAIT + SLACK


def test_a_request_that_needs_no_store_call_is_served_after_one_deadline(
    start_server, redis_server: RedisServer, hung
) -> None:
    """Without rate limits the only store calls are the settings read (waited for at most the
    deadline, then the request goes on with the settings it has) and the journal row, which is
    written behind the response and logged if lost."""
    server = start_server(storage=redis_server.url, key_prefix=unique_key_prefix(), limits={"enabled": False})
    client = anthropic.Anthropic(api_key="sk-hung", base_url=server.url, max_retries=0, timeout=30)
    assert client.messages.create(model="claude-opus-4-7", max_tokens=5, messages=HELLO)
    time.sleep(0.05)
    hung()
    for _ in range(2):
        elapsed, message = timed(
            lambda: client.messages.create(model="claude-opus-4-7", max_tokens=5, messages=HELLO)
        )
        assert isinstance(message, anthropic.types.Message), message
        assert elapsed < REQUEST_STORE_WAIT + SLACK


def test_an_admin_reset_is_not_cut_short_by_the_request_deadline(
    start_server, redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A reset deletes page by page; on a large or slow Redis its calls together take longer than a
    request may wait, and stopping there left limits half cleared and settings and faults not reset."""
    server = start_server(storage=redis_server.url, key_prefix=unique_key_prefix())
    admin = httpx.Client(base_url=server.url, timeout=30)
    assert admin.patch("/_admin/settings", json={"seed": 42}).status_code == 200
    fault = {"name": "f1", "kind": "http_error", "status": 529, "count": 1}
    assert admin.post("/_admin/faults", json=fault).status_code == 201

    send = redis_client._Connection.send

    async def slow_send(self: Any, command: bytes) -> Any:  # each store call: a third of the wait
        await asyncio.sleep(REQUEST_STORE_WAIT / 3)
        return await send(self, command)

    monkeypatch.setattr(redis_client._Connection, "send", slow_send)
    elapsed, response = timed(lambda: admin.post("/_admin/reset"))
    monkeypatch.undo()
    assert response.status_code == 200, response.text
    assert elapsed > REQUEST_STORE_WAIT  # it did take longer than a request may wait
    assert admin.get("/_admin/settings").json()["seed"] == 0
    assert admin.get("/_admin/faults").json()["data"] == []
    admin.close()
