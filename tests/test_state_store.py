"""The Redis state store's write-behind journal (batched writes, read-your-writes, nothing lost);
then the contract every state store keeps, run on memory and on a real Redis."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from mockserver.clock import FakeClock
from mockserver.errors import StoreUnavailable
from mockserver.state import StateStore
from mockserver.state.memory import MemoryStateStore
from mockserver.state.redis import RedisStateStore
from tests.support.redis_server import RedisServer, redis_server_fixture, unique_key_prefix

redis_server = redis_server_fixture(scope="module")
pytestmark = pytest.mark.redis


def test_records_of_one_loop_pass_go_in_one_write_and_are_read_back(redis_server: RedisServer) -> None:
    async def go() -> None:
        store = RedisStateStore(redis_server.url, key_prefix=unique_key_prefix())
        writes = 0
        real = store._redis.evalsha

        async def counting(*args: object, **kwargs: object) -> object:
            nonlocal writes
            writes += 1
            return await real(*args, **kwargs)  # type: ignore[arg-type]

        store._redis.evalsha = counting  # type: ignore[method-assign]
        try:
            # Fifty requests finishing in the same pass of the event loop.
            for n in range(50):
                await store.record([("journal", {"n": n}, 30), ("ledger", [n], 1000)], ["appended"])
            assert writes == 0  # queued, no request waited for Redis
            rows = await store.items("journal")  # a read waits for what was queued before it
            assert [row["n"] for row in rows] == list(range(20, 50))  # bounded at 30, oldest dropped
            assert len(await store.items("ledger")) == 50
            assert await store.get("appended") == 50
            assert writes == 1
        finally:
            await store.close()

    asyncio.run(go())


def test_a_large_batch_with_a_bound_changed_midway_keeps_order_and_bounds(redis_server: RedisServer) -> None:
    """Values go to Redis in runs per list (unpacked at most 1,000 at a time); a bound that changed
    within the batch applies from where it changed, as one RPUSH + LTRIM per value would."""

    async def go() -> None:
        store = RedisStateStore(redis_server.url, key_prefix=unique_key_prefix())
        try:
            for n in range(2500):
                await store.record([("big", n, 3000)], ["count"])
            for n in range(2500, 2510):
                await store.record([("big", n, 5)])  # the bound drops to 5 for the last ten
            await store.record([("big", 2510, 8)])  # and rises again: nothing dropped comes back
            assert await store.items("big") == [2505, 2506, 2507, 2508, 2509, 2510]
            assert await store.get("count") == 2500
        finally:
            await store.close()

    asyncio.run(go())


def test_close_writes_what_is_queued(redis_server: RedisServer) -> None:
    prefix = unique_key_prefix()

    async def record_then_close() -> None:
        store = RedisStateStore(redis_server.url, key_prefix=prefix)
        await store.record([("journal", {"kept": True}, 10)])
        await store.close()

    async def read() -> list[object]:
        store = RedisStateStore(redis_server.url, key_prefix=prefix)
        try:
            return await store.items("journal")
        finally:
            await store.close()

    asyncio.run(record_then_close())
    assert asyncio.run(read()) == [{"kept": True}]


def test_an_outage_is_logged_not_raised_into_the_request(caplog: pytest.LogCaptureFixture) -> None:
    async def go() -> None:
        store = RedisStateStore("redis://127.0.0.1:1/0")  # nothing listens on port 1
        await store.record([("journal", {"n": 1}, 10)])  # the request is not held up or failed
        with pytest.raises(StoreUnavailable):
            await store.items("journal")
        await store.close()

    with caplog.at_level("WARNING", logger="mockserver"):
        asyncio.run(go())
    assert "1 journal and ledger rows not kept" in caplog.text


def test_a_writer_cancelled_before_it_ran_is_replaced_and_nothing_is_lost(redis_server: RedisServer) -> None:
    async def go() -> list[object]:
        store = RedisStateStore(redis_server.url, key_prefix=unique_key_prefix())
        await store.record([("journal", {"n": 1}, 10)])
        assert store._writer is not None
        store._writer.cancel()
        try:
            return await asyncio.wait_for(store.items("journal"), timeout=2)  # no hang, no loss
        finally:
            await asyncio.wait_for(store.close(), timeout=2)

    assert asyncio.run(go()) == [{"n": 1}]


def test_a_writer_cancelled_mid_write_says_what_was_lost(
    redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    async def go() -> None:
        store = RedisStateStore(redis_server.url, key_prefix=unique_key_prefix())
        await store.record([("journal", {"n": 1}, 10), ("ledger", [1], 10)])
        await asyncio.sleep(0)  # the writer takes the batch and sends it
        assert store._writer is not None
        store._writer.cancel()  # what closing the event loop does to it
        await asyncio.sleep(0)
        await asyncio.wait_for(store.close(), timeout=2)

    with caplog.at_level("WARNING", logger="mockserver"):
        asyncio.run(go())
    assert "2 journal and ledger rows not kept: the event loop closed" in caplog.text


# --- the contract, on both backends ---------------------------------------------------------------


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.redis)])
def make_state_store(request: pytest.FixtureRequest) -> Callable[[], StateStore]:
    """Stores of one kind that share their data, as the workers of one server do."""
    prefix = unique_key_prefix()
    memory = MemoryStateStore(FakeClock())

    def make() -> StateStore:
        if request.param == "memory":
            return memory
        return RedisStateStore(request.getfixturevalue("redis_server").url, key_prefix=prefix)

    return make


def test_a_field_is_added_once_and_deleted_once(make_state_store) -> None:
    async def go() -> None:
        store = make_state_store()
        try:
            assert await store.fields("t") == {}
            assert await store.add_field("t", "a", {"n": 1})
            assert not await store.add_field("t", "a", {"n": 2})  # taken: the first value stays
            assert await store.add_field("t", "b", None)
            assert await store.fields("t") == {"a": {"n": 1}, "b": None}
            assert await store.delete_field("t", "b") and not await store.delete_field("t", "b")
            assert not await store.delete_field("missing", "a")
            assert await store.delete("t") and await store.fields("t") == {}
            await store.add_field("t", "a", 1)
            await store.clear()
            assert await store.fields("t") == {}
        finally:
            await store.close()

    asyncio.run(go())


def test_values_are_copies(make_state_store) -> None:
    async def go() -> None:
        store = make_state_store()
        try:
            value = {"list": [1]}
            await store.add_field("t", "a", value)
            value["list"].append(2)
            read = await store.fields("t")
            read["a"]["list"].append(3)
            assert await store.fields("t") == {"a": {"list": [1]}}
        finally:
            await store.close()

    asyncio.run(go())


def test_concurrent_adds_of_one_field_from_two_stores_succeed_exactly_once(make_state_store) -> None:
    async def go() -> None:
        stores = [make_state_store(), make_state_store()]
        try:
            tries = [stores[n % 2].add_field("t", f"f{n // 4}", n) for n in range(40)]
            added = await asyncio.gather(*tries)
            assert added.count(True) == 10
            assert sorted(await stores[0].fields("t")) == sorted(f"f{n}" for n in range(10))
            appended = [stores[n % 2].append("l", n, max_len=100) for n in range(40)]
            assert await asyncio.gather(*appended) == [0] * 40
            assert sorted(await stores[1].items("l")) == list(range(40))
        finally:
            for store in stores:
                await store.close()

    asyncio.run(go())
