"""uvicorn's HTTP protocol, with the writes of one event-loop turn sent as one, and the connection's
transport in every request's ASGI scope (under `TRANSPORT_KEY`) for chaos faults that reset it.

uvicorn writes a response's status line and headers in one `transport.write` and its body in
another, and each write is a `send` syscall and, with TCP_NODELAY, a TCP segment of its own that
wakes the client up. Holding the writes until the end of the loop turn they were made in (a
`call_soon`) sends a whole non-streaming reply as one segment: the server's system time per
request halves (bench/throughput.py). Nothing waits longer than that turn: a stream's events leave
at the end of the turn they were written in, and a write before a close or an abort is sent first.
"""

from __future__ import annotations

import asyncio
from typing import Any, cast

from uvicorn.protocols.http.auto import AutoHTTPProtocol

# The scope key of the connection's transport (an `asyncio.Transport`); absent on other servers.
TRANSPORT_KEY = "mockserver.transport"


class CoalescingTransport:
    """Stands in for the connection's transport; `write`s wait for the end of the loop turn."""

    __slots__ = ("_loop", "_pending", "_transport")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._pending: list[bytes] = []

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if not self._pending:
            self._loop.call_soon(self.flush)
        self._pending.append(bytes(data))

    def writelines(self, chunks: list[bytes]) -> None:
        # Not left to __getattr__: the transport's own would jump ahead of what is pending.
        for chunk in chunks:
            self.write(chunk)

    def flush(self) -> None:
        pending = self._pending
        if not pending:
            return
        # The peer may have gone between the write and the end of its turn; uvicorn itself never
        # writes to a lost connection (uvloop raises), so neither do we: there is nobody to read it.
        if not self._transport.is_closing():
            self._transport.write(pending[0] if len(pending) == 1 else b"".join(pending))
        pending.clear()

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def abort(self) -> None:
        # What was written before a dropped connection was on the wire before it; keep that order.
        self.flush()
        self._transport.abort()

    def write_eof(self) -> None:
        self.flush()
        self._transport.write_eof()

    def get_write_buffer_size(self) -> int:
        return self._transport.get_write_buffer_size() + sum(map(len, self._pending))

    def __getattr__(self, name: str) -> Any:
        # Everything else (reading, flow control, extra info, is_closing) is the transport's own.
        return getattr(self._transport, name)


class TransportInScope:
    """Mixed into a uvicorn HTTP protocol: each request's scope carries the connection's transport.

    A `reset` fault aborts the connection, and the app has no other way to reach it: whatever wraps
    the app (uvicorn's trace logging, any ASGI middleware) may wrap `receive` and `send` too, but
    passes the scope on. uvicorn's protocols (httptools and h11 alike) build each request's scope as
    `self.scope = {...}` before they create its request cycle and call the app, so this is the one
    place both go through.
    """

    transport: asyncio.Transport
    _scope: dict[str, Any] | None

    @property
    def scope(self) -> dict[str, Any] | None:
        return self._scope

    @scope.setter
    def scope(self, scope: dict[str, Any] | None) -> None:
        if scope is not None:  # None: the protocol's __init__, before any request
            scope[TRANSPORT_KEY] = self.transport
        self._scope = scope


class CoalescingHTTPProtocol(TransportInScope, AutoHTTPProtocol):  # type: ignore[misc,valid-type]
    """uvicorn's own protocol (httptools when installed, else h11) over a `CoalescingTransport`,
    publishing that transport in each request's scope."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        coalescing = CoalescingTransport(cast(asyncio.Transport, transport), asyncio.get_running_loop())
        super().connection_made(coalescing)
