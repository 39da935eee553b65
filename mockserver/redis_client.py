"""A lean asyncio Redis client: one pipelined connection per client, RESP2 parsed by hiredis.

redis-py's asyncio client spends 65-90 µs of CPU per command (pool checkout, StreamReader, retry and
response-callback layers), more than the rest of a mockserver request. Here a command is packed by
hiredis and written straight to the transport, and `data_received` hands each reply to the oldest
waiting future, so any number of coroutines share one connection (Redis runs commands one at a time
anyway) for a few µs each. hiredis is imported when the first client is built, not with this module.
"""

from __future__ import annotations

import asyncio
import hashlib
import ssl
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextvars import ContextVar, Token
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import parse_qs, unquote, urlsplit, urlunsplit

from mockserver.errors import ConfigError, StoreUnavailable

Arg = bytes | str | int | float

# Error replies that mean "this server cannot serve us now" rather than "this command is wrong": a
# replica after a failover, a server still loading its data set, credentials it refuses.
_UNAVAILABLE = ("READONLY", "LOADING", "MASTERDOWN", "NOAUTH", "WRONGPASS")

# How long one HTTP request may wait for the store, all its calls together (a generation read,
# admission, the cache, a settle): a hung Redis costs a request this long, not a timeout per call.
REQUEST_STORE_WAIT = 1.0
# What a request may wait beyond REQUEST_STORE_WAIT in all, so that short waits need no timer.
UNTIMED_OVERRUN = 0.05
# Less time than this left counts as none: uvloop's clock and timers are millisecond-granular, so a
# wait cut off by its timer can measure a hair under what it was given.
_TIMER_RESOLUTION = 0.001

T = TypeVar("T")


class StoreWait:
    """How long the current request has waited for the store so far, out of `limit` seconds."""

    __slots__ = ("limit", "spent")

    def __init__(self, limit: float) -> None:
        self.limit = limit
        self.spent = 0.0


_request_wait: ContextVar[StoreWait | None] = ContextVar("mockserver_request_store_wait", default=None)


def begin_request(limit: float = REQUEST_STORE_WAIT) -> Token[StoreWait | None]:
    """From here on, in this task and the tasks it starts, store calls share one `limit`."""
    return _request_wait.set(StoreWait(limit))


def end_request(token: Token[StoreWait | None]) -> None:
    _request_wait.reset(token)


def not_a_request() -> None:
    """For a background task started from a request (it copied the request's context): its store
    calls serve many requests, so they keep only their client's own timeout."""
    _request_wait.set(None)


class RequestWaitSpent(Exception):
    """The request has waited for the store as long as it may (`StoreWait.limit`)."""

    def __init__(self, limit: float) -> None:
        super().__init__(f"no reply within {limit:g} s (what a request may wait for the store in all)")


async def within_request_wait(start: Callable[[], Awaitable[T]], *, bounded_by: float = float("inf")) -> T:
    """Await what `start()` returns for no longer than the current request has left to wait for
    the store, and count the time against it; outside a request, just await it. `start` is not
    called once nothing is left (so no command is sent that nobody would wait for). `bounded_by`:
    how long the awaitable can take anyway (its client's timeout); when the request has that much
    left, give or take `UNTIMED_OVERRUN`, no timer is armed: a timer costs ~5 µs, and a request
    whose earlier waits took a few ms (the common case) would otherwise arm one per store call."""
    wait = _request_wait.get()
    if wait is None:
        return await start()
    left = wait.limit - wait.spent
    if left < _TIMER_RESOLUTION:
        raise RequestWaitSpent(wait.limit)
    loop = asyncio.get_running_loop()
    started = loop.time()
    try:
        if left + UNTIMED_OVERRUN >= bounded_by:
            return await start()
        timeout = asyncio.timeout(left)
        try:
            async with timeout:
                return await start()
        except TimeoutError:
            if timeout.expired():
                raise RequestWaitSpent(wait.limit) from None
            raise
    finally:
        wait.spent += loop.time() - started


class ResponseError(Exception):
    """An error reply from Redis to one command (the message as Redis words it, e.g. 'ERR ...')."""


class Script:
    """A Lua script run by its SHA1, so that only the digest travels once Redis has it cached."""

    __slots__ = ("sha", "source")

    def __init__(self, source: str) -> None:
        self.source = source
        self.sha = hashlib.sha1(source.encode()).hexdigest()


@dataclass(frozen=True)
class Address:
    host: str = ""  # empty for a Unix socket
    port: int = 6379
    path: str = ""  # the Unix socket
    tls: bool = False
    username: str | None = None
    password: str | None = None
    db: int = 0


def parse_url(url: str) -> Address:
    """`redis://[[user]:password@]host[:port][/db]`, `rediss://` (TLS) or `unix:///path.sock[?db=N]`;
    a ValueError says what is wrong."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise ValueError(str(exc)) from None
    scheme = parts.scheme.lower()
    unix = scheme == "unix"
    if scheme not in ("redis", "rediss", "unix"):
        raise ValueError(f"unsupported scheme {parts.scheme!r}; use redis://, rediss:// or unix://")
    if not (parts.path if unix else parts.hostname):
        raise ValueError("no socket path" if unix else "no host")
    db = parse_qs(parts.query).get("db", [""])[-1]
    if not unix:
        db = parts.path.strip("/") or db
    if not (db or "0").isdigit():
        raise ValueError(f"the database must be a number, not {db!r}")
    return Address(
        host="" if unix else parts.hostname or "",
        port=6379 if port is None else port,
        path=unquote(parts.path) if unix else "",
        tls=scheme == "rediss",
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password else None,
        db=int(db or 0),
    )


def redact(uri: str) -> str:
    """The URI with any password replaced, for error messages and logs."""
    try:
        parts = urlsplit(uri)
        if parts.password is None:
            return uri
        netloc = parts.netloc.rsplit("@", 1)[1]
        user = parts.username or ""
        return urlunsplit(parts._replace(netloc=f"{user}:***@{netloc}"))
    except ValueError:
        return "<unparseable URI>"


class _Lost(ConnectionError):
    """The connection failed under a command; `retry` says whether sending it again is safe."""

    def __init__(self, reason: str, *, retry: bool) -> None:
        super().__init__(reason)
        self.retry = retry


class _Connection(asyncio.Protocol):
    def __init__(self, loop: asyncio.AbstractEventLoop, timeout: float, reader: Any) -> None:
        self.loop = loop
        self.timeout = timeout
        self.broken: str | None = None  # why it cannot take commands any more
        self.closed: asyncio.Future[None] = loop.create_future()
        self._transport: asyncio.Transport | None = None
        self._reader = reader
        self._waiting: deque[tuple[asyncio.Future[Any], float]] = deque()  # (reply, deadline), sent order
        self._watchdog: asyncio.TimerHandle | None = None
        self._outbox: list[bytes] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self._reader.feed(data)
        try:
            while (reply := self._reader.gets()) is not False:
                future = self._waiting.popleft()[0]
                if not future.done():  # its caller may have been cancelled; the reply is still its own
                    future.set_result(reply)
        except Exception as exc:  # hiredis.ProtocolError, or a reply nobody asked for: out of step
            self.fail(f"unreadable reply: {exc!r}", retry=False)

    def connection_lost(self, exc: Exception | None) -> None:
        # Redis closes connections when it stops: after a restart, what was waiting here most likely
        # never ran (and on a server without persistence its effects are gone), so it may be resent.
        self.fail(f"connection lost ({exc or 'closed by the server'})", retry=True)
        if not self.closed.done():
            self.closed.set_result(None)

    def send(self, command: bytes) -> asyncio.Future[Any]:
        future = self.loop.create_future()
        if self.broken is not None:  # lost since the caller picked it: Redis never saw the command
            future.set_exception(_Lost(self.broken, retry=True))
            return future
        if not self._waiting:
            self._transport.write(command)  # type: ignore[union-attr]
        else:
            if not self._outbox:
                self.loop.call_soon(self._flush)
            self._outbox.append(command)
        self._waiting.append((future, self.loop.time() + self.timeout))
        # One timer for the oldest command rather than one per command: replies come in order.
        if self._watchdog is None:
            self._watchdog = self.loop.call_at(self._waiting[0][1], self._check_deadline)
        return future

    def _flush(self) -> None:
        if self.broken is None:
            self._transport.write(b"".join(self._outbox))  # type: ignore[union-attr]
        self._outbox.clear()

    def fail(self, reason: str, *, retry: bool) -> None:
        """Drop the connection and fail every command still waiting on it."""
        self.broken = self.broken or reason
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None
        if self._transport is not None and not self._transport.is_closing():
            self._transport.abort()
        while self._waiting:
            future = self._waiting.popleft()[0]
            if not future.done():
                future.set_exception(_Lost(reason, retry=retry))

    def _check_deadline(self) -> None:
        self._watchdog = None
        if not self._waiting:
            return
        deadline = self._waiting[0][1]
        if self.loop.time() < deadline:
            self._watchdog = self.loop.call_at(deadline, self._check_deadline)
        else:
            # Never retried: a hung Redis may still run the command when it wakes, and run it twice.
            self.fail(f"no reply within {self.timeout:g} s", retry=False)


class RedisClient:
    """`execute` and `evalsha` from any number of coroutines; connects on first use and after a loss.

    Outages raise `StoreUnavailable` naming `name` and the redacted URL; error replies raise
    `ResponseError`. A connection belongs to its event loop: used from another loop (a second
    `asyncio.run`), the client opens a new one, and the old one is left to its loop.
    """

    def __init__(
        self, url: str, *, timeout: float = 1.0, connect_timeout: float | None = None, name: str = "Redis"
    ) -> None:
        self.address = parse_url(url)
        try:
            from hiredis import Reader, pack_command  # pack_command needs hiredis >= 2.2.1
        except ImportError as exc:
            raise ConfigError(
                f"the store {redact(url)!r} needs the 'hiredis' package: pip install 'mockserver[redis]'"
            ) from exc
        self._pack: Callable[[tuple[Arg, ...]], bytes] = pack_command
        self._reader_class: Any = Reader
        self.url = redact(url)
        self.name = name
        self.timeout = timeout
        self.connect_timeout = timeout if connect_timeout is None else connect_timeout
        self._conn: _Connection | None = None
        self._opening: asyncio.Task[_Connection] | None = None

    async def execute(self, *args: Arg) -> Any:
        """One command; the reply as hiredis decodes it (bytes, int, list, None)."""
        return await self._call(self._pack(args))

    async def within_request_wait(self, start: Callable[[], Awaitable[T]]) -> T:
        """`within_request_wait` for a wait on this client's commands: StoreUnavailable, naming this
        store, once the request has waited as long as it may."""
        try:
            return await within_request_wait(start, bounded_by=self.timeout)
        except RequestWaitSpent as exc:
            raise self._unavailable(exc) from None

    async def evalsha(self, script: Script, keys: Sequence[Arg] = (), args: Sequence[Arg] = ()) -> Any:
        try:
            return await self._call(self._pack(("EVALSHA", script.sha, len(keys), *keys, *args)))
        except ResponseError as exc:
            if not str(exc).startswith("NOSCRIPT"):
                raise
        # Redis lost its script cache (a restart, SCRIPT FLUSH): EVAL runs the script and caches it.
        return await self._call(self._pack(("EVAL", script.source, len(keys), *keys, *args)))

    async def scan(self, prefix: str, count: int = 500) -> AsyncIterator[list[bytes]]:
        """The keys that start with `prefix` (taken literally, not as a glob), a SCAN page at a time:
        each key once, without blocking Redis the way KEYS would."""
        pattern = "".join("\\" + c if c in "*?[]\\" else c for c in prefix) + "*"
        cursor = b"0"
        while True:
            cursor, keys = await self.execute("SCAN", cursor, "MATCH", pattern, "COUNT", count)
            if keys:
                yield keys
            if cursor == b"0":
                return

    async def close(self) -> None:
        conn, opening, self._conn, self._opening = self._conn, self._opening, None, None
        if opening is not None:
            opening.cancel()
        if conn is not None and conn.loop is asyncio.get_running_loop():
            conn.fail("the client was closed", retry=False)
            await conn.closed

    async def _call(self, command: bytes, *, in_request_wait: bool = False) -> Any:
        if not in_request_wait and _request_wait.get() is not None:
            return await self.within_request_wait(lambda: self._call(command, in_request_wait=True))
        conn = self._conn
        if conn is None or conn.broken is not None or conn.loop is not asyncio.get_running_loop():
            conn = await self._connected()
        try:
            reply = await conn.send(command)
        except _Lost as exc:
            if not exc.retry:
                raise self._unavailable(exc) from exc
            try:  # once, on a fresh connection: the old one died before Redis read the command
                reply = await (await self._connected()).send(command)
            except _Lost as again:
                raise self._unavailable(again) from again
        if isinstance(reply, ResponseError):
            if str(reply).startswith(_UNAVAILABLE):
                raise self._unavailable(reply) from reply
            raise reply
        return reply

    async def _connected(self) -> _Connection:
        loop = asyncio.get_running_loop()
        conn = self._conn
        if conn is not None and conn.broken is None and conn.loop is loop:
            return conn  # another caller has reconnected meanwhile
        # Callers that find the connection gone at the same moment share one attempt.
        if self._opening is None or self._opening.done() or self._opening.get_loop() is not loop:
            self._opening = loop.create_task(self._open(loop))
        try:
            return await asyncio.shield(self._opening)
        except (OSError, TimeoutError, ResponseError) as exc:
            raise self._unavailable(exc) from exc

    async def _open(self, loop: asyncio.AbstractEventLoop) -> _Connection:
        a = self.address
        setup: list[tuple[Arg, ...]] = []
        if a.password is not None:
            setup.append(("AUTH", a.password) if a.username is None else ("AUTH", a.username, a.password))
        if a.db:
            setup.append(("SELECT", a.db))
        conn = _Connection(loop, self.timeout, self._reader_class(replyError=ResponseError))
        try:
            async with asyncio.timeout(self.connect_timeout):  # for the whole handshake, AUTH included
                if a.path:
                    await loop.create_unix_connection(lambda: conn, a.path)
                else:
                    tls = ssl.create_default_context() if a.tls else None
                    await loop.create_connection(lambda: conn, a.host, a.port, ssl=tls)
                for reply in [conn.send(self._pack(command)) for command in setup]:
                    if isinstance(reply := await reply, ResponseError):
                        raise reply
        except BaseException as exc:
            conn.fail("could not set up the connection", retry=False)
            if isinstance(exc, TimeoutError):
                raise TimeoutError(f"no connection within {self.connect_timeout:g} s") from None
            raise
        self._conn = conn
        return conn

    def _unavailable(self, exc: BaseException) -> StoreUnavailable:
        return StoreUnavailable(f"{self.name} {self.url} is unavailable: {exc or type(exc).__name__}")
