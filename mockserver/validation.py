"""Request headers and body → frozen request values, or an `InvalidRequestError` naming the field."""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

import orjson
from pydantic import BaseModel, ValidationError

from mockserver import jsonload
from mockserver.errors import AuthenticationError, InvalidRequestError
from mockserver.schema import TAG, CountTokensBody, MessagesBody
from mockserver.settings import ModelEntry, Settings

API_VERSIONS = ("2023-06-01", "2026-10-21")
# Sampling parameters the 2026-10-21 API removed: sending any of them is a 400, even at defaults.
REMOVED_IN_2026 = ("temperature", "top_p", "top_k")

Body = TypeVar("Body", bound=BaseModel)


@dataclass(frozen=True, slots=True)
class Caller:
    """Who is calling and under which API contract, read from the headers."""

    api_key: str
    api_version: str
    betas: frozenset[str]


# Not frozen: built for every request, and a frozen __init__ costs 4x. Treat as immutable.
@dataclass(slots=True)
class MessagesRequest:
    caller: Caller
    body: MessagesBody
    raw: dict[str, Any]  # the JSON as sent; the token counter and planner read plain data

    @property
    def speed(self) -> Literal["standard", "fast"] | None:
        return self.body.speed


RawHeaders = Iterable[tuple[bytes, bytes]]
_CALLER_HEADERS = (b"x-api-key", b"authorization", b"anthropic-version")


def read_caller(
    headers: RawHeaders,
    *,
    known_betas: frozenset[str] | None = None,
    api_keys: frozenset[str] | None = None,
) -> Caller:
    """The caller of a request, from its raw ASGI headers (lower-case names, as servers give them).

    `api_keys`: the keys the server accepts (`accepted_api_keys`), or None to accept any key.
    """
    found: dict[bytes, str] = {}
    betas: list[str] = []  # the header may be repeated, one beta per copy, as well as comma-separated
    for name, value in headers:
        if name == b"anthropic-beta":
            betas.append(value.decode("latin-1"))
        elif name in _CALLER_HEADERS and name not in found:
            found[name] = value.decode("latin-1")
    return _caller(
        found.get(b"x-api-key"),
        found.get(b"authorization"),
        found.get(b"anthropic-version"),
        tuple(betas),
        known_betas,
        api_keys,
    )


@functools.lru_cache(maxsize=1024)
def _caller(
    x_api_key: str | None,
    authorization: str | None,
    version: str | None,
    beta_values: tuple[str, ...],
    known_betas: frozenset[str] | None,
    api_keys: frozenset[str] | None,
) -> Caller:
    # Memoised: a test suite sends the same few header sets over and over.
    api_key = _api_key(x_api_key, authorization)
    if api_keys is not None and api_key not in api_keys:
        # The real API's wording, whichever header carried the key.
        raise AuthenticationError("invalid x-api-key")
    if version is None:
        raise InvalidRequestError("anthropic-version: header is required")
    if version not in API_VERSIONS:
        raise InvalidRequestError(
            f"anthropic-version: {version!r} is not a valid version; use one of {', '.join(API_VERSIONS)}"
        )
    betas = frozenset(b.strip() for value in beta_values for b in value.split(",") if b.strip())
    if known_betas is not None:
        unknown = sorted(betas.difference(known_betas))
        if unknown:
            raise InvalidRequestError(
                f"Unexpected value(s) `{', '.join(unknown)}` for the `anthropic-beta` header. Please consult "
                "our documentation at docs.claude.com or try again without the header."
            )
    return Caller(api_key=api_key, api_version=version, betas=betas)


def _api_key(x_api_key: str | None, authorization: str | None) -> str:
    # x-api-key wins when both are sent, as observed on the real API.
    key = x_api_key
    if key is None:
        scheme, _, token = (authorization or "").partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            key = token.strip()
        elif authorization:
            raise AuthenticationError("invalid authorization header: expected 'Bearer <key>'")
    if not key:
        raise AuthenticationError("x-api-key header is required")
    return key


def accepted_api_keys(settings: Settings) -> frozenset[str] | None:
    """The keys a server with `settings` accepts, or None for any key (no `api_keys` set).

    A key the settings name as an organisation's is accepted too: naming it there says it is in use.
    """
    if not settings.api_keys:
        return None
    return frozenset(settings.api_keys).union(*(org.keys for org in settings.organizations.values()))


def parse_json(payload: bytes | str, *, what: str = "Request body") -> dict[str, Any]:
    """A JSON object from `payload` (`what` names it in errors: a body, a header...)."""
    if not payload.strip():
        raise InvalidRequestError(f"{what} is empty; expected a JSON object")
    try:
        data = jsonload.loads(payload)
    except orjson.JSONDecodeError as exc:
        raise InvalidRequestError(f"{what} is not valid JSON: {_undecodable(payload) or exc}") from None
    if not isinstance(data, dict):
        raise InvalidRequestError(f"{what} must be a JSON object, got {_json_type(data)}")
    return data


def parse_messages_request(payload: bytes, caller: Caller) -> MessagesRequest:
    raw = parse_json(payload)
    body = validate_body(MessagesBody, raw)
    _check_version_rules(body, raw, caller.api_version)
    thinking = body.thinking
    if (
        body.max_tokens
        and thinking is not None
        and thinking.type == "enabled"
        and thinking.budget_tokens >= body.max_tokens
    ):
        raise InvalidRequestError("`max_tokens` must be greater than `thinking.budget_tokens`")
    return MessagesRequest(caller=caller, body=body, raw=raw)


def parse_count_tokens_request(payload: bytes) -> tuple[CountTokensBody, dict[str, Any]]:
    raw = parse_json(payload)
    return validate_body(CountTokensBody, raw), raw


def validate_body(model: type[Body], raw: dict[str, Any]) -> Body:
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        raise InvalidRequestError(describe(exc)) from None


def describe(exc: ValidationError) -> str:
    """The first problem, worded like the real API: `messages.0.content: Field required`."""
    errors = exc.errors(include_url=False, include_context=False, include_input=False)
    error = min(errors, key=lambda e: (e["type"] != "missing", -len(e["loc"])))
    loc = error["loc"]
    path = ".".join(str(part) for i, part in enumerate(loc) if not _not_a_field(part, last=i == len(loc) - 1))
    message = "Extra inputs are not permitted" if error["type"] == "extra_forbidden" else error["msg"]
    message = _CLASS_NAMED.sub("", message.removeprefix("Value error, "))
    return f"{path}: {message}" if path else message


# pydantic names the member of a union it tried (`TextBlock`, `list[...]`, `function-after[...]`) in
# the path and the class it wanted in "a valid dictionary or instance of _Request": neither is a
# name the API's caller knows. Only pydantic's own labels are left out, never a caller's key.
_TYPE_LABEL = re.compile(
    r"(?:list|dict|tuple|set|nullable|union|tagged-union|function-\w+|[a-z-]+-or-[a-z-]+)\[.*\]"
)
_CLASS_NAMED = re.compile(r" or instance of \w+")


@functools.cache
def _model_names() -> frozenset[str]:
    """The class names of every pydantic model loaded: the labels of union members in a path."""
    found: set[str] = set()
    stack = [BaseModel]
    while stack:
        for cls in stack.pop().__subclasses__():
            found.add(cls.__name__)
            stack.append(cls)
    return frozenset(found)


def _not_a_field(part: str | int, *, last: bool) -> bool:
    if not isinstance(part, str):
        return False
    if part.startswith(TAG):  # our own tags of union members
        return True
    # The last part is what the error is about (an unknown field, a dict key): a caller's name.
    return not last and (part in _model_names() or _TYPE_LABEL.fullmatch(part) is not None)


def _check_version_rules(body: MessagesBody, raw: dict[str, Any], version: str) -> None:
    if version != "2026-10-21":
        return
    for name in REMOVED_IN_2026:
        if name in raw:
            raise InvalidRequestError(f"{name}: Extra inputs are not permitted")
    for i, message in enumerate(body.messages):
        if isinstance(message.content, str):
            continue
        for j, block in enumerate(message.content):
            if message.role == "assistant" and block.type == "document":
                raise InvalidRequestError(
                    f"messages.{i}.content.{j}: document blocks are not allowed in assistant messages"
                )
            if message.role == "user" and block.type == "text" and getattr(block, "citations", None):
                raise InvalidRequestError(f"messages.{i}.content.{j}.citations: not allowed in user messages")


def _undecodable(payload: bytes | str) -> str | None:
    """Where a body stops being UTF-8: orjson says "surrogates not allowed" at char 0 for any bad byte."""
    if isinstance(payload, str):
        return None
    try:
        payload.decode("utf-8")
    except UnicodeDecodeError as exc:
        return f"it is not UTF-8 (byte 0x{payload[exc.start]:02x} at offset {exc.start}); send JSON in UTF-8"
    return None


def _json_type(value: Any) -> str:
    return {list: "an array", str: "a string", int: "a number", float: "a number", bool: "a boolean"}.get(
        type(value), "null"
    )


def check_model_limits(model: ModelEntry, max_tokens: int, input_tokens: int, name: str) -> None:
    if max_tokens > model.max_tokens:
        raise InvalidRequestError(
            f"max_tokens: {max_tokens} > {model.max_tokens}, which is the maximum allowed number of output "
            f"tokens for {name}"
        )
    if input_tokens + max_tokens > model.max_input_tokens:
        raise InvalidRequestError(
            f"prompt is too long: {input_tokens} tokens + max_tokens {max_tokens} > {model.max_input_tokens} "
            "maximum"
        )


def check_tool_choice(parsed: MessagesRequest) -> None:
    choice = parsed.body.tool_choice
    if choice is None or choice.type in ("auto", "none"):
        return
    names = [tool.name for tool in parsed.body.tools or ()]
    if not names:
        raise InvalidRequestError(f"tool_choice: type '{choice.type}' requires `tools` to be set")
    if choice.type == "tool" and choice.name not in names:
        raise InvalidRequestError(f"tool_choice.name: tool '{choice.name}' is not one of the request's tools")
