"""What a reply costs: per-model rates, the fast-mode multiplier, cache and batch modifiers."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from mockserver.settings import ModelEntry, Price, PricingSettings

MTOK = 1_000_000


def price_for(model: ModelEntry, pricing: PricingSettings) -> Price | None:
    return pricing.models.get(model.id) or (pricing.models.get(model.line) if model.line else None)


def cost_usd(usage: Mapping[str, Any], model: ModelEntry, pricing: PricingSettings) -> float | None:
    """USD for one reply's `usage` (as the API reports it), or None when the model has no price."""
    price = price_for(model, pricing)
    if price is None:
        return None
    creation = usage.get("cache_creation") or {}
    write_5m = creation.get("ephemeral_5m_input_tokens", 0)
    write_1h = creation.get("ephemeral_1h_input_tokens", 0)
    # Creation tokens not broken down by TTL are billed at the 5-minute rate.
    write_5m += max(0, usage.get("cache_creation_input_tokens", 0) - write_5m - write_1h)
    input_cost = price.input_per_mtok * (
        usage.get("input_tokens", 0)
        + write_5m * pricing.cache_write_5m_multiplier
        + write_1h * pricing.cache_write_1h_multiplier
        + usage.get("cache_read_input_tokens", 0) * pricing.cache_read_multiplier
    )
    total = (input_cost + price.output_per_mtok * usage.get("output_tokens", 0)) / MTOK
    # Fast mode is priced as a multiple of standard across the whole context window and stacks
    # with the cache modifiers above (the seed); batches are half price and never fast.
    if usage.get("speed") == "fast":
        total *= pricing.fast_multiplier
    if usage.get("service_tier") == "batch":
        total *= pricing.batch_multiplier
    return total
