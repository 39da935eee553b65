"""Identifiers with the real prefixes and shapes (`msg_01` + 22 base58 characters, and so on)."""

from __future__ import annotations

import hashlib
import os
import random

_ALPHABET = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
_BASE58 = _ALPHABET.encode()
# Byte → base58 character; 256 is not a multiple of 58, so the first characters are a little more
# likely. Ids only need to be unique and look right, and this is ~20x cheaper than secrets.choice.
_TABLE = bytes(_BASE58[i % 58] for i in range(256))


def _tail(length: int) -> str:
    return _getrandbits(8 * length).to_bytes(length, "little").translate(_TABLE).decode()


# A generator of our own, seeded from os.urandom, rather than os.urandom per id: ids must be unique,
# not secret, and a getrandom syscall per id showed up at ~2% of a request in profiles. Not the
# random module's: tests (Hypothesis among them) reseed that one to fixed values, which would repeat
# ids. A forked child must not repeat its parent's ids either.
_ids_random = random.Random()
os.register_at_fork(after_in_child=_ids_random.seed)
_getrandbits = _ids_random.getrandbits


def message_id() -> str:
    return "msg_01" + _tail(22)


def request_id() -> str:
    return "req_011C" + _tail(20)


def batch_id() -> str:
    return "msgbatch_01" + _tail(22)


def seeded_tool_use_id(rng: random.Random) -> str:
    """A tool-use id drawn from a reply's seeded generator: the same request names the same call."""
    return "toolu_01" + "".join(rng.choices(_ALPHABET, k=22))


def derived_id(prefix: str, *parts: str) -> str:
    """An id that is a function of `parts`: the same parts always name the same object."""
    number = int.from_bytes(hashlib.sha256("\0".join(parts).encode()).digest(), "big")
    tail = []
    for _ in range(22):
        number, digit = divmod(number, len(_ALPHABET))
        tail.append(_ALPHABET[digit])
    return prefix + "".join(tail)
