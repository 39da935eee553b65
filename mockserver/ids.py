"""Identifiers with the real prefixes and shapes (`msg_01` + 22 base58 characters, and so on)."""

from __future__ import annotations

import os

_BASE58 = b"123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
# Byte → base58 character; 256 is not a multiple of 58, so the first characters are a little more
# likely. Ids only need to be unique and look right, and this is ~20x cheaper than secrets.choice.
_TABLE = bytes(_BASE58[i % 58] for i in range(256))


def _tail(length: int) -> str:
    return os.urandom(length).translate(_TABLE).decode()


def message_id() -> str:
    return "msg_01" + _tail(22)


def request_id() -> str:
    return "req_011C" + _tail(20)


def tool_use_id() -> str:
    return "toolu_01" + _tail(22)


def batch_id() -> str:
    return "msgbatch_01" + _tail(22)
