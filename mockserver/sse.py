"""Encoding of one stream event as server-sent-event bytes (`event:` line, `data:` line, blank line)."""

from __future__ import annotations

import orjson

from mockserver.events import Event


def encode_event(event: Event) -> bytes:
    return b"event: " + event.name.encode() + b"\ndata: " + orjson.dumps(event.data) + b"\n\n"
