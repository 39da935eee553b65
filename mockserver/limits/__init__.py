"""Rate limiting: continuous token buckets (pure math), stores that hold them, and the policy that
maps a request to buckets and headers. Nothing here imports `redis` until a Redis store is built."""

from mockserver.limits.bucket import (
    Admission,
    BucketState,
    Draw,
    adjust,
    decide,
    level_at,
    seconds_until_full,
)
from mockserver.limits.memory import MemoryBucketStore
from mockserver.limits.policy import (
    LimitTable,
    Speed,
    draws_for,
    limit_name,
    output_draw,
    rate_limit_headers,
    rejection_message,
    retry_after_header,
)
from mockserver.limits.redis import RedisBucketStore
from mockserver.limits.store import BucketStore, InvalidStoreURI, StoreUnavailable, bucket_store_from_uri

__all__ = [
    "Admission",
    "BucketState",
    "BucketStore",
    "Draw",
    "InvalidStoreURI",
    "LimitTable",
    "MemoryBucketStore",
    "RedisBucketStore",
    "Speed",
    "StoreUnavailable",
    "adjust",
    "bucket_store_from_uri",
    "decide",
    "draws_for",
    "level_at",
    "limit_name",
    "output_draw",
    "rate_limit_headers",
    "rejection_message",
    "retry_after_header",
    "seconds_until_full",
]
