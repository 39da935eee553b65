"""Chaos inside SSE streams: mid-stream errors, resets, truncation, malformed chunks and stalls."""

from __future__ import annotations

import json

import anthropic
import httpx2
import pytest

from mockserver.admin_client import AdminClient

HELLO = [{"role": "user", "content": "Tell me a story"}]


def stream_with(server, fault, **client_options):
    client = anthropic.Anthropic(api_key="sk-stream", base_url=server.url, max_retries=0, **client_options)
    header = {"x-mockserver-fault": json.dumps(fault)}
    return client.messages.stream(
        model="claude-opus-4-7", max_tokens=200, messages=HELLO, extra_headers=header
    )


def last_row(server):
    with AdminClient(server.url) as admin:
        return admin.requests()[-1]


def test_error_event_after_n_tokens_raises_the_sdk_status_error(start_server):
    server = start_server()
    received = []
    with pytest.raises(anthropic.APIStatusError) as caught:
        with stream_with(server, {"kind": "stream_error", "after_tokens": 5}) as stream:
            received.extend(stream.text_stream)
    error = caught.value
    assert error.status_code == 200 and error.type == "overloaded_error"  # the SDK's view of it
    assert error.request_id.startswith("req_")
    assert len("".join(received)) > 0
    row = last_row(server)
    assert row["fault"] == "request-header" and row["status"] == 200
    assert 5 <= row["delivered_output_tokens"] < row["usage"]["output_tokens"]


def test_reset_mid_body_surfaces_as_a_connection_error(start_server):
    server = start_server()
    with pytest.raises((httpx2.RemoteProtocolError, anthropic.APIConnectionError)):
        with stream_with(server, {"kind": "stream_reset", "after_tokens": 3}) as stream:
            for _ in stream.text_stream:
                pass
    assert last_row(server)["delivered_output_tokens"] >= 3


def test_truncated_stream_ends_without_message_stop(start_server):
    server = start_server()
    with stream_with(server, {"kind": "truncate", "after_tokens": 4}) as stream:
        message = stream.get_final_message()
    assert message.stop_reason is None  # no message_delta ever came
    assert len(message.content[0].text) > 0 and last_row(server)["delivered_output_tokens"] >= 4


def test_malformed_chunk_breaks_the_sdks_parser(start_server):
    server = start_server()
    with pytest.raises(ValueError):  # json.JSONDecodeError
        with stream_with(server, {"kind": "malformed", "after_tokens": 2}) as stream:
            for _ in stream.text_stream:
                pass


def test_stall_trips_the_clients_read_timeout(start_server):
    server = start_server()
    fault = {"kind": "stall", "after_tokens": 3, "stall_seconds": 5}
    with pytest.raises((httpx2.ReadTimeout, anthropic.APITimeoutError)):
        with stream_with(server, fault, timeout=httpx2.Timeout(5.0, read=0.5)) as stream:
            for _ in stream.text_stream:
                pass


def test_a_short_stall_delays_but_completes(start_server):
    server = start_server()
    with stream_with(server, {"kind": "stall", "after_tokens": 3, "stall_seconds": 0.3}) as stream:
        message = stream.get_final_message()
    assert message.stop_reason == "max_tokens" or message.stop_reason == "end_turn"
    row = last_row(server)
    assert row["delivered_output_tokens"] == row["usage"]["output_tokens"]
    assert row["duration_seconds"] >= 0.3


def test_stream_faults_from_settings_only_hit_streams(start_server):
    server = start_server(
        faults=[{"name": "drop-streams", "kind": "stream_error", "after_tokens": 1, "count": 1}]
    )
    client = anthropic.Anthropic(api_key="k", base_url=server.url, max_retries=0)
    assert client.messages.create(model="claude-opus-4-7", max_tokens=20, messages=HELLO).content
    with pytest.raises(anthropic.APIStatusError):
        with client.messages.stream(model="claude-opus-4-7", max_tokens=20, messages=HELLO) as stream:
            stream.get_final_message()
    with client.messages.stream(model="claude-opus-4-7", max_tokens=20, messages=HELLO) as stream:
        assert stream.get_final_message().content  # count=1: only the first stream
