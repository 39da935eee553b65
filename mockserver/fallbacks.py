"""Server-side fallbacks (reference §4.1): the rules a request's `fallbacks` must pass beyond its shape.

`fallbacks` is `"default"` (the requested model's server-defined chain) or an array of entries, each
a model tried in order when the one before declines for policy reasons. The mock validates the chain
and serves the requested model: a chain only changes the reply when a model declines, and a canned
refusal is not handed over.
"""

from __future__ import annotations

from mockserver.catalog import Catalog
from mockserver.errors import APIError, InvalidRequestError
from mockserver.fastmode import route
from mockserver.schema import FallbackEntry, MessagesBody
from mockserver.settings import ModelEntry

FALLBACK_BETAS = ("server-side-fallback-2026-07-01", "server-side-fallback-2026-06-01")


def check_fallbacks(body: MessagesBody, betas: frozenset[str], model: ModelEntry, catalog: Catalog) -> None:
    """Raise the 400 the API sends for a `fallbacks` it refuses; call only when `fallbacks` is set."""
    if not betas.intersection(FALLBACK_BETAS):
        raise InvalidRequestError(
            f"fallbacks: requires the `anthropic-beta: {FALLBACK_BETAS[0]}` header; add that header or "
            "remove `fallbacks`"
        )
    if body.fallback_credit_token is not None:
        raise InvalidRequestError(
            "fallbacks: cannot be combined with `fallback_credit_token`; send one or the other"
        )
    if body.fallbacks == "default" or body.fallbacks is None:
        return  # on a model without fallbacks, "default" runs the requested model alone
    if not model.fallbacks:  # the catalog says which models take a chain of their own
        raise InvalidRequestError(
            f"fallbacks: model {body.model} does not support a list of fallback models; send "
            '`"default"` or remove `fallbacks`'
        )
    for index, entry in enumerate(body.fallbacks):
        _check_entry(f"fallbacks.{index}", entry, body.max_tokens, betas, catalog)


def _check_entry(
    where: str, entry: FallbackEntry, max_tokens: int, betas: frozenset[str], catalog: Catalog
) -> None:
    """An entry is validated as if the request were made to its model (the SDK's documentation), with
    the request's own values for what it does not override (`max_tokens`)."""
    target = catalog.resolve(entry.model)
    if target is None or target.lifecycle == "retired":
        raise InvalidRequestError(f"{where}.model: unknown model {entry.model!r}")
    try:
        route(catalog, entry.model, entry.speed, betas)
    except APIError as exc:  # its message starts with the field it names: "speed: ..."
        raise InvalidRequestError(f"{where}.{exc.message}") from None
    wanted = max_tokens if entry.max_tokens is None else entry.max_tokens
    if wanted > target.max_tokens:
        inherited = "" if entry.max_tokens is not None else " (the request's max_tokens, which it inherits)"
        raise InvalidRequestError(
            f"{where}.max_tokens: {wanted}{inherited} > {target.max_tokens}, which is the maximum allowed "
            f"number of output tokens for {entry.model}"
        )
