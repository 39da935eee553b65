"""Reset faults reach the connection through the scope mockserver's protocol fills, whatever wraps the app.

These servers are started by hand (not `MockServer`) to choose uvicorn's options: trace logging,
which wraps the app and its `receive` in uvicorn's message logger, and other HTTP protocols.
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import time
from collections.abc import Iterator
from typing import Any

import anthropic
import httpx2
import pytest
import uvicorn
from uvicorn.middleware.message_logger import MessageLoggerMiddleware
from uvicorn.protocols.http.h11_impl import H11Protocol

from mockserver.app import MockApp, create_app
from mockserver.errors import InternalServerError
from mockserver.http_protocol import TransportInScope
from mockserver.server import bind_socket, url_of, uvicorn_config
from tests.conftest import make_settings

HELLO = [{"role": "user", "content": "Tell me a story"}]


class H11ProtocolWithTransport(TransportInScope, H11Protocol):
    """The h11 protocol (uvicorn's fallback without httptools) with the transport published."""


@contextlib.contextmanager
def uvicorn_server(app: MockApp, **config: Any) -> Iterator[tuple[str, uvicorn.Server]]:
    sock = bind_socket("127.0.0.1", 0)
    server = uvicorn.Server(uvicorn_config(app, **config))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "server did not start"
        time.sleep(0.005)
    try:
        yield url_of(sock), server
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


def client(url: str) -> anthropic.Anthropic:
    return anthropic.Anthropic(api_key="sk-reset", base_url=url, max_retries=0)


def create_with(url: str, kind: str) -> None:
    header = {"x-mockserver-fault": json.dumps({"kind": kind})}
    client(url).messages.create(model="claude-opus-4-7", max_tokens=20, messages=HELLO, extra_headers=header)


def stream_with(url: str, kind: str) -> None:
    header = {"x-mockserver-fault": json.dumps({"kind": kind, "after_tokens": 3})}
    with client(url).messages.stream(
        model="claude-opus-4-7", max_tokens=50, messages=HELLO, extra_headers=header
    ) as stream:
        for _ in stream.text_stream:
            pass


def wraps(app: Any, cls: type) -> bool:
    while app is not None:
        if isinstance(app, cls):
            return True
        app = getattr(app, "app", None)
    return False


def test_reset_under_uvicorn_trace_logging_is_a_connection_error():
    app = create_app(make_settings())
    with uvicorn_server(app, log_level="trace") as (url, server):
        assert wraps(server.config.loaded_app, MessageLoggerMiddleware)  # `receive` is wrapped
        with pytest.raises(anthropic.APIConnectionError):
            create_with(url, "reset")
        with pytest.raises((httpx2.RemoteProtocolError, anthropic.APIConnectionError)):
            stream_with(url, "stream_reset")
        assert client(url).messages.create(model="claude-opus-4-7", max_tokens=5, messages=HELLO).content
    assert app.state.mock.server_errors == []


def test_reset_on_the_h11_protocol_is_a_connection_error():
    app = create_app(make_settings())
    with uvicorn_server(app, http=H11ProtocolWithTransport) as (url, _):
        with pytest.raises(anthropic.APIConnectionError):
            create_with(url, "reset")
        with pytest.raises((httpx2.RemoteProtocolError, anthropic.APIConnectionError)):
            stream_with(url, "stream_reset")
    assert app.state.mock.server_errors == []


@pytest.mark.parametrize("protocol", ["h11", "httptools"])
def test_reset_on_a_server_without_the_transport_says_why(caplog, protocol):
    app = create_app(make_settings())
    with caplog.at_level(logging.ERROR, logger="mockserver"), uvicorn_server(app, http=protocol) as (url, _):
        with pytest.raises(anthropic.InternalServerError) as caught:
            create_with(url, "reset")
        assert "reset faults need mockserver's own HTTP server" in caught.value.message
        assert caught.value.body["error"]["type"] == "api_error"
        # Mid-stream the status is sent already: the stream breaks, and the log and the embedding
        # test's server errors say why.
        with pytest.raises((httpx2.RemoteProtocolError, anthropic.APIConnectionError)):
            stream_with(url, "stream_reset")
    errors = app.state.mock.server_errors
    assert len(errors) == 1 and isinstance(errors[0], InternalServerError)
    logged = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR and r.name == "mockserver"]
    assert sum("reset faults need mockserver's own HTTP server" in message for message in logged) == 2


@pytest.mark.parametrize("protocol", ["mockserver", "h11"])
def test_a_reset_logs_no_error(caplog, protocol):
    # uvicorn logged "ASGI callable returned without starting response" for every reset: the app
    # returned before the server had seen the connection it aborted go.
    app = create_app(make_settings())
    config = {"http": H11ProtocolWithTransport} if protocol == "h11" else {}
    uvicorn_log = logging.getLogger("uvicorn")  # uvicorn's config keeps it from propagating to caplog
    with caplog.at_level(logging.WARNING), uvicorn_server(app, **config) as (url, _):
        uvicorn_log.addHandler(caplog.handler)  # once the server has configured its logging
        try:
            for _ in range(3):
                with pytest.raises(anthropic.APIConnectionError):
                    create_with(url, "reset")
        finally:
            uvicorn_log.removeHandler(caplog.handler)
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []
