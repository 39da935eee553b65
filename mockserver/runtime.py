"""Everything a request needs, derived once from `Settings` and swapped whole when settings change.

Handlers read `state.runtime` once at the start of a request, so a settings change (admin API)
never shows a request half old and half new values.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
import tomllib
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

from mockserver.cache import PromptCache
from mockserver.canned import CannedReplies
from mockserver.catalog import Catalog
from mockserver.chaos import FaultBook
from mockserver.clock import Clock, SystemClock
from mockserver.errors import StoreUnavailable
from mockserver.faults import Fault
from mockserver.journal import Journal
from mockserver.limits.store import BucketStore, bucket_store_from_uri
from mockserver.metrics import Metrics
from mockserver.organizations import Organization, organization_for
from mockserver.replies import Planner
from mockserver.settings import Settings
from mockserver.state import StateStore, state_store_from_uri
from mockserver.usage import UsageLedger
from mockserver.validation import accepted_api_keys

log = logging.getLogger("mockserver")


@dataclass(frozen=True)
class Runtime:
    settings: Settings
    catalog: Catalog
    planner: Planner
    known_betas: frozenset[str] | None  # None: any beta name is accepted
    api_keys: frozenset[str] | None  # None: any key is accepted
    _organizations: dict[str, Organization] = field(default_factory=dict, compare=False, repr=False)

    def organization(self, api_key: str) -> Organization:
        """The organisation of `api_key` under these settings (remembered: settings never change)."""
        org = self._organizations.get(api_key)
        if org is None:
            if len(self._organizations) >= _MAX_REMEMBERED_KEYS:
                self._organizations.clear()
            org = self._organizations[api_key] = organization_for(api_key, self.settings)
        return org

    @classmethod
    def from_settings(cls, settings: Settings) -> Runtime:
        known = None
        if settings.betas.reject_unknown:
            known = default_betas() | frozenset(settings.betas.extra)
        return cls(
            settings=settings,
            catalog=Catalog.from_settings(settings),
            planner=Planner(seed=settings.seed, canned=CannedReplies.load(settings.replies)),
            known_betas=known,
            api_keys=accepted_api_keys(settings),
        )


class ServerState:
    """The mutable part of a running server: the current runtime, the stores, the injected clock."""

    def __init__(
        self,
        runtime: Runtime,
        *,
        clock: Clock | None = None,
        store: StateStore | None = None,
        buckets: BucketStore | None = None,
    ) -> None:
        self.boot_settings = runtime.settings
        self.runtime = runtime
        self.clock: Clock = clock or SystemClock()
        storage, prefix = runtime.settings.storage, runtime.settings.key_prefix
        self.store = store or state_store_from_uri(storage, clock=self.clock, key_prefix=prefix)
        self.buckets = buckets or bucket_store_from_uri(storage, clock=self.clock, key_prefix=prefix)
        self.journal = Journal(self.store)
        self.cache = PromptCache(self.store)
        self.usage = UsageLedger(self.store)
        self.faults = FaultBook(self.store)
        self.metrics = Metrics()
        self.server_errors: list[BaseException] = []  # unexpected exceptions, for embedding tests
        self.created_faults: list[Fault] = []  # faults added through the admin API
        self._generation: str | None = None  # of the admin changes that `runtime` reflects
        # On a shared store the generation is re-read in the background about this often, instead of
        # a Redis round trip per request; admin writes wait as long before answering, so a change is
        # seen by every worker once its response is back (see `sync`). A memory store has no other
        # writer to watch.
        self.shared = not storage.startswith("memory:")
        self.sync_interval = _SHARED_SYNC_INTERVAL if self.shared else 0.0
        self._fresh_until = 0.0  # a completed read that started at t is trusted until t + sync_interval
        # From then on a request starts the next read ahead of need (half an interval early).
        self.refresh_due = 0.0
        self._changing: asyncio.Lock | None = None  # one read or admin change of this worker at a time
        self._changing_loop: asyncio.AbstractEventLoop | None = None
        self._refresh: asyncio.Task[None] | None = None  # the generation read in flight, if any

    def limiter_now(self) -> float | None:
        # In production the Redis store reads the Redis server's clock so replicas agree;
        # an injected (fake) clock must drive the buckets instead.
        return None if isinstance(self.clock, SystemClock) else self.clock.now()

    async def patch_settings(self, patch: Mapping[str, Any]) -> Settings:
        """Validate a partial update against the current settings and publish it to every worker."""
        async with self._exclusive():
            await self._read_generation()
            # Raises ConfigError, and then nothing has changed.
            settings = self.runtime.settings.with_layer(patch, "admin API")
            await self.store.put(_PATCHES_KEY, [*(await self.store.get(_PATCHES_KEY) or []), dict(patch)])
            self.runtime = Runtime.from_settings(settings)
            await self._publish()
        await self._let_workers_see_it()
        return settings

    async def add_fault(self, fault: Fault) -> None:
        async with self._exclusive():
            await self._read_generation()
            await self.faults.add(fault, list(self.runtime.settings.faults))
            self.created_faults = await self.faults.created()
            await self._publish()
        await self._let_workers_see_it()

    async def delete_fault(self, name: str) -> bool:
        async with self._exclusive():
            deleted = await self.faults.delete(name)
            self.created_faults = await self.faults.created()
            await self._publish()
        await self._let_workers_see_it()
        return deleted

    async def reset(self) -> None:
        async with self._exclusive():
            await self.buckets.reset()
            await self.store.clear()
            self.runtime = Runtime.from_settings(self.boot_settings)
            self.created_faults = []
            await self._publish()
        await self._let_workers_see_it()

    def needs_sync(self) -> bool:
        """Whether `sync` has anything to do; checked without a coroutine by every request, because
        under load nearly all of them find the last read fresh and no new one due."""
        return self.shared and time.monotonic() >= self.refresh_due

    async def sync(self) -> None:
        """Pick up what another worker changed (settings patches, faults, a reset) since we last looked.

        On a shared store the generation token that every admin change replaces is read at most about
        every `sync_interval`, ahead of need, by a background refresh. A request that arrives at t may
        run on what a completed read saw if that read started after t - sync_interval: every change
        answered before t was published before that read began, since admin writes wait
        `sync_interval` before answering. Otherwise it waits for a read that qualifies.
        """
        if not self.shared:
            return  # nobody else writes a memory store
        arrived = time.monotonic()
        for _ in range(2):  # a read started after we arrived always qualifies, unless it failed
            if arrived >= self.refresh_due:
                self._refresh_soon()  # so that requests seldom have to wait for one
            if arrived < self._fresh_until:
                return
            assert self._refresh is not None
            await asyncio.shield(self._refresh)

    def _refresh_soon(self) -> None:
        loop = asyncio.get_running_loop()
        if self._refresh is None or self._refresh.done() or self._refresh.get_loop() is not loop:
            self._refresh = loop.create_task(self._refresh_generation())

    async def _refresh_generation(self) -> None:
        try:
            async with self._exclusive():
                await self._read_generation()
        except StoreUnavailable as exc:  # requests go on with what they have; the next one tries again
            log.warning("settings not synchronised: %s", exc)

    async def _read_generation(self) -> None:
        started = time.monotonic()
        generation = await self.store.get(_GENERATION_KEY)
        if generation != self._generation:
            settings = self.boot_settings
            for patch in await self.store.get(_PATCHES_KEY) or []:
                settings = settings.with_layer(patch, "admin API")
            self.runtime = Runtime.from_settings(settings)
            self.created_faults = await self.faults.created()
            self._generation = generation
        self._fresh_until = started + self.sync_interval
        self.refresh_due = self._fresh_until - self.sync_interval / 2

    def _exclusive(self) -> asyncio.Lock:
        # Reads and changes of the generation must not interleave: a read that began before this
        # worker's own change could otherwise finish after it and put the old runtime back.
        loop = asyncio.get_running_loop()
        if self._changing is None or self._changing_loop is not loop:
            # A lock belongs to one event loop (a test may run a server's state on several in turn).
            self._changing, self._changing_loop = asyncio.Lock(), loop
        return self._changing

    async def _publish(self) -> None:
        self._generation = uuid.uuid4().hex
        await self.store.put(_GENERATION_KEY, self._generation)

    async def _let_workers_see_it(self) -> None:
        if self.sync_interval:
            # Real time, whatever clock the server runs on: it bounds other workers' real caching.
            await asyncio.sleep(self.sync_interval)

    async def close(self) -> None:
        await self.buckets.close()
        await self.store.close()


_MAX_REMEMBERED_KEYS = 4096
_SHARED_SYNC_INTERVAL = 0.01
_PATCHES_KEY = "settings:patches"
_GENERATION_KEY = "admin:generation"


@functools.cache
def default_betas() -> frozenset[str]:
    raw = resources.files("mockserver.defaults").joinpath("betas.toml").read_text()
    return frozenset(tomllib.loads(raw)["known"])
