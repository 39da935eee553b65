"""MemoryBucketStore, driven through random sequences of calls, against the pure bucket model."""

from __future__ import annotations

import asyncio
import math
from typing import Any

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from mockserver.clock import FakeClock
from mockserver.limits import Admission, BucketState, Draw, MemoryBucketStore, adjust, decide, level_at

T0 = 1_800_000_000.0
BUCKETS = {"rpm": (60.0, 1.0), "itpm": (10_000.0, 10_000 / 60), "otpm": (2_000.0, 2_000 / 60)}
keys = st.sampled_from(sorted(BUCKETS))


class MemoryStoreMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.runner = asyncio.Runner()
        self.clock = FakeClock(T0)
        self.store = MemoryBucketStore(clock=self.clock)
        self.model: dict[str, BucketState] = {}
        self.last: Admission | None = None
        self.last_draws: list[Draw] = []

    def run(self, coro: Any) -> Any:
        return self.runner.run(coro)

    def now(self, explicit: bool) -> float | None:
        # Half the calls pass `now`, half let the store read its clock; both must mean the same.
        return self.clock.now() if explicit else None

    @rule(
        chosen=st.sets(keys, min_size=1),
        fractions=st.dictionaries(keys, st.floats(0, 1.2), min_size=3),
        explicit=st.booleans(),
    )
    def acquire(self, chosen: set[str], fractions: dict[str, float], explicit: bool) -> None:
        draws = [Draw(k, BUCKETS[k][0], fractions[k] * BUCKETS[k][0], BUCKETS[k][1]) for k in sorted(chosen)]
        got = self.run(self.store.acquire(draws, self.now(explicit)))
        expected, new_states = decide(draws, self.model, self.clock.now())
        assert got == expected
        self.model.update(new_states)
        self.last, self.last_draws = got, draws

    @precondition(lambda self: self.last is not None and not self.last.admitted and not self.last.never_fits)
    @rule()
    def retry_after_the_advertised_delay(self) -> None:
        assert self.last is not None
        self.clock.advance(self.last.retry_after)
        got = self.run(self.store.acquire(self.last_draws))
        expected, new_states = decide(self.last_draws, self.model, self.clock.now())
        assert got == expected
        assert got.admitted
        self.model.update(new_states)
        self.last = got

    @rule(seconds=st.floats(0, 90) | st.sampled_from([0.0, 1e-6, 1.0, 60.0]))
    def advance(self, seconds: float) -> None:
        self.clock.advance(seconds)

    @rule(key=keys, fraction=st.floats(-1.5, 1.5), explicit=st.booleans())
    def adjust(self, key: str, fraction: float, explicit: bool) -> None:
        capacity, rate = BUCKETS[key]
        got = self.run(self.store.adjust(key, capacity, rate, fraction * capacity, self.now(explicit)))
        self.model[key] = adjust(self.model.get(key), capacity, rate, fraction * capacity, self.clock.now())
        assert got == self.model[key].level
        self.last = None  # an extra charge voids the retry-after advertised before it

    @rule()
    def reset(self) -> None:
        self.run(self.store.reset())
        self.model.clear()
        self.last = None

    @invariant()
    def levels_match_the_model_and_stay_in_range(self) -> None:
        draws = [Draw(k, capacity, 0.0, rate) for k, (capacity, rate) in BUCKETS.items()]
        got = self.run(self.store.levels(draws))
        now = self.clock.now()
        assert got == {d.key: level_at(self.model.get(d.key), d.capacity, d.rate, now) for d in draws}
        for d in draws:
            assert -d.capacity <= got[d.key] <= d.capacity
            assert not math.isnan(got[d.key])

    def teardown(self) -> None:
        self.runner.close()


MemoryStoreMachine.TestCase.settings = settings(max_examples=60, stateful_step_count=40, deadline=None)
TestMemoryStore = MemoryStoreMachine.TestCase
