"""mockserver.redis_client against a real redis-server: pipelining, errors, scripts, outages, URLs."""

from __future__ import annotations

import asyncio
import gc
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import pytest

from mockserver import redis_client
from mockserver.errors import StoreUnavailable
from mockserver.redis_client import Address, RedisClient, ResponseError, Script, parse_url
from tests.support.redis_server import RedisServer, redis_server_fixture, running_redis_server

redis_server = redis_server_fixture(scope="module")

Run = Callable[[Awaitable[Any]], Any]


def _loop_factories() -> list[Any]:
    factories: list[Any] = [pytest.param(None, id="asyncio")]
    try:
        import uvloop  # what uvicorn runs the server on

        factories.append(pytest.param(uvloop.new_event_loop, id="uvloop"))
    except ImportError:
        pass
    return factories


@pytest.fixture(params=_loop_factories())
def run(request: pytest.FixtureRequest) -> Iterator[Run]:
    """Runs coroutines on one event loop for the whole test (asyncio's, then uvloop's)."""
    with asyncio.Runner(loop_factory=request.param) as runner:
        yield runner.run


@pytest.fixture
def sent(monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    """Every command written to Redis, in order, as packed bytes."""
    commands: list[bytes] = []
    send = redis_client._Connection.send

    def spy(self: Any, command: bytes) -> Any:
        commands.append(command)
        return send(self, command)

    monkeypatch.setattr(redis_client._Connection, "send", spy)
    return commands


async def gather(*calls: Awaitable[Any], return_exceptions: bool = False) -> list[Any]:
    return await asyncio.gather(*calls, return_exceptions=return_exceptions)


def with_password(server: RedisServer, password: str) -> None:
    async def go() -> None:
        client = RedisClient(server.url)
        await client.execute("CONFIG", "SET", "requirepass", password)
        await client.close()

    asyncio.run(go())


# --- URLs ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "address"),
    [
        ("redis://localhost", Address(host="localhost")),
        ("redis://h:6380/2", Address(host="h", port=6380, db=2)),
        ("redis://:p%40ss@h/0", Address(host="h", password="p@ss")),
        ("redis://alice:pw@h:1/3", Address(host="h", port=1, username="alice", password="pw", db=3)),
        ("rediss://cache.internal:6380/1", Address(host="cache.internal", port=6380, tls=True, db=1)),
        ("redis://[::1]:7000", Address(host="::1", port=7000)),
        ("unix:///tmp/redis.sock", Address(path="/tmp/redis.sock")),
        ("unix:///tmp/redis.sock?db=4", Address(path="/tmp/redis.sock", db=4)),
        ("unix://:pw@/run/r.sock", Address(path="/run/r.sock", password="pw")),
    ],
)
def test_urls(url: str, address: Address):
    assert parse_url(url) == address


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("redis://:hunter2@localhost:notaport/0", "Port could not be cast"),
        ("http://localhost", "unsupported scheme 'http'"),
        ("redis:///0", "no host"),
        ("unix://", "no socket path"),
        ("redis://localhost/zero", "database must be a number"),
    ],
)
def test_bad_urls_say_what_is_wrong(url: str, message: str):
    with pytest.raises(ValueError, match=message):
        RedisClient(url)


# --- Commands --------------------------------------------------------------------------------------


@pytest.mark.redis
def test_concurrent_commands_share_one_connection_in_order(redis_server: RedisServer, run: Run):
    client = RedisClient(redis_server.url)

    async def go() -> None:
        key = uuid.uuid4().hex
        connection = await client.execute("CLIENT", "ID")
        counts = await asyncio.gather(*(client.execute("INCR", key) for _ in range(2000)))
        assert counts == list(range(1, 2001))  # each reply went to the command that asked for it
        values = [b"x" * i for i in range(300)]
        await asyncio.gather(*(client.execute("SET", f"v{i}", v) for i, v in enumerate(values)))
        assert await asyncio.gather(*(client.execute("GET", f"v{i}") for i in range(300))) == values
        assert await client.execute("CLIENT", "ID") == connection
        await client.close()

    run(go())


@pytest.mark.redis
def test_arguments_and_replies(redis_server: RedisServer, run: Run):
    client = RedisClient(redis_server.url)

    async def go() -> None:
        assert await client.execute("SET", "f", 0.1) == b"OK"
        assert await client.execute("GET", "f") == repr(0.1).encode()
        await client.execute("SET", "f", 1e300)
        assert float(await client.execute("GET", "f")) == 1e300
        await client.execute("SET", "é", "ünïcode")
        assert await client.execute("MGET", "é", "missing") == ["ünïcode".encode(), None]
        assert await client.execute("INCRBY", uuid.uuid4().hex, -3) == -3
        assert await client.execute("PING") == b"PONG"
        await client.close()

    run(go())


@pytest.mark.redis
def test_an_error_reply_fails_only_its_own_command(redis_server: RedisServer, run: Run):
    client = RedisClient(redis_server.url)

    async def go() -> None:
        await client.execute("SET", "text", "abc")
        replies = await asyncio.gather(
            client.execute("INCR", "text"),
            client.execute("GET", "text"),
            client.execute("LPUSH", "text", "x"),
            client.execute("NOSUCHCOMMAND"),
            client.execute("STRLEN", "text"),
            return_exceptions=True,
        )
        assert [type(r) for r in replies] == [ResponseError, bytes, ResponseError, ResponseError, int]
        assert str(replies[0]) == "ERR value is not an integer or out of range"
        assert str(replies[2]).startswith("WRONGTYPE")
        assert not isinstance(replies[0], StoreUnavailable)
        assert await client.execute("GET", "text") == b"abc"
        await client.close()

    run(go())


@pytest.mark.redis
def test_scripts_survive_a_flushed_script_cache(redis_server: RedisServer, run: Run, sent: list[bytes]):
    client = RedisClient(redis_server.url)
    script = Script("return {KEYS[1], ARGV[1], tonumber(ARGV[2]) + 1}")

    async def go() -> None:
        assert await client.evalsha(script, ["k"], ["v", 41]) == [b"k", b"v", 42]
        assert sent[-1].count(b"EVAL") == 1  # the first one went as EVAL after NOSCRIPT...
        assert await client.evalsha(script, ["k"], ["v", 1]) == [b"k", b"v", 2]
        assert b"EVALSHA" in sent[-1]  # ...later ones by digest only
        await client.execute("SCRIPT", "FLUSH")
        assert await client.evalsha(script, ["k"], ["v", 2]) == [b"k", b"v", 3]
        assert await client.execute("SCRIPT", "EXISTS", script.sha) == [1]
        with pytest.raises(ResponseError, match="boom"):
            await client.evalsha(Script("return redis.error_reply('boom')"))
        await client.close()

    run(go())


# --- Outages ---------------------------------------------------------------------------------------


@pytest.mark.redis
def test_a_restart_is_survived_with_one_resend(run: Run, sent: list[bytes]):
    with running_redis_server() as server:
        client = RedisClient(server.url, timeout=1.0)
        try:
            assert run(client.execute("SET", "k", "before")) == b"OK"
            server.stop()
            server.start()
            # The old connection is dead but the client has not noticed: the command goes out on it,
            # fails, and is sent once more on a new connection (shared by every caller).
            del sent[:]
            replies = run(gather(*(client.execute("CLIENT", "ID") for _ in range(20))))
            assert len(set(replies)) == 1
            assert len(sent) == 40
            assert run(client.execute("GET", "k")) is None  # no persistence: a new, empty server
        finally:
            run(client.close())


@pytest.mark.redis
def test_a_server_that_is_down_fails_fast_naming_the_url(run: Run):
    with running_redis_server() as server:
        client = RedisClient(server.url, name="test store")
        run(client.execute("PING"))
        server.stop()  # the next command finds the connection dead, then no server to reconnect to
        started = time.monotonic()
        for _ in range(2):
            with pytest.raises(StoreUnavailable, match=f"test store redis://127.0.0.1:{server.port}/0"):
                run(client.execute("PING"))
        assert time.monotonic() - started < 2
        server.start()
        assert run(client.execute("PING")) == b"PONG"
        run(client.close())


@pytest.mark.redis
def test_a_hung_server_times_out_every_pending_command_without_resending(run: Run, sent: list[bytes]):
    with running_redis_server() as server:
        client = RedisClient(server.url, timeout=0.3)
        try:
            run(client.execute("PING"))
            server.pause()
            del sent[:]
            started = time.monotonic()
            replies = run(gather(*(client.execute("INCR", "n") for _ in range(5)), return_exceptions=True))
            elapsed = time.monotonic() - started
            assert all(isinstance(r, StoreUnavailable) for r in replies), replies
            assert "no reply within 0.3 s" in str(replies[0])
            assert 0.25 < elapsed < 1.5
            # Redis may still run these when it wakes: sending them again could run them twice.
            assert len(sent) == 5
            server.resume()
            assert run(client.execute("PING")) == b"PONG"  # on a new connection
        finally:
            server.resume()
            run(client.close())


@pytest.mark.redis
def test_connect_timeout(run: Run):
    with running_redis_server() as server:
        server.pause()  # the kernel still accepts the TCP connection; AUTH then gets no answer
        try:
            client = RedisClient(f"redis://:pw@127.0.0.1:{server.port}/0", timeout=5, connect_timeout=0.3)
            started = time.monotonic()
            with pytest.raises(
                StoreUnavailable, match=r"redis://:\*\*\*@127.0.0.1.*no connection within 0.3 s"
            ):
                run(client.execute("PING"))
            assert time.monotonic() - started < 1.5
        finally:
            server.resume()


# --- AUTH, SELECT, loops, closing -----------------------------------------------------------------


@pytest.mark.redis
def test_password_user_and_database_from_the_url():
    with running_redis_server() as server:
        with_password(server, "s3cret")
        base = f"127.0.0.1:{server.port}"

        async def go() -> None:
            db5 = RedisClient(f"redis://:s3cret@{base}/5")
            db0 = RedisClient(f"redis://:s3cret@{base}")
            await db5.execute("SET", "where", "five")
            assert await db0.execute("GET", "where") is None
            assert await db5.execute("GET", "where") == b"five"
            await db5.execute("ACL", "SETUSER", "alice", "on", ">pw", "~*", "+@all")
            alice = RedisClient(f"redis://alice:pw@{base}/5")
            assert await alice.execute("ACL", "WHOAMI") == b"alice"
            assert await alice.execute("GET", "where") == b"five"
            for url, error in ((f"redis://:wrong@{base}/0", "WRONGPASS"), (f"redis://{base}/0", "NOAUTH")):
                with pytest.raises(StoreUnavailable, match=error) as info:
                    await RedisClient(url).execute("PING")
                assert "wrong" not in str(info.value).replace("WRONGPASS", "")
            for client in (db5, db0, alice):
                await client.close()

        asyncio.run(go())


@pytest.mark.redis
# The first loop's connection cannot be closed once that loop is gone; collect it here, quietly.
@pytest.mark.filterwarnings("ignore::ResourceWarning", "ignore::pytest.PytestUnraisableExceptionWarning")
def test_one_client_on_two_event_loops(redis_server: RedisServer):
    client = RedisClient(redis_server.url)
    key = uuid.uuid4().hex
    assert asyncio.run(client.execute("INCR", key)) == 1
    assert asyncio.run(client.execute("INCR", key)) == 2
    with asyncio.Runner() as runner:
        assert runner.run(client.execute("INCR", key)) == 3
        runner.run(client.close())
    gc.collect()


@pytest.mark.redis
def test_close_fails_pending_commands_and_the_client_can_reconnect(redis_server: RedisServer, run: Run):
    client = RedisClient(redis_server.url)
    observer = RedisClient(redis_server.url)

    async def clients() -> int:
        return (await observer.execute("CLIENT", "LIST")).count(b"\n")

    async def go() -> None:
        before = await clients()
        await client.execute("PING")
        assert await clients() == before + 1
        pending = asyncio.ensure_future(client.execute("BLPOP", "never", 0))
        await asyncio.sleep(0.05)
        await client.close()
        with pytest.raises(StoreUnavailable, match="closed"):
            await pending
        await client.close()  # twice is fine
        for _ in range(50):  # the server notices the close a moment later
            if await clients() == before:
                break
            await asyncio.sleep(0.01)
        assert await clients() == before
        assert await client.execute("PING") == b"PONG"
        await client.close()
        await observer.close()

    run(go())


def test_a_command_on_a_connection_lost_meanwhile_fails_as_resendable() -> None:
    async def go() -> None:
        loop = asyncio.get_running_loop()
        conn = redis_client._Connection(loop, 1.0, reader=None)
        conn.broken = "connection lost (closed by the server)"
        future = conn.send(b"*1\r\n$4\r\nPING\r\n")  # nothing is written: there is no transport
        with pytest.raises(redis_client._Lost) as lost:
            await future
        assert lost.value.retry  # Redis never saw it, so the client sends it again on a new connection

    asyncio.run(go())


def test_scan_pages_through_keys_with_a_literal_prefix(redis_server: RedisServer, run: Run) -> None:
    async def go() -> list[bytes]:
        client = RedisClient(redis_server.url)
        tag = uuid.uuid4().hex
        try:
            for n in range(1200):  # several SCAN pages
                await client.execute("SET", f"{tag}:a*[1]:{n}", n)
            await client.execute("SET", f"{tag}:ab:0", 0)  # matched by the glob, not by the prefix
            pages = [page async for page in client.scan(f"{tag}:a*[1]:", count=100)]
            return [key for page in pages for key in page]
        finally:
            await client.close()

    keys = run(go())
    assert len(keys) == len(set(keys)) == 1200
    assert all(b":a*[1]:" in key for key in keys)


# --- one store deadline per request ---------------------------------------------------------------


@pytest.mark.redis
def test_a_request_s_calls_share_one_deadline_and_send_nothing_once_it_is_spent(run: Run, sent: list[bytes]):
    with running_redis_server() as server:
        client = RedisClient(server.url, timeout=5.0)

        async def request() -> tuple[float, list[BaseException]]:
            token = redis_client.begin_request(0.4)
            started = time.monotonic()
            errors: list[BaseException] = []
            try:
                for _ in range(3):  # a client timeout of 5 s each was 15 s for the request
                    try:
                        await client.execute("INCR", "n")
                    except StoreUnavailable as exc:
                        errors.append(exc)
            finally:
                redis_client.end_request(token)
            return time.monotonic() - started, errors

        try:
            run(client.execute("PING"))
            server.pause()
            del sent[:]
            elapsed, errors = run(request())
            assert 0.35 < elapsed < 1.5 and len(errors) == 3
            assert all("no reply within 0.4 s (what a request may wait" in str(e) for e in errors)
            assert str(server.port) in str(errors[0])
            assert len(sent) == 1  # the second and third calls found nothing left to wait with
        finally:
            server.resume()
            run(client.close())


@pytest.mark.redis
def test_a_background_task_started_by_a_request_keeps_the_client_timeout(run: Run):
    with running_redis_server() as server:
        client = RedisClient(server.url, timeout=0.6)

        async def background() -> float:
            redis_client.not_a_request()
            started = time.monotonic()
            with pytest.raises(StoreUnavailable, match=r"no reply within 0\.6 s"):
                await client.execute("PING")
            return time.monotonic() - started

        async def request() -> float:
            token = redis_client.begin_request(0.2)
            try:
                task = asyncio.get_running_loop().create_task(background())  # copies the context
            finally:
                redis_client.end_request(token)
            return await task

        try:
            run(client.execute("PING"))
            server.pause()
            assert run(request()) > 0.5
        finally:
            server.resume()
            run(client.close())
