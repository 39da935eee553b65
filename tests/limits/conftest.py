from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from mockserver.clock import Clock
from mockserver.limits import BucketStore, MemoryBucketStore, RedisBucketStore
from tests.support.redis_server import RedisServer, redis_server_fixture, unique_key_prefix

redis_server = redis_server_fixture(scope="session")


@pytest.fixture
def runner() -> Iterator[asyncio.Runner]:
    with asyncio.Runner() as r:
        yield r


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    return redis_server.url


class StoreMaker:
    """Builds stores of one kind; stores built with the same `prefix` share buckets (the memory kind,
    which has no prefixes, returns the same instance for the same prefix)."""

    def __init__(self, kind: str, redis_url: str) -> None:
        self.kind = kind
        self._url = redis_url
        self._base = unique_key_prefix()
        self.made: list[BucketStore] = []
        self._memory: dict[str, MemoryBucketStore] = {}

    def __call__(
        self,
        prefix: str = "a:",
        *,
        clock: Clock | None = None,
        use_server_time: bool = True,
        expiry_margin: float = 60.0,
    ) -> BucketStore:
        if self.kind == "memory":
            if prefix not in self._memory:
                self._memory[prefix] = MemoryBucketStore(clock=clock)
                self.made.append(self._memory[prefix])
            return self._memory[prefix]
        store = RedisBucketStore(
            self._url,
            key_prefix=self._base + prefix,
            clock=clock,
            use_server_time=use_server_time,
            expiry_margin=expiry_margin,
        )
        self.made.append(store)
        return store


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.redis)])
def make_store(request: pytest.FixtureRequest, runner: asyncio.Runner) -> Iterator[StoreMaker]:
    url = request.getfixturevalue("redis_url") if request.param == "redis" else ""
    maker = StoreMaker(request.param, url)
    yield maker
    for store in maker.made:
        runner.run(store.close())
