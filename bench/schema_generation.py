"""Time to answer (or refuse) a tool schema, in process: how the generator scales, and what a pattern
that backtracks without end costs.

    python bench/schema_generation.py [--rounds 3]

(a) Scaling: a schema with `minProperties` n whose extra properties draw from `additionalProperties`
    (with a `not`, so each value is checked as it is drawn), answered cold (the schema's first use:
    its compile, its probe and one answer) for n = 900 and n = 9,000. Naming the properties once
    took time quadratic in n (ratio ~100, 11 s at 9,000); linear shows as a ratio near 10.
(b) A catastrophic pattern (`^(a|a)*$` beside a pattern whose names it must be tried on): the time
    to refuse it, against the time to answer the same schema with a harmless pattern in its place.
    With `re` it held the process for 9 s and was then answered; now a match is cut at 50 ms and the
    schema is refused with a 400 naming the pattern. Target: refusal under 10x the harmless answer.

Each figure is the best of `--rounds`; every schema is new to the process's caches in each round.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from typing import Any

from mockserver.json_schema import Unanswerable, answer
from mockserver.rng import SeededRandom

EVIL = "^(a|a)*$"


def many_properties(count: int, salt: int) -> dict[str, Any]:
    # `salt` makes the bytes new, so the compiled-schema cache never answers for an earlier round.
    return {
        "type": "object",
        "minProperties": count,
        "additionalProperties": {"type": "string", "not": {"const": f"salt-{salt}"}},
    }


def pattern_schema(pattern: str, salt: int) -> dict[str, Any]:
    return {
        "type": "object",
        "minProperties": 2,
        "description": f"salt-{salt}",
        "patternProperties": {"^a{26}!$": {}, pattern: {}},
    }


def seconds(schema: dict[str, Any]) -> tuple[float, str]:
    started = time.perf_counter()
    try:
        answer(schema, SeededRandom(1))
        outcome = "answered"
    except Unanswerable as exc:
        outcome = f"refused: {str(exc)[:70]}..."
    return time.perf_counter() - started, outcome


def best(make: Callable[[int], dict[str, Any]], rounds: int, salt: int) -> tuple[float, str]:
    runs = [seconds(make(salt * 1000 + i)) for i in range(rounds)]
    return min(run[0] for run in runs), runs[-1][1]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=3)
    rounds = parser.parse_args().rounds

    small, _ = best(lambda salt: many_properties(900, salt), rounds, 1)
    large, _ = best(lambda salt: many_properties(9000, salt), rounds, 2)
    ratio = large / small
    print("(a) minProperties, cold answer")
    print(f"    n=900    {small * 1000:8.1f} ms")
    print(f"    n=9000   {large * 1000:8.1f} ms   ratio {ratio:.1f} (linear ~10, quadratic ~100)")
    print(f"    {'PASS' if ratio < 30 else 'MISS'}: ratio < 30")

    harmless, harmless_outcome = best(lambda salt: pattern_schema("^b+$", salt), rounds, 3)
    evil, evil_outcome = best(lambda salt: pattern_schema(EVIL, salt), rounds, 4)
    print("(b) a pattern that backtracks without end")
    print(f"    harmless pattern   {harmless * 1000:8.1f} ms   {harmless_outcome}")
    print(f"    {EVIL:<18} {evil * 1000:8.1f} ms   {evil_outcome}")
    verdict = evil < 10 * harmless + 0.1 and evil_outcome.startswith("refused")
    print(f"    {'PASS' if verdict else 'MISS'}: refused, in under 10x the harmless answer (+100 ms)")


if __name__ == "__main__":
    main()
