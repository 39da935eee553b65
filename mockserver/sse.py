"""Encoding of one stream event as server-sent-event bytes (`event:` line, `data:` line, blank line)."""

from __future__ import annotations

from collections.abc import Iterable

import orjson

from mockserver.events import Event

# Event names are few and fixed; building their prefix once saves work on every delta of every stream.
_PREFIXES: dict[str, bytes] = {}


def encode_event(event: Event) -> bytes:
    prefix = _PREFIXES.get(event.name)
    if prefix is None:
        prefix = _PREFIXES[event.name] = b"event: " + event.name.encode() + b"\ndata: "
    return prefix + orjson.dumps(event.data) + b"\n\n"


def encode_events(events: Iterable[Event]) -> bytes:
    """Several events as one chunk: one write to the socket instead of one per event."""
    return b"".join(map(encode_event, events))
