"""The Message Batches lifecycle: validate a batch, keep it in the `StateStore`, read its state off the clock.

Nothing runs in the background. A batch is stored once, with the moments that decide its fate
(created, how long processing takes, when a cancel was asked for), and every read computes where it
stands at `clock.now()`: a fake clock drives it in tests, and any replica answers for any batch.
Each request's outcome is drawn from the server seed and its `custom_id`, and results are planned on
demand from the stored params, so they read the same every time and on every replica.

Checks split the way the real API splits them: the shape of each request (and what a batch cannot
do: fast mode, streaming, `max_tokens: 0`) is refused at create time with a 400 naming the request;
what needs the model catalog (unknown model, limits, `tool_choice`) or the value generator (a tool
or output schema the mock finds no value for) happens "during processing" and ends that request
`errored`, as the API validates params asynchronously.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Container, Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from typing import Annotated, Any, Literal
from urllib.parse import quote

import orjson
from pydantic import BaseModel, ConfigDict, Field

from mockserver.catalog import Catalog
from mockserver.errors import APIError, InvalidRequestError, NotFoundError, error_body
from mockserver.fallbacks import check_fallbacks
from mockserver.fastmode import route
from mockserver.ids import batch_id as new_batch_id
from mockserver.ids import derived_id
from mockserver.replies import Planner, check_answerable
from mockserver.schema import MAX_JSON_NESTING
from mockserver.settings import Settings
from mockserver.state import StateStore
from mockserver.tokens import count_input
from mockserver.validation import (
    Caller,
    MessagesRequest,
    check_model_limits,
    check_tool_choice,
    parse_json,
    parse_messages_request,
    validate_body,
)

log = logging.getLogger("mockserver")

Outcome = Literal["succeeded", "errored", "expired", "canceled"]
OUTCOMES: tuple[Outcome, ...] = ("succeeded", "errored", "expired", "canceled")
Status = Literal["in_progress", "canceling", "ended"]

DAY = 86_400.0
EXPIRES_AFTER = DAY  # a batch that has not ended 24 h after creation ends; unfinished requests expire
RESULTS_KEPT = 29 * DAY  # results are archived (gone) this long after the batch ended
# Params are only needed until the results are archived; the small batch record itself stays.
PARAMS_TTL = EXPIRES_AFTER + RESULTS_KEPT + DAY
SEQUENCE_KEY = "batch-sequence"  # creation order shared by replicas (their wall clocks may disagree)
SIMULATED_ERROR = {"type": "api_error", "message": "Internal server error"}
_FIELD_MESSAGE = re.compile(r"^([A-Za-z_][\w.]*): (.*)$", re.DOTALL)


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)
    custom_id: Annotated[str, Field(pattern=r"^[a-zA-Z0-9_-]{1,64}$")]
    params: dict[str, Any]


class _CreateBody(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)
    requests: Annotated[list[_Request], Field(min_length=1)]


@dataclass(frozen=True, slots=True)
class NewBatch:
    """A create request that passed validation: what gets stored."""

    requests: list[tuple[str, dict[str, Any]]]  # (custom_id, params) in request order
    invalid: dict[str, dict[str, str]]  # custom_id → error object, for requests that will end `errored`


@dataclass(frozen=True, slots=True)
class Batch:
    """The stored record of one batch: small, and enough to say where it stands at any moment."""

    id: str
    sequence: int
    created_at: float
    processing: float  # seconds from creation until every request has finished
    size: int
    seed: int
    weights: tuple[float, float, float, float]  # in OUTCOMES order
    counts: dict[str, int]  # outcome per bucket once ended; shown only after the batch ends
    cancel_at: float | None = None
    cancel_ends_at: float | None = None

    @property
    def expires_at(self) -> float:
        return self.created_at + EXPIRES_AFTER

    @property
    def ended_at(self) -> float:
        ends = [self.created_at + self.processing, self.expires_at]
        if self.cancel_ends_at is not None:
            ends.append(self.cancel_ends_at)
        return min(ends)

    @property
    def cut_short_as(self) -> Outcome:
        """What a request still unfinished when the batch ended became."""
        canceled = self.cancel_ends_at is not None and self.cancel_ends_at <= self.expires_at
        return "canceled" if canceled else "expired"

    def status(self, now: float) -> Status:
        if now >= self.ended_at:
            return "ended"
        return "in_progress" if self.cancel_at is None else "canceling"

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Batch:
        return cls(**{**data, "weights": tuple(data["weights"])})


# -- validation (pure) --------------------------------------------------------------------------


def parse_batch(payload: bytes, caller: Caller, catalog: Catalog, *, max_requests: int) -> NewBatch:
    raw = parse_json(payload)
    requests = raw.get("requests")
    # Counted before anything else so an oversized batch costs no per-request work.
    if isinstance(requests, list) and len(requests) > max_requests:
        raise InvalidRequestError(
            f"requests: List should have at most {max_requests} items after validation, not {len(requests)}"
        )
    body = validate_body(_CreateBody, raw)
    first_use: dict[str, int] = {}
    for index, item in enumerate(body.requests):
        if item.custom_id in first_use:
            raise InvalidRequestError(
                f"requests.{index}.custom_id: duplicate custom_id '{item.custom_id}' (also used by "
                f"requests.{first_use[item.custom_id]}); custom_id must be unique within a Message Batch"
            )
        first_use[item.custom_id] = index
    stored: list[tuple[str, dict[str, Any]]] = []
    invalid: dict[str, dict[str, str]] = {}
    for index, item in enumerate(body.requests):
        parsed = _parse_params(index, item.custom_id, item.params, caller)
        error = _processing_error(parsed, catalog)
        if error is not None:
            invalid[item.custom_id] = error
        stored.append((item.custom_id, parsed.raw))
    return NewBatch(stored, invalid)


def _parse_params(index: int, custom_id: str, params: dict[str, Any], caller: Caller) -> MessagesRequest:
    where = f"requests.{index}.params"
    try:
        payload = orjson.dumps(params)
    except orjson.JSONEncodeError:  # deeper than orjson writes (254 levels); /v1/messages says why
        raise InvalidRequestError(
            f"{where}: JSON nested more than {MAX_JSON_NESTING} levels deep is not supported "
            f"(custom_id '{custom_id}')"
        ) from None
    try:
        # The same parser as /v1/messages (schema, version rules), fed the request's own JSON.
        parsed = parse_messages_request(payload, caller)
    except InvalidRequestError as exc:
        found = _FIELD_MESSAGE.match(exc.message)
        detail = f"{where}.{found[1]}: {found[2]}" if found else f"{where}: {exc.message}"
        raise InvalidRequestError(f"{detail} (custom_id '{custom_id}')") from None
    body = parsed.body
    if body.speed == "fast":
        raise InvalidRequestError(
            f"{where}.speed: fast mode is not available with the Message Batches API (custom_id "
            f"'{custom_id}'); remove `speed` or send this request to /v1/messages"
        )
    if body.stream:
        raise InvalidRequestError(
            f"{where}.stream: streaming is not supported in a Message Batch (custom_id '{custom_id}'); "
            "remove `stream`"
        )
    if body.max_tokens < 1:
        raise InvalidRequestError(
            f"{where}.max_tokens: must be at least 1 in a Message Batch (custom_id '{custom_id}'); "
            "max_tokens: 0 (cache pre-warming) is not supported in batches"
        )
    return parsed


def _processing_error(parsed: MessagesRequest, catalog: Catalog) -> dict[str, str] | None:
    """The error this request meets when it is processed, as /v1/messages would answer it."""
    body, raw = parsed.body, parsed.raw
    try:
        chosen = route(catalog, body.model, body.speed, parsed.caller.betas)
        tokens = count_input(messages=raw["messages"], system=raw.get("system"), tools=raw.get("tools"))
        check_model_limits(chosen.model, body.max_tokens, tokens, body.model)
        check_tool_choice(parsed)
        if body.fallbacks is not None:  # as /v1/messages checks them
            check_fallbacks(body, parsed.caller.betas, chosen.model, catalog)
        check_answerable(raw)
    except APIError as exc:
        return {"type": exc.error_type, "message": exc.message}
    return None


# -- lifecycle (pure) ---------------------------------------------------------------------------


def draw(seed: int, purpose: str, custom_id: str) -> float:
    """A number in (0, 1] fixed by the seed, what it decides, and the request's custom_id."""
    digest = hashlib.sha256(f"{seed}\0{purpose}\0{custom_id}".encode()).digest()
    return (int.from_bytes(digest[:8], "big") + 1) / 2**64


def natural_outcome(seed: int, weights: tuple[float, ...], custom_id: str) -> Outcome:
    """The outcome a request reaches when nothing cuts the batch short."""
    point = draw(seed, "outcome", custom_id) * sum(weights)
    reached = 0.0
    chosen: Outcome = "succeeded"
    for outcome, weight in zip(OUTCOMES, weights, strict=True):
        if weight > 0:
            chosen, reached = outcome, reached + weight
            if point <= reached:
                break
    return chosen


def outcome_of(batch: Batch, custom_id: str, invalid: bool) -> Outcome:
    # Requests finish at seeded moments spread over the processing time; one still running when a
    # cancel or the 24 h expiry ends the batch is canceled or expired instead.
    finishes_at = batch.created_at + batch.processing * draw(batch.seed, "finish", custom_id)
    if finishes_at > batch.ended_at:
        return batch.cut_short_as
    return "errored" if invalid else natural_outcome(batch.seed, batch.weights, custom_id)


def final_counts(batch: Batch, custom_ids: Iterable[str], invalid: Container[str]) -> dict[str, int]:
    counts = dict.fromkeys(OUTCOMES, 0)
    for custom_id in custom_ids:
        counts[outcome_of(batch, custom_id, custom_id in invalid)] += 1
    return counts


def render(batch: Batch, now: float, results_url: str) -> dict[str, Any]:
    """The MessageBatch object as the API shows it at `now`."""
    ended = now >= batch.ended_at
    archived_at = batch.ended_at + RESULTS_KEPT
    counts = batch.counts if ended else dict.fromkeys(OUTCOMES, 0)
    return {
        "id": batch.id,
        "type": "message_batch",
        "processing_status": batch.status(now),
        "request_counts": {"processing": 0 if ended else batch.size, **counts},
        "created_at": rfc3339(batch.created_at),
        "expires_at": rfc3339(batch.expires_at),
        "ended_at": rfc3339(batch.ended_at) if ended else None,
        "cancel_initiated_at": None if batch.cancel_at is None else rfc3339(batch.cancel_at),
        "archived_at": rfc3339(archived_at) if ended and now >= archived_at else None,
        "results_url": results_url if ended else None,
    }


def rfc3339(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def result_lines(
    batch: Batch, params: Mapping[str, Any], catalog: Catalog, planner: Planner
) -> Iterator[bytes]:
    """The results file, one JSON line per request, planned from the stored params."""
    requests = orjson.loads(params["requests"])
    invalid: dict[str, dict[str, str]] = params["invalid"]
    planner = replace(planner, seed=batch.seed)  # the seed the batch was created under
    for custom_id, raw in requests:
        outcome = outcome_of(batch, custom_id, custom_id in invalid)
        if outcome == "succeeded":
            try:
                result = {"type": outcome, "message": _message(batch, custom_id, raw, catalog, planner)}
            except APIError as exc:  # what /v1/messages would have answered for this request
                result = {"type": "errored", "error": error_body(exc.error_type, exc.message, None)}
            except Exception:  # a request the planner cannot answer must not cost the whole file
                log.exception("batch %s: planning %r failed", batch.id, custom_id)
                result = {"type": "errored", "error": error_body("api_error", "Internal server error", None)}
        elif outcome == "errored":
            error = invalid.get(custom_id, SIMULATED_ERROR)
            result = {"type": outcome, "error": error_body(error["type"], error["message"], None)}
        else:
            result = {"type": outcome}
        yield orjson.dumps({"custom_id": custom_id, "result": result}) + b"\n"


def _message(
    batch: Batch, custom_id: str, raw: dict[str, Any], catalog: Catalog, planner: Planner
) -> dict[str, Any]:
    entry = catalog.resolve(raw["model"])
    model = raw["model"] if entry is None else entry.id
    tokens = count_input(messages=raw["messages"], system=raw.get("system"), tools=raw.get("tools"))
    reply = planner.plan(raw, model=model, speed="standard", input_tokens=tokens)
    return reply.with_usage(service_tier="batch").message(derived_id("msg_01", batch.id, custom_id))


# -- persistence ----------------------------------------------------------------------------------


def _batch_key(org: str, batch_id: str) -> str:
    # Quoted so that no organisation name can reach into another's key range (or a SCAN pattern).
    return f"batches:{quote(org, safe='')}:{batch_id}"


def _params_key(batch_id: str) -> str:
    return f"batch-params:{batch_id}"


async def create(store: StateStore, org: str, new: NewBatch, *, now: float, settings: Settings) -> Batch:
    config, scale = settings.batches, settings.timing.time_scale
    weights = (config.succeeded_weight, config.errored_weight, config.expired_weight, config.canceled_weight)
    batch = Batch(
        id=new_batch_id(),
        sequence=await store.incr(SEQUENCE_KEY),
        created_at=now,
        processing=config.processing_seconds / scale,
        size=len(new.requests),
        seed=settings.seed,
        weights=weights,
        counts={},
    )
    batch = replace(batch, counts=final_counts(batch, (cid for cid, _ in new.requests), new.invalid))
    # The params are kept as one JSON string: stored once, and copied cheaply by the memory store.
    params = {"requests": orjson.dumps(new.requests).decode(), "invalid": new.invalid}
    await store.put(_params_key(batch.id), params, ttl=PARAMS_TTL)
    await store.put(_batch_key(org, batch.id), batch.to_json())  # last: a batch is never seen half-written
    return batch


async def load(store: StateStore, org: str, batch_id: str) -> Batch:
    data = await store.get(_batch_key(org, batch_id))
    if data is None:
        raise NotFoundError(f"message_batch: {batch_id} not found")
    return Batch.from_json(data)


async def list_newest_first(store: StateStore, org: str) -> list[Batch]:
    keys = await store.keys(_batch_key(org, ""))
    found = [Batch.from_json(data) for data in await store.get_many(keys) if data is not None]
    return sorted(found, key=lambda batch: batch.sequence, reverse=True)


async def cancel(store: StateStore, org: str, batch_id: str, *, now: float, settings: Settings) -> Batch:
    batch = await load(store, org, batch_id)
    status = batch.status(now)
    if status == "canceling":
        return batch  # asking twice changes nothing
    if status == "ended":
        raise InvalidRequestError(f"message_batch {batch_id} has already ended and can no longer be canceled")
    params = await _params(store, batch_id)
    delay = settings.batches.cancel_seconds / settings.timing.time_scale
    batch = replace(batch, cancel_at=now, cancel_ends_at=now + delay)
    custom_ids = (custom_id for custom_id, _ in orjson.loads(params["requests"]))
    batch = replace(batch, counts=final_counts(batch, custom_ids, params["invalid"]))
    await store.put(_batch_key(org, batch_id), batch.to_json())
    return batch


async def delete(store: StateStore, org: str, batch_id: str, *, now: float) -> None:
    batch = await load(store, org, batch_id)
    if batch.status(now) != "ended":
        raise InvalidRequestError(
            f"message_batch {batch_id} is still {batch.status(now)}: a batch can be deleted only after "
            "processing has ended; cancel it first"
        )
    await store.delete(_batch_key(org, batch_id))
    await store.delete(_params_key(batch_id))


async def results_source(store: StateStore, org: str, batch_id: str, *, now: float) -> tuple[Batch, Any]:
    """The batch and its stored params, once its results may be read."""
    batch = await load(store, org, batch_id)
    status = batch.status(now)
    if status != "ended":
        raise InvalidRequestError(
            f"message_batch {batch_id} is still {status}: results are available once processing has ended"
        )
    if now >= batch.ended_at + RESULTS_KEPT:
        raise NotFoundError(f"the results of message_batch {batch_id} have been archived")
    return batch, await _params(store, batch_id)


async def _params(store: StateStore, batch_id: str) -> Any:
    params = await store.get(_params_key(batch_id))
    if params is None:
        # Only when the record outlived its params (a delete racing a cancel): nothing left to serve.
        raise NotFoundError(f"message_batch: {batch_id} not found")
    return params
