"""`SeededRandom`: a `random.Random` that is cheap to seed, for the one generator every reply makes.

`random.Random(seed)` spends ~6 µs filling the Mersenne Twister's 2.5 KB state from the seed, more
than the whole draw a reply needs (two or three numbers). SplitMix64 seeds by storing one integer
and is plenty for choosing words; all of `random.Random`'s methods build on `getrandbits`/`random`.
"""

from __future__ import annotations

import random

_MASK = (1 << 64) - 1


class SeededRandom(random.Random):
    _state: int

    def seed(self, a: object = None, version: int = 2) -> None:
        if not isinstance(a, int):
            raise TypeError("SeededRandom takes an integer seed")
        self._state = a & _MASK

    def getrandbits(self, k: int) -> int:
        out = bits = 0
        while bits < k:
            self._state = x = (self._state + 0x9E3779B97F4A7C15) & _MASK
            z = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
            z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK
            out = (out << 64) | (z ^ (z >> 31))
            bits += 64
        return out >> (bits - k)

    def randint(self, a: int, b: int) -> int:
        # The stdlib's randint goes through randrange's argument checks and _randbelow: 4 calls.
        if b < a:
            raise ValueError(f"empty range for randint({a}, {b})")
        return a + self._randbelow(b - a + 1)

    def _randbelow(self, n: int) -> int:
        # What randrange, randint and choice draw through. Modulo bias is below n / 2**64: nothing
        # here draws from ranges anywhere near that wide. (The stdlib's rejection loop is 3 calls.)
        return self.getrandbits(64) % n if n <= 1 << 32 else super()._randbelow(n)

    def random(self) -> float:
        return self.getrandbits(53) * (1.0 / (1 << 53))

    def getstate(self) -> tuple[object, ...]:
        return (self._state,)

    def setstate(self, state: tuple[object, ...]) -> None:
        (value,) = state
        assert isinstance(value, int)
        self._state = value
