"""jsonload.loads answers exactly as orjson.loads does: same values, same errors, for any input."""

from __future__ import annotations

import json
import threading

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from mockserver.jsonload import loads

values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)  # beyond 64 bits orjson reads a float
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=8), inner, max_size=5),
    max_leaves=30,
)


def orjson_answer(payload: bytes) -> tuple[str, object]:
    try:
        return "ok", orjson.loads(payload)
    except orjson.JSONDecodeError:
        return "error", None


def our_answer(payload: bytes) -> tuple[str, object]:
    try:
        return "ok", loads(payload)
    except orjson.JSONDecodeError:
        return "error", None


@given(values, st.booleans())
def test_valid_documents_read_the_same(value: object, compact: bool) -> None:
    payload = json.dumps(value, separators=(",", ":") if compact else None, ensure_ascii=compact).encode()
    ours, theirs = our_answer(payload), orjson_answer(payload)
    assert repr(ours) == repr(theirs)  # repr: -0.0 and 0.0, 1 and 1.0 must not pass as equal


@given(st.binary(max_size=40) | st.text(max_size=40).map(str.encode))
def test_any_bytes_give_the_same_value_or_the_same_error(payload: bytes) -> None:
    assert repr(our_answer(payload)) == repr(orjson_answer(payload))


@pytest.mark.parametrize(
    "payload",
    [
        b'\xef\xbb\xbf{"a": 1}',  # a byte-order mark: simdjson would accept it, orjson does not
        b'{"a": 123456789012345678901234567890}',  # orjson reads a float, simdjson refuses
        b'{"a": "\xed\xa0\x80"}',  # an encoded surrogate
        b'{"a": 1,}',
        b"",
        '{"text": "caf\u00e9"}'.encode(),
    ],
)
def test_edge_cases_match_orjson(payload: bytes) -> None:
    assert repr(our_answer(payload)) == repr(orjson_answer(payload))


def test_str_input_and_threads() -> None:
    assert loads('{"a": [1, 2]}') == {"a": [1, 2]}
    results: list[object] = []
    threads = [threading.Thread(target=lambda n=n: results.append(loads(b'{"n": %d}' % n))) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(r["n"] for r in results) == list(range(8))  # type: ignore[index]
