"""The `mockserver` handle against the settings a test gives its server: the key its clients send,
what it can show of request bodies."""

from __future__ import annotations

import anthropic
import httpx2
import pytest

HELLO = [{"role": "user", "content": "Hello"}]


def ask(client):
    return client.messages.create(model="claude-opus-4-7", max_tokens=10, messages=HELLO)


@pytest.mark.mockserver(api_keys=["sk-live-1", "sk-live-2"])
def test_with_api_keys_the_clients_send_the_first_one(mockserver, anthropic_client, async_anthropic_client):
    assert anthropic_client.api_key == async_anthropic_client.api_key == "sk-live-1"
    assert ask(anthropic_client).content
    with pytest.raises(anthropic.AuthenticationError):  # any other key is refused, as configured
        ask(mockserver.anthropic_client(api_key="test", max_retries=0))
    mockserver.configure(api_keys=["sk-live-2"])  # clients made from then on send the new one
    assert ask(mockserver.anthropic_client()).content
    assert [row["status"] for row in mockserver.requests()] == [200, 401, 200]


@pytest.mark.mockserver(api_keys=["sk-live-1"])
def test_with_api_keys_the_environment_names_the_first_one(mockserver_env):
    assert ask(anthropic.Anthropic()).content


def test_without_api_keys_the_clients_send_test(anthropic_client):
    assert anthropic_client.api_key == "test"
    assert ask(anthropic_client).content


@pytest.mark.mockserver(journal={"zero_data_retention": True})
def test_request_bodies_under_zero_data_retention_say_why_there_are_none(mockserver, anthropic_client):
    ask(anthropic_client)
    with pytest.raises(AssertionError, match=r"zero data retention .* hides request bodies"):
        mockserver.request_bodies()


def test_request_bodies_when_not_recorded_say_how_to_record_them(mockserver, anthropic_client):
    mockserver.configure(journal={"record_bodies": False})
    ask(anthropic_client)
    with pytest.raises(AssertionError, match="does not record request bodies"):
        mockserver.request_bodies()


def test_a_request_the_client_gave_up_on_is_in_the_journal_at_once(mockserver):
    # The server journals a request when it ends, a few ms after the client gave up on it; the
    # handle waits for requests in flight, so the test need not poll (it failed 2 runs in 3).
    mockserver.admin.add_fault({"name": "stall", "kind": "stall", "after_tokens": 3, "stall_seconds": 3600})
    client = mockserver.anthropic_client(max_retries=0, timeout=0.5)
    for attempt in range(3):
        with pytest.raises((anthropic.APIConnectionError, httpx2.TimeoutException)):  # by SDK version
            with client.messages.stream(model="claude-opus-4-7", max_tokens=50, messages=HELLO) as stream:
                for _ in stream.text_stream:
                    pass
        row = mockserver.last_request()
        assert (row["status"], row["fault"]) == (200, "stall")
        assert len(mockserver.requests()) == attempt + 1
