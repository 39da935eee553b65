from __future__ import annotations

import math

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from mockserver.limits.bucket import (
    Admission,
    BucketState,
    Draw,
    adjust,
    decide,
    level_at,
    seconds_until_full,
)

T0 = 1_800_000_000.0
KEYS = ("a", "b", "c")

capacities = st.integers(1, 1_000_000).map(float) | st.floats(0.5, 1e6)
rates = st.floats(0.01, 1e5)
starts = st.sampled_from([0.0, 1.0, T0]) | st.floats(0, 4e9)


@st.composite
def buckets(draw: st.DrawFn, n_max: int = 3) -> list[tuple[str, float, float]]:
    """(key, capacity, rate) for 1..n_max distinct buckets."""
    n = draw(st.integers(1, n_max))
    return [(KEYS[i], draw(capacities), draw(rates)) for i in range(n)]


@st.composite
def states_for(draw: st.DrawFn, spec: list[tuple[str, float, float]], now: float) -> dict[str, BucketState]:
    """Arbitrary stored states, including debt and `updated` slightly ahead of `now` (clock skew)."""
    states = {}
    for key, capacity, _ in spec:
        if draw(st.booleans()):
            level = draw(st.floats(-capacity, capacity))
            updated = now + draw(st.floats(-120, 5))
            states[key] = BucketState(level, updated)
    return states


def make_draws(spec: list[tuple[str, float, float]], costs: list[float]) -> list[Draw]:
    return [Draw(key, capacity, cost, rate) for (key, capacity, rate), cost in zip(spec, costs, strict=True)]


@st.composite
def costs_for(draw: st.DrawFn, spec: list[tuple[str, float, float]], over: float = 1.0) -> list[float]:
    return [draw(st.floats(0, capacity * over)) for _, capacity, _ in spec]


@given(
    spec=buckets(),
    start=starts,
    steps=st.lists(
        st.tuples(st.floats(0, 30), st.lists(st.floats(0, 1.2), min_size=3, max_size=3)), max_size=40
    ),
)
def test_never_over_admits_and_levels_stay_in_range(spec, start, steps):
    states: dict[str, BucketState] = {}
    admitted_cost = dict.fromkeys(KEYS, 0.0)
    now = start
    for dt, fractions in steps:
        now += dt
        draws = make_draws(spec, [f * cap for (_, cap, _), f in zip(spec, fractions, strict=False)])
        admission, new_states = decide(draws, states, now)
        states.update(new_states)
        for d in draws:
            assert 0.0 <= admission.levels[d.key] <= d.capacity
            if admission.admitted:
                admitted_cost[d.key] += d.cost
        for key, capacity, rate in spec:
            # A full bucket at `start`, plus whatever refilled since; relative slack for float noise.
            allowed = capacity + rate * (now - start)
            assert admitted_cost[key] <= allowed * (1 + 1e-9) + 1e-9


@given(data=st.data(), spec=buckets(), now=starts)
def test_all_or_nothing(data, spec, now):
    states = data.draw(states_for(spec, now))
    draws = make_draws(spec, data.draw(costs_for(spec, over=1.2)))
    before = {d.key: level_at(states.get(d.key), d.capacity, d.rate, now) for d in draws}
    admission, new_states = decide(draws, states, now)
    if admission.admitted:
        assert all(d.cost <= before[d.key] for d in draws)
        assert admission.levels == {d.key: before[d.key] - d.cost for d in draws}
        assert {k: s.level for k, s in new_states.items()} == admission.levels
        assert admission.retry_after == 0.0 and admission.limiting is None and not admission.never_fits
    else:
        assert any(d.cost > before[d.key] for d in draws)
        assert new_states == {}
        assert admission.levels == before
        assert admission.limiting in before


@given(data=st.data(), spec=buckets(), now=starts)
def test_retry_after_is_exactly_enough(data, spec, now):
    states = data.draw(states_for(spec, now))
    draws = make_draws(spec, data.draw(costs_for(spec)))
    admission, _ = decide(draws, states, now)
    assume(not admission.admitted)
    assert not admission.never_fits
    assert 0 < admission.retry_after < math.inf
    later, _ = decide(draws, states, now + admission.retry_after)
    assert later.admitted
    margin = 1e-3 + 1e-9 * admission.retry_after
    if admission.retry_after >= margin:
        earlier, _ = decide(draws, states, now + admission.retry_after - margin)
        assert not earlier.admitted
        limiting = next(d for d in draws if d.key == admission.limiting)
        assert limiting.cost > earlier.levels[limiting.key]


@given(data=st.data(), spec=buckets(), now=starts)
def test_never_fits_when_a_cost_exceeds_its_capacity(data, spec, now):
    states = data.draw(states_for(spec, now))
    costs = data.draw(costs_for(spec))
    victim = data.draw(st.integers(0, len(spec) - 1))
    costs[victim] = spec[victim][1] * data.draw(st.floats(1.001, 100))
    draws = make_draws(spec, costs)
    admission, new_states = decide(draws, states, now)
    assert not admission.admitted and admission.never_fits
    assert admission.retry_after == math.inf
    assert admission.limiting is not None
    assert next(d.cost > d.capacity for d in draws if d.key == admission.limiting)
    assert new_states == {}


@given(
    capacity=capacities,
    rate=rates,
    now=starts,
    level=st.floats(-1.0, 1.0),
    delta_fraction=st.floats(-3.0, 3.0),
)
def test_adjust_refunds_stop_at_capacity_and_debt_at_minus_capacity(
    capacity, rate, now, level, delta_fraction
):
    state = BucketState(level * capacity, now)
    new = adjust(state, capacity, rate, delta_fraction * capacity, now)
    assert -capacity <= new.level <= capacity
    expected = level * capacity + delta_fraction * capacity
    assert new.level == max(-capacity, min(capacity, expected))
    assert new.updated == now


def test_adjust_missing_bucket_is_full():
    assert adjust(None, 100.0, 1.0, 50.0, T0) == BucketState(100.0, T0)
    assert adjust(None, 100.0, 1.0, -30.0, T0) == BucketState(70.0, T0)


def test_debt_delays_admission_until_repaid():
    state = adjust(None, 60.0, 1.0, -90.0, T0)
    assert state.level == -30.0
    admission, _ = decide([Draw("k", 60.0, 0.0, 1.0)], {"k": state}, T0)
    assert not admission.admitted and admission.retry_after == pytest.approx(30.0)


def test_refill_is_continuous_and_capped():
    state = BucketState(10.0, T0)
    assert level_at(state, 60.0, 1.0, T0 + 0.5) == 10.5
    assert level_at(state, 60.0, 1.0, T0 + 1000) == 60.0
    assert level_at(state, 60.0, 1.0, T0 - 5) == 10.0  # a clock that steps back refills nothing
    assert level_at(None, 60.0, 1.0, T0) == 60.0


def test_updated_never_moves_backwards():
    state = BucketState(30.0, T0 + 10)
    admission, new_states = decide([Draw("k", 60.0, 5.0, 1.0)], {"k": state}, T0)
    assert admission.admitted
    assert new_states["k"] == BucketState(25.0, T0 + 10)


def test_retry_after_waits_for_skewed_updated():
    state = BucketState(0.0, T0 + 10)
    admission, _ = decide([Draw("k", 60.0, 5.0, 1.0)], {"k": state}, T0)
    assert admission.retry_after == pytest.approx(15.0)


def test_limiting_is_the_longest_wait():
    draws = [Draw("fast", 100.0, 10.0, 10.0), Draw("slow", 100.0, 10.0, 1.0)]
    states = {"fast": BucketState(0.0, T0), "slow": BucketState(5.0, T0)}
    admission, _ = decide(draws, states, T0)
    assert admission == Admission(False, {"fast": 0.0, "slow": 5.0}, 5.0, "slow", False)


def test_draw_defaults_and_validation():
    assert Draw("k", 120, 1).rate == 2.0
    assert Draw.per_minute("k", 600, 3) == Draw("k", 600.0, 3.0, 10.0)
    assert isinstance(Draw("k", 5, 1).capacity, float)
    for bad in ({"capacity": 0.0}, {"capacity": math.inf}, {"cost": -1.0}, {"rate": 0.0}, {"cost": math.nan}):
        kwargs = {"key": "k", "capacity": 10.0, "cost": 1.0} | bad
        with pytest.raises(ValueError, match="bucket 'k'"):
            Draw(**kwargs)


def test_duplicate_keys_are_rejected():
    with pytest.raises(ValueError, match="once per request"):
        decide([Draw("k", 10.0, 1.0), Draw("k", 10.0, 2.0)], {}, T0)


def test_empty_request_is_admitted():
    assert decide([], {}, T0) == (Admission(True, {}), {})


def test_seconds_until_full():
    assert seconds_until_full(30.0, 60.0, 1.0) == 30.0
    assert seconds_until_full(60.0, 60.0, 1.0) == 0.0
    assert seconds_until_full(-60.0, 60.0, 2.0) == 60.0


def test_tiny_deficit_still_names_the_limiting_bucket():
    # (5e-324 - 0) / 1e5 underflows to 0 seconds; the answer must still be a usable rejection.
    draws = [Draw("a", 1e5, 5e-324, 1e5)]
    states = {"a": BucketState(0.0, 0.0)}
    admission, _ = decide(draws, states, 0.0)
    assert not admission.admitted and admission.limiting == "a" and admission.retry_after > 0
    assert decide(draws, states, admission.retry_after)[0].admitted
