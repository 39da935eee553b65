"""One contract for every bucket store, run against memory and a real Redis; Redis-only tests follow."""

from __future__ import annotations

import asyncio
import gc
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mockserver.clock import FakeClock
from mockserver.limits import Admission, Draw, MemoryBucketStore, RedisBucketStore, StoreUnavailable
from tests.support.redis_server import running_redis_server, unique_key_prefix

T0 = 1_800_000_000.0


def draw(cost: float, key: str = "k", capacity: float = 60.0, rate: float = 1.0) -> Draw:
    return Draw(key, capacity, cost, rate)


def test_full_bucket_admits(make_store, runner: asyncio.Runner):
    store = make_store()
    admission = runner.run(store.acquire([draw(10)], now=T0))
    assert admission == Admission(True, {"k": 50.0})
    assert runner.run(store.levels([draw(0)], now=T0)) == {"k": 50.0}


def test_exhausted_bucket_rejects_with_exact_retry_after(make_store, runner: asyncio.Runner):
    store = make_store()
    assert runner.run(store.acquire([draw(60)], now=T0)).admitted
    rejected = runner.run(store.acquire([draw(10)], now=T0 + 2))
    assert not rejected.admitted and not rejected.never_fits
    assert rejected.limiting == "k"
    assert rejected.levels == {"k": 2.0}
    assert rejected.retry_after == pytest.approx(8.0)
    # Rejection charges nothing, and obeying retry-after is enough.
    assert runner.run(store.levels([draw(0)], now=T0 + 2)) == {"k": 2.0}
    later = runner.run(store.acquire([draw(10)], now=T0 + 2 + rejected.retry_after))
    assert later.admitted and later.levels["k"] == pytest.approx(0.0, abs=1e-9)


def test_refill_after_time_is_continuous_and_capped(make_store, runner: asyncio.Runner):
    store = make_store()
    runner.run(store.acquire([draw(60)], now=T0))
    assert runner.run(store.levels([draw(0)], now=T0 + 12.5)) == {"k": 12.5}
    assert runner.run(store.levels([draw(0)], now=T0 + 600)) == {"k": 60.0}


def test_never_fits(make_store, runner: asyncio.Runner):
    store = make_store()
    admission = runner.run(store.acquire([draw(1, key="small"), draw(61)], now=T0))
    assert admission == Admission(False, {"small": 60.0, "k": 60.0}, float("inf"), "k", True)


def test_adjust_refund_is_capped_and_charges_may_go_into_debt(make_store, runner: asyncio.Runner):
    store = make_store()
    runner.run(store.acquire([draw(50)], now=T0))
    assert runner.run(store.adjust("k", 60.0, 1.0, 30.0, now=T0)) == 40.0
    assert runner.run(store.adjust("k", 60.0, 1.0, 1000.0, now=T0)) == 60.0
    assert runner.run(store.adjust("k", 60.0, 1.0, -90.0, now=T0)) == -30.0
    assert runner.run(store.adjust("k", 60.0, 1.0, -1000.0, now=T0)) == -60.0
    rejected = runner.run(store.acquire([draw(1)], now=T0))
    assert rejected.retry_after == pytest.approx(61.0)
    # A bucket never seen before is full.
    assert runner.run(store.adjust("fresh", 60.0, 1.0, -10.0, now=T0)) == 50.0


def test_refund_equals_charging_then_adjusting_at_once(make_store, runner: asyncio.Runner):
    store = make_store()
    for key in ("folded", "stepwise"):
        runner.run(store.acquire([draw(25, key=key)], now=T0))  # part-way down, refilling
    admitted = runner.run(store.acquire([Draw("folded", 60.0, 30.0, 1.0, refund=12.0)], now=T0 + 3))
    runner.run(store.acquire([draw(30, key="stepwise")], now=T0 + 3))
    level = runner.run(store.adjust("stepwise", 60.0, 1.0, 12.0, now=T0 + 3))
    assert admitted.admitted and admitted.levels == {"folded": level} == {"folded": 20.0}
    later = runner.run(store.levels([draw(0, key="folded"), draw(0, key="stepwise")], now=T0 + 5))
    assert later == {"folded": 22.0, "stepwise": 22.0}
    # Admission still needs the whole cost, not just what stays charged.
    assert not runner.run(store.acquire([Draw("folded", 60.0, 50.0, 1.0, refund=45.0)], now=T0 + 5)).admitted


def test_refund_is_bounded_by_the_cost():
    with pytest.raises(ValueError, match="refund"):
        Draw("k", 60.0, 10.0, 1.0, refund=11.0)
    with pytest.raises(ValueError, match="refund"):
        Draw.known("k", 60.0, 1.0, 10.0, refund=-1.0)


def test_multi_key_rejection_leaves_every_bucket_unchanged(make_store, runner: asyncio.Runner):
    store = make_store()
    runner.run(store.acquire([draw(55, key="low")], now=T0))
    rejected = runner.run(store.acquire([draw(30, key="plenty"), draw(10, key="low")], now=T0))
    assert not rejected.admitted and rejected.limiting == "low"
    assert rejected.retry_after == pytest.approx(5.0)
    assert runner.run(store.levels([draw(0, key="plenty"), draw(0, key="low")], now=T0)) == {
        "plenty": 60.0,
        "low": 5.0,
    }
    admitted = runner.run(store.acquire([draw(30, key="plenty"), draw(5, key="low")], now=T0))
    assert admitted == Admission(True, {"plenty": 30.0, "low": 0.0})


def test_reset_drops_buckets(make_store, runner: asyncio.Runner):
    store = make_store()
    runner.run(store.acquire([draw(60, key=f"k{i}") for i in range(3)], now=T0))
    runner.run(store.reset())
    assert runner.run(store.levels([draw(0, key=f"k{i}") for i in range(3)], now=T0)) == {
        "k0": 60.0,
        "k1": 60.0,
        "k2": 60.0,
    }


def test_key_prefixes_isolate_stores(make_store, runner: asyncio.Runner):
    a, a_again, b = make_store("a:"), make_store("a:"), make_store("b:")
    runner.run(a.acquire([draw(60)], now=T0))
    runner.run(b.acquire([draw(20)], now=T0))
    assert runner.run(a_again.levels([draw(0)], now=T0)) == {"k": 0.0}
    assert runner.run(b.levels([draw(0)], now=T0)) == {"k": 40.0}
    runner.run(b.reset())
    assert runner.run(a.levels([draw(0)], now=T0)) == {"k": 0.0}
    assert runner.run(b.levels([draw(0)], now=T0)) == {"k": 60.0}


def test_idle_bucket_expiry_keeps_answers_correct(make_store, runner: asyncio.Runner):
    store = make_store(expiry_margin=0.05)
    fast = Draw("k", 10.0, 10.0, 100.0)  # full again 0.1 s after being emptied
    runner.run(store.acquire([fast], now=T0))
    time.sleep(0.3)
    if isinstance(store, RedisBucketStore):
        assert runner.run(_exists(store, "k")) == 0
    assert runner.run(store.levels([fast], now=T0 + 0.3)) == {"k": 10.0}
    assert runner.run(store.acquire([Draw("k", 10.0, 4.0, 100.0)], now=T0 + 0.3)).levels == {"k": 6.0}


def test_now_none_reads_the_injected_clock(make_store, runner: asyncio.Runner):
    clock = FakeClock(T0)
    store = make_store(clock=clock, use_server_time=False)
    runner.run(store.acquire([draw(60)]))
    clock.advance(15)
    assert runner.run(store.levels([draw(0)])) == {"k": 15.0}
    assert runner.run(store.adjust("k", 60.0, 1.0, 5.0)) == 20.0


def test_empty_request_and_ping(make_store, runner: asyncio.Runner):
    store = make_store()
    runner.run(store.ping())
    assert runner.run(store.acquire([], now=T0)) == Admission(True, {})
    assert runner.run(store.levels([], now=T0)) == {}


def test_duplicate_keys_are_rejected(make_store, runner: asyncio.Runner):
    store = make_store()
    with pytest.raises(ValueError, match="once per request"):
        runner.run(store.acquire([draw(1), draw(2)], now=T0))


# --- Redis only -------------------------------------------------------------------------------------


async def _exists(store: RedisBucketStore, key: str) -> int:
    return await store._redis.execute("EXISTS", store.key_prefix + "limits:" + key)


async def _raw_bucket(store: RedisBucketStore, key: str) -> dict[bytes, bytes]:
    """A bucket as stored: the string "<level> <updated>"."""
    level, updated = (await store._redis.execute("GET", store.key_prefix + "limits:" + key)).split()
    return {b"level": level, b"updated": updated}


@pytest.mark.redis
def test_concurrent_acquires_from_two_clients_never_over_admit(redis_url: str, runner: asyncio.Runner):
    prefix = unique_key_prefix()
    stores = [RedisBucketStore(redis_url, key_prefix=prefix) for _ in range(2)]
    draws = [Draw("k", 50.0, 1.0, 1.0), Draw("other", 1000.0, 3.0, 1.0)]

    async def go() -> list[Admission]:
        try:
            return await asyncio.gather(*(stores[i % 2].acquire(draws, now=T0) for i in range(300)))
        finally:
            for store in stores:
                await store.close()

    results = runner.run(go())
    assert sum(a.admitted for a in results) == 50
    final = min(a.levels["k"] for a in results)
    assert final == 0.0


@pytest.mark.redis
def test_calls_of_one_loop_pass_are_one_script_call_with_serial_answers(
    redis_url: str, runner: asyncio.Runner
):
    batched = RedisBucketStore(redis_url, key_prefix=unique_key_prefix())
    memory = MemoryBucketStore()
    calls: list[int] = []
    real = batched._redis.evalsha

    async def counting(script, keys=(), args=()):
        calls.append(int(args[0]))
        return await real(script, keys, args)

    batched._redis.evalsha = counting  # type: ignore[method-assign]
    # Fits, fits, never fits, refund, rejection with a wait, a peek and an adjust, all in one pass:
    # each must answer as if the calls had been made one at a time, in order.
    script = [
        ("acquire", [Draw("k", 60.0, 25.0, 1.0), Draw("o", 100.0, 10.0, 2.0)]),
        ("acquire", [Draw("k", 60.0, 25.0, 1.0)]),
        ("acquire", [Draw("k", 60.0, 61.0, 1.0)]),
        ("acquire", [Draw("o", 100.0, 50.0, 2.0, 20.0)]),
        ("acquire", [Draw("k", 60.0, 20.0, 1.0), Draw("o", 100.0, 1.0, 2.0)]),
        ("levels", [Draw("k", 60.0, 0.0, 1.0), Draw("o", 100.0, 0.0, 2.0)]),
        ("adjust", [Draw("k", 60.0, 0.0, 1.0)]),
    ]

    def call(store, op: str, draws: list[Draw]):
        if op == "adjust":
            return store.adjust("k", 60.0, 1.0, 7.0, now=T0)
        return getattr(store, op)(draws, now=T0)

    async def go() -> tuple[list, list]:
        try:
            together = await asyncio.gather(*(call(batched, op, draws) for op, draws in script))
        finally:
            await batched.close()
        one_by_one = [await call(memory, op, draws) for op, draws in script]
        return together, one_by_one

    together, one_by_one = runner.run(go())
    assert calls == [len(script)]
    assert together == one_by_one
    assert [a.admitted for a in together[:5]] == [True, True, False, True, False]


@pytest.mark.redis
def test_every_caller_of_a_batch_gets_the_outage(runner: asyncio.Runner):
    with running_redis_server() as server:
        store = RedisBucketStore(server.url, key_prefix=unique_key_prefix())
        try:
            runner.run(store.ping())
            server.stop()

            async def many() -> list[BaseException | Admission]:
                return await asyncio.gather(
                    *(store.acquire([draw(1)], now=T0) for _ in range(5)), return_exceptions=True
                )

            failures = runner.run(many())
            assert all(isinstance(f, StoreUnavailable) for f in failures)
            assert len({id(f) for f in failures}) == 5  # one exception each, not one shared
        finally:
            runner.run(store.close())


@pytest.mark.redis
def test_outage_fails_fast_and_recovers_on_restart(runner: asyncio.Runner):
    with running_redis_server() as server:
        store = RedisBucketStore(server.url, key_prefix=unique_key_prefix())
        try:
            assert runner.run(store.acquire([draw(10)], now=T0)).admitted
            server.stop()
            for call in (store.acquire([draw(10)], now=T0), store.ping(), store.reset()):
                started = time.monotonic()
                with pytest.raises(StoreUnavailable, match=f"127.0.0.1:{server.port}"):
                    runner.run(call)
                assert time.monotonic() - started < 3
            server.start()
            # The restarted server lost its data (no persistence): the bucket is full again.
            assert runner.run(store.acquire([draw(10)], now=T0)) == Admission(True, {"k": 50.0})
            runner.run(store.ping())
            # A restart between two calls leaves a dead pooled connection; the caller must not notice.
            server.stop()
            server.start()
            assert runner.run(store.acquire([draw(10)], now=T0)) == Admission(True, {"k": 50.0})
        finally:
            runner.run(store.close())


@pytest.mark.redis
def test_hung_redis_fails_within_the_timeout(runner: asyncio.Runner):
    with running_redis_server() as server:
        store = RedisBucketStore(server.url, key_prefix=unique_key_prefix(), timeout=0.5)
        try:
            runner.run(store.ping())
            server.pause()
            started = time.monotonic()
            with pytest.raises(StoreUnavailable, match="unavailable"):
                runner.run(store.acquire([draw(10)], now=T0))
            assert time.monotonic() - started < 3
            server.resume()
            assert runner.run(store.acquire([draw(10)], now=T0)).admitted
        finally:
            server.resume()
            runner.run(store.close())


@pytest.mark.redis
def test_now_none_uses_redis_server_time(redis_url: str, runner: asyncio.Runner):
    far_past = FakeClock(1_000_000_000.0)
    server_time = RedisBucketStore(redis_url, key_prefix=unique_key_prefix(), clock=far_past)
    local_time = RedisBucketStore(
        redis_url, key_prefix=unique_key_prefix(), clock=far_past, use_server_time=False
    )
    try:
        runner.run(server_time.acquire([draw(1)]))
        runner.run(local_time.acquire([draw(1)]))
        assert abs(float(runner.run(_raw_bucket(server_time, "k"))[b"updated"]) - time.time()) < 5
        assert float(runner.run(_raw_bucket(local_time, "k"))[b"updated"]) == 1_000_000_000.0
    finally:
        runner.run(server_time.close())
        runner.run(local_time.close())


@pytest.mark.redis
def test_buckets_expire_a_margin_after_they_would_be_full(redis_url: str, runner: asyncio.Runner):
    store = RedisBucketStore(redis_url, key_prefix=unique_key_prefix(), expiry_margin=60.0)

    async def pttl() -> int:
        return await store._redis.execute("PTTL", store.key_prefix + "limits:k")

    try:
        runner.run(store.acquire([draw(30)], now=T0))  # 30 s from full
        assert 89_000 < runner.run(pttl()) <= 90_000
    finally:
        runner.run(store.close())


@pytest.mark.redis
# The first loop's connections cannot be closed once that loop is gone; collect them here, quietly.
@pytest.mark.filterwarnings("ignore::ResourceWarning", "ignore::pytest.PytestUnraisableExceptionWarning")
def test_store_survives_a_new_event_loop(redis_url: str):
    store = RedisBucketStore(redis_url, key_prefix=unique_key_prefix())
    assert asyncio.run(store.acquire([draw(10)], now=T0)).admitted
    assert asyncio.run(store.acquire([draw(10)], now=T0)).levels == {"k": 40.0}
    asyncio.run(store.close())
    gc.collect()


operations = st.lists(
    st.one_of(
        st.tuples(st.just("acquire"), st.floats(0, 20), st.lists(st.floats(0, 1.3), min_size=2, max_size=2)),
        # (cost fraction, refund as a fraction of that cost): a request charged what it produced
        st.tuples(st.just("acquire_refund"), st.floats(0, 20), st.tuples(st.floats(0, 1.3), st.floats(0, 1))),
        st.tuples(st.just("adjust"), st.floats(0, 20), st.floats(-1.5, 1.5)),
        st.tuples(st.just("levels"), st.floats(0, 20), st.just(0.0)),
    ),
    max_size=25,
)


@pytest.mark.redis
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=operations, start=st.floats(0, 4e9), capacities=st.tuples(st.floats(1, 1e6), st.floats(1, 1e6)))
def test_redis_answers_bit_for_bit_like_memory(redis_url: str, ops, start, capacities):
    """The Lua script repeats bucket.py's arithmetic; any divergence would show here exactly."""
    specs = [("in", capacities[0], capacities[0] / 60), ("out", capacities[1], capacities[1] / 7)]

    async def go() -> None:
        memory = MemoryBucketStore()
        redis = RedisBucketStore(redis_url, key_prefix=unique_key_prefix())
        try:
            now = start
            for op, dt, arg in ops:
                now += dt
                if op == "acquire":
                    draws = [Draw(k, c, f * c, r) for (k, c, r), f in zip(specs, arg, strict=True)]
                    assert await redis.acquire(draws, now) == await memory.acquire(draws, now)
                elif op == "acquire_refund":
                    (key, capacity, rate), (fraction, back) = specs[1], arg
                    draws = [
                        Draw(key, capacity, fraction * capacity, rate, refund=back * fraction * capacity)
                    ]
                    assert await redis.acquire(draws, now) == await memory.acquire(draws, now)
                elif op == "adjust":
                    key, capacity, rate = specs[1]
                    delta = arg * capacity
                    assert await redis.adjust(key, capacity, rate, delta, now) == await memory.adjust(
                        key, capacity, rate, delta, now
                    )
                else:
                    draws = [Draw(k, c, 0.0, r) for k, c, r in specs]
                    assert await redis.levels(draws, now) == await memory.levels(draws, now)
        finally:
            await redis.close()

    asyncio.run(go())
