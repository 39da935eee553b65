"""Ids: the real prefixes and shapes, unique, and not tied to the random module's state."""

from __future__ import annotations

import os
import random
import re

import pytest

from mockserver import ids

BASE58 = "[1-9A-HJ-NP-Za-km-z]"


def test_ids_have_the_real_shapes() -> None:
    assert re.fullmatch(f"msg_01{BASE58}{{22}}", ids.message_id())
    assert re.fullmatch(f"req_011C{BASE58}{{20}}", ids.request_id())
    assert re.fullmatch(f"msgbatch_01{BASE58}{{22}}", ids.batch_id())


def test_ids_do_not_repeat_when_a_test_reseeds_the_random_module() -> None:
    # Hypothesis and many test suites seed the global generator to fixed values per example.
    saved = random.getstate()
    try:
        random.seed(0)
        first = [ids.message_id() for _ in range(3)]
        random.seed(0)
        assert not set(first) & {ids.message_id() for _ in range(3)}
    finally:
        random.setstate(saved)
    assert len({ids.request_id() for _ in range(100_000)}) == 100_000


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_does_not_repeat_its_parents_ids() -> None:
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: send one id back and leave at once
        os.write(write, ids.message_id().encode())
        os._exit(0)
    os.close(write)
    os.waitpid(pid, 0)
    child = os.read(read, 100).decode()
    os.close(read)
    assert child != ids.message_id()
