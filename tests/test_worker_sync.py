"""Workers sharing one Redis pick up each other's admin changes: read-your-writes across workers,
even though a worker re-reads the shared generation at most every `sync_interval`."""

from __future__ import annotations

import asyncio

import pytest

from mockserver.runtime import Runtime, ServerState
from tests.conftest import make_settings
from tests.support.redis_server import RedisServer, redis_server_fixture, unique_key_prefix

redis_server = redis_server_fixture(scope="module")
pytestmark = pytest.mark.redis


def worker(url: str, prefix: str) -> ServerState:
    return ServerState(Runtime.from_settings(make_settings(storage=url, key_prefix=prefix)))


def test_a_patch_is_seen_by_another_worker_that_synced_just_before(redis_server: RedisServer) -> None:
    async def go() -> None:
        prefix = unique_key_prefix()
        a, b = worker(redis_server.url, prefix), worker(redis_server.url, prefix)
        try:
            assert b.sync_interval > 0  # a shared store: generation reads are rationed
            await b.sync()  # b now trusts what it read for sync_interval
            await a.patch_settings({"seed": 42})  # answers only once every worker's trust has run out
            await b.sync()
            assert b.runtime.settings.seed == 42
        finally:
            await a.close()
            await b.close()

    asyncio.run(go())


def test_within_the_interval_a_worker_does_not_read_again(redis_server: RedisServer) -> None:
    async def go() -> None:
        state = worker(redis_server.url, unique_key_prefix())
        reads = 0
        real_get = state.store.get

        async def counting_get(key: str) -> object:
            nonlocal reads
            reads += 1
            return await real_get(key)

        state.store.get = counting_get  # type: ignore[method-assign]
        try:
            state.sync_interval = 60.0  # long enough that timing cannot make this test flaky
            await state.sync()
            await state.sync()
            assert reads == 1
        finally:
            await state.close()

    asyncio.run(go())


def test_requests_arriving_during_a_read_wait_for_it_and_see_a_change_made_before(
    redis_server: RedisServer,
) -> None:
    """Two requests on one worker in the same loop pass: the second must not run on the old runtime
    while the first one's read of the generation is still in flight."""

    async def go() -> None:
        prefix = unique_key_prefix()
        a, b = worker(redis_server.url, prefix), worker(redis_server.url, prefix)
        try:
            await a.patch_settings({"seed": 42})  # answered: every worker must now run with it
            seen: list[int] = []

            async def request() -> None:
                await b.sync()
                seen.append(b.runtime.settings.seed)

            await asyncio.gather(request(), request(), request())
            assert seen == [42, 42, 42]
        finally:
            await a.close()
            await b.close()

    asyncio.run(go())


def test_the_next_read_starts_ahead_of_need_without_holding_the_request(redis_server: RedisServer) -> None:
    async def go() -> None:
        state = worker(redis_server.url, unique_key_prefix())
        state.sync_interval = 0.2
        try:
            await state.sync()  # the first read: the request waits for it
            first = state._refresh
            await asyncio.sleep(0.12)  # past half the interval, still inside it
            await state.sync()  # returns at once on the completed read...
            assert state._refresh is not first and state._refresh is not None
            assert not state._refresh.done()  # ...while the next one is under way
            await state._refresh
        finally:
            await state.close()

    asyncio.run(go())


def test_an_unreachable_store_does_not_hold_requests_forever(caplog: pytest.LogCaptureFixture) -> None:
    async def go() -> None:
        state = worker("redis://127.0.0.1:1/0", "mockserver:")  # nothing listens on port 1
        await asyncio.wait_for(state.sync(), timeout=10)  # tries, logs, goes on with what it has
        await state.close()

    with caplog.at_level("WARNING", logger="mockserver"):
        asyncio.run(go())
    assert "settings not synchronised" in caplog.text


def test_memory_storage_has_nothing_to_watch() -> None:
    state = worker("memory://", "mockserver:")
    assert not state.shared and state.sync_interval == 0.0
