"""Identifiers with the real prefixes and shapes (`msg_01` + 22 base58 characters, and so on)."""

from __future__ import annotations

import secrets

_BASE58 = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"


def _tail(length: int) -> str:
    return "".join(secrets.choice(_BASE58) for _ in range(length))


def message_id() -> str:
    return "msg_01" + _tail(22)


def request_id() -> str:
    return "req_011C" + _tail(20)


def tool_use_id() -> str:
    return "toolu_01" + _tail(22)


def batch_id() -> str:
    return "msgbatch_01" + _tail(22)
