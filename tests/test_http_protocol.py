"""The coalescing transport: one loop turn's writes leave as one, in order, before a close or abort."""

from __future__ import annotations

import asyncio
import json
import socket
from urllib.parse import urlsplit

from mockserver.http_protocol import CoalescingTransport
from mockserver.server import MockServer


class RecordingTransport:
    def __init__(self) -> None:
        self.calls: list[tuple[str, bytes]] = []
        self.closing = False

    def write(self, data: bytes) -> None:
        self.calls.append(("write", data))

    def close(self) -> None:
        self.calls.append(("close", b""))

    def abort(self) -> None:
        self.calls.append(("abort", b""))

    def get_write_buffer_size(self) -> int:
        return 7

    def is_closing(self) -> bool:
        return self.closing


def test_writes_of_one_turn_are_one_write_at_its_end() -> None:
    async def scenario() -> list[tuple[str, bytes]]:
        inner = RecordingTransport()
        transport = CoalescingTransport(inner, asyncio.get_running_loop())  # type: ignore[arg-type]
        transport.write(b"HTTP/1.1 200 OK\r\n\r\n")
        transport.write(bytearray(b"body"))
        assert inner.calls == []  # nothing leaves before the turn ends
        assert transport.get_write_buffer_size() == 7 + 23
        await asyncio.sleep(0)
        transport.write(b"next turn")
        await asyncio.sleep(0)
        return inner.calls

    assert asyncio.run(scenario()) == [("write", b"HTTP/1.1 200 OK\r\n\r\nbody"), ("write", b"next turn")]


def test_close_and_abort_send_what_was_written_first() -> None:
    async def scenario() -> tuple[list[tuple[str, bytes]], list[tuple[str, bytes]]]:
        loop = asyncio.get_running_loop()
        closed, aborted = RecordingTransport(), RecordingTransport()
        for inner, end in ((closed, "close"), (aborted, "abort")):
            transport = CoalescingTransport(inner, loop)  # type: ignore[arg-type]
            transport.write(b"last words")
            getattr(transport, end)()
            assert transport.is_closing() is False  # everything else is the transport's own
        await asyncio.sleep(0)  # the scheduled flush finds nothing left to send
        return closed.calls, aborted.calls

    closed, aborted = asyncio.run(scenario())
    assert closed == [("write", b"last words"), ("close", b"")]
    assert aborted == [("write", b"last words"), ("abort", b"")]


def test_nothing_is_written_to_a_connection_lost_before_the_turn_ended() -> None:
    async def scenario() -> list[tuple[str, bytes]]:
        inner = RecordingTransport()
        transport = CoalescingTransport(inner, asyncio.get_running_loop())  # type: ignore[arg-type]
        transport.write(b"too late")
        inner.closing = True  # the peer went away earlier in the same turn
        await asyncio.sleep(0)
        assert transport.get_write_buffer_size() == 7  # dropped, not kept for a later write
        return inner.calls

    assert asyncio.run(scenario()) == []


def test_served_connections_write_through_it(server: MockServer) -> None:
    body = json.dumps(
        {"model": "claude-opus-4-7", "max_tokens": 8, "messages": [{"role": "user", "content": "Hi"}]}
    )
    request = (
        "POST /v1/messages HTTP/1.1\r\nhost: mock\r\nx-api-key: test\r\nanthropic-version: 2023-06-01\r\n"
        f"content-type: application/json\r\ncontent-length: {len(body)}\r\n\r\n{body}"
    ).encode()
    address = urlsplit(server.url)
    with socket.create_connection((address.hostname, address.port), timeout=10) as sock:
        for _ in range(3):  # keep-alive: every reply on the connection, not just the first
            sock.sendall(request)
            # Headers and body are written as one: the first read that returns holds all of the reply.
            received = sock.recv(1 << 20)
            head, _, payload = received.partition(b"\r\n\r\n")
            length = next(
                int(line.split(b":", 1)[1])
                for line in head.split(b"\r\n")
                if line.lower().startswith(b"content-length")
            )
            assert head.startswith(b"HTTP/1.1 200")
            assert len(payload) == length
            assert json.loads(payload)["type"] == "message"
        assert server._server is not None
        connections = server._server.server_state.connections
        assert connections and all(type(c.transport) is CoalescingTransport for c in connections)
