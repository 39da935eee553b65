"""Rate-limit admission for one request: charge its organisation up front, settle at the end.

Input tokens are charged when a request is admitted; output tokens are reserved from `max_tokens`
and corrected to what was really produced when the reply ends (reference §10.1), including a
stream whose client went away.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from mockserver.errors import RateLimitError, ServiceUnavailableError, StoreUnavailable
from mockserver.limits.bucket import Draw
from mockserver.limits.policy import (
    Headers,
    bucket_plan,
    header_dict,
    limit_name,
    rejection_message,
    retry_after_header,
)
from mockserver.organizations import Organization
from mockserver.runtime import ServerState

Speed = Literal["standard", "fast"]


@dataclass(slots=True)
class Ticket:
    """An admitted request's reservation; `settle` it exactly once."""

    raw_headers: Headers  # the rate-limit headers of its response, as they go on the wire
    output: Draw | None = None
    reserved_output: int = 0
    settled: bool = field(default=False)

    @property
    def headers(self) -> dict[str, str]:
        return header_dict(self.raw_headers)


async def admit(
    state: ServerState,
    org: Organization,
    speed: Speed,
    model_class: str,
    *,
    input_tokens: int,
    max_tokens: int,
    output_tokens: int | None = None,
) -> Ticket:
    """Charge the request's buckets or raise the 429 the real API would send.

    With `output_tokens` (a reply that is complete before its response starts) the request is
    admitted on `max_tokens` but charged its output in the same store call, and its ticket comes
    back settled: one store round trip instead of two.
    """
    if not state.runtime.settings.limits.enabled:
        return Ticket(raw_headers=[])
    plan = bucket_plan(org.name, speed, model_class, org.limits)
    draws = plan.draws(input_tokens, max_tokens, output_tokens)
    now = state.limiter_now()
    try:
        admission = await state.buckets.acquire(draws, now)
    except StoreUnavailable as exc:
        raise ServiceUnavailableError(f"rate limiter unavailable: {exc}") from None
    levels = admission.levels  # made for this call by the store: ours to change
    if admission.admitted and draws[-1].refund:
        # The headers report the level with max_tokens reserved, as for a reply still being
        # generated: what the buckets looked like when the request was admitted.
        output = draws[-1]
        levels[output.key] -= output.refund
    raw_headers = plan.headers(levels, state.clock.now() if now is None else now)
    if admission.admitted:
        # The plan puts the output bucket last, charged max_tokens: that is the reservation.
        return Ticket(
            raw_headers, output=draws[-1], reserved_output=max_tokens, settled=output_tokens is not None
        )
    headers = header_dict(raw_headers)
    limiting = admission.limiting or draws[0].key
    draw = next(d for d in draws if d.key == limiting)
    message = rejection_message(limiting, draw.capacity, admission.never_fits, draw.cost)
    if admission.never_fits:
        # Waiting would not help, so no retry-after; and the SDK must not retry either.
        raise RateLimitError(
            message, headers={**headers, "x-should-retry": "false"}, limit=limit_name(limiting)
        )
    retry = {"retry-after": retry_after_header(admission.retry_after), "x-should-retry": "true"}
    raise RateLimitError(message, headers={**headers, **retry}, limit=limit_name(limiting))


async def current_headers(
    state: ServerState, org: Organization, speed: Speed, model_class: str
) -> dict[str, str]:
    """The rate-limit headers of a response that charges nothing: the caller's buckets as they
    stand. For an error sent before admission (an injected 429), which a real 429 would carry."""
    if not state.runtime.settings.limits.enabled:
        return {}
    plan = bucket_plan(org.name, speed, model_class, org.limits)
    now = state.limiter_now()
    try:
        levels = await state.buckets.levels(plan.draws(0, 0), now)
    except StoreUnavailable:
        # The injected error is what was asked for; it goes out without the headers it cannot know.
        return {}
    return header_dict(plan.headers(levels, state.clock.now() if now is None else now))


async def settle(state: ServerState, ticket: Ticket, output_tokens: int) -> None:
    """Give back the part of the `max_tokens` reservation the reply did not use."""
    if ticket.settled or ticket.output is None:
        return
    ticket.settled = True
    unused = ticket.reserved_output - output_tokens
    if unused == 0:
        return
    draw = ticket.output
    try:
        await state.buckets.adjust(draw.key, draw.capacity, draw.rate, unused, state.limiter_now())
    except StoreUnavailable:
        # The reservation stays charged: over-counting for a minute beats failing a finished reply.
        return
