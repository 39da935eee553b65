"""Shared server state other than rate-limit buckets: journal, batches, cache entries, faults, settings.

Everything a replica must see from the others lives behind `StateStore`, a small document store of
JSON values, so `memory://` (one process) and `redis://` (many workers or replicas) behave alike.
"""

from mockserver.state.base import StateStore, state_store_from_uri

__all__ = ["StateStore", "state_store_from_uri"]
