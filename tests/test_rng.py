"""SeededRandom: the reply generator's cheap-to-seed PRNG keeps random.Random's contract."""

from __future__ import annotations

import pytest

from mockserver.rng import SeededRandom


def test_same_seed_same_draws_and_different_seeds_differ() -> None:
    def draws(seed: int) -> list[object]:
        rng = SeededRandom(seed)
        return [rng.randint(24, 120), rng.randrange(50_000), rng.random(), rng.choices("abc", k=5)]

    assert draws(7) == draws(7)
    assert draws(7) != draws(8)


def test_draws_stay_in_range_and_cover_it() -> None:
    rng = SeededRandom(2**70 + 3)  # seeds wider than 64 bits are folded, not refused
    values = [rng.randint(1, 6) for _ in range(3000)]
    assert set(values) == {1, 2, 3, 4, 5, 6}
    assert all(0.0 <= rng.random() < 1.0 for _ in range(1000))
    assert 0 <= rng.getrandbits(200) < 2**200


def test_state_round_trips() -> None:
    rng = SeededRandom(11)
    state = rng.getstate()
    first = [rng.random() for _ in range(3)]
    rng.setstate(state)
    assert [rng.random() for _ in range(3)] == first


def test_needs_an_integer_seed() -> None:
    with pytest.raises(TypeError):
        SeededRandom("not a number")  # type: ignore[arg-type]
