"""Everything a request needs, derived once from `Settings` and swapped whole when settings change.

Handlers read `state.runtime` once at the start of a request, so a settings change (admin API)
never shows a request half old and half new values.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import threading
import time
import tomllib
import uuid
from collections import deque
from collections.abc import Mapping, Sequence
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
from mockserver.redis_client import REQUEST_STORE_WAIT, RequestWaitSpent, not_a_request, within_request_wait
from mockserver.replies import Planner
from mockserver.scripted import ScriptBook
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
    def from_settings(cls, settings: Settings, *, canned: CannedReplies | None = None) -> Runtime:
        """Raises ConfigError if a `replies` file cannot be read; `canned`: replies already read
        for `settings.replies` (then no file is read, and nothing can fail)."""
        known = None
        if settings.betas.reject_unknown:
            known = default_betas() | frozenset(settings.betas.extra)
        if canned is None:
            canned = CannedReplies.load(settings.replies)
        return cls(
            settings=settings,
            catalog=Catalog.from_settings(settings),
            planner=Planner(seed=settings.seed, canned=canned),
            known_betas=known,
            api_keys=accepted_api_keys(settings),
        )

    def patched(self, patch: Mapping[str, Any]) -> Runtime:
        """This runtime with one admin patch on top, checked whole: raises ConfigError if the patch
        does not validate or its `replies` cannot be read. A patch that names `replies` reads them
        again (so re-sending it picks up edited files); any other keeps the replies already read.
        Reads files: call it off the event loop."""
        settings = self.settings.with_layer(patch, "admin API")
        return Runtime.from_settings(settings, canned=None if "replies" in patch else self.planner.canned)


def runtime_with_patches(boot: Runtime, patches: Sequence[Any]) -> Runtime:
    """`boot` with the stored admin patches on top, in order. One that does not load (its replies
    file is gone or unreadable on this host, a version stored by an older mockserver, a conflict
    with a patch from another worker) is skipped with a warning naming it, and the rest still
    apply: a worker never stops serving over a stored patch. Reads files: call it off the loop."""
    runtime = boot
    for number, patch in enumerate(patches, 1):
        try:
            runtime = runtime.patched(patch)
        except Exception as exc:  # ConfigError above all, but nothing stored may take a worker down
            log.warning("settings patch %d of %d %s skipped: %s", number, len(patches), _shown(patch), exc)
    return runtime


def _shown(patch: Any) -> str:
    text = repr(patch)
    return text if len(text) <= 200 else text[:200] + "..."


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
        self.boot_runtime = runtime  # what a reset goes back to, and patches apply to, without reading files
        self.runtime = runtime
        self.clock: Clock = clock or SystemClock()
        storage, prefix = runtime.settings.storage, runtime.settings.key_prefix
        self.store = store or state_store_from_uri(storage, clock=self.clock, key_prefix=prefix)
        self.buckets = buckets or bucket_store_from_uri(storage, clock=self.clock, key_prefix=prefix)
        self.journal = Journal(self.store)
        self.cache = PromptCache(self.store)
        self.usage = UsageLedger(self.store)
        self.faults = FaultBook(self.store)
        self.script = ScriptBook()  # this worker's copy of the scripted replies (scripted.py)
        self.metrics = Metrics()
        # Unexpected exceptions, for embedding tests (`RunningServer.take_errors`): the newest few
        # and how many there were, noted on the server's thread and read from the test's.
        self._server_errors: deque[BaseException] = deque(maxlen=_KEPT_SERVER_ERRORS)
        self._server_error_count = 0
        self._server_errors_lock = threading.Lock()
        self.created_faults: list[Fault] = []  # faults added through the admin API
        self._generation: str | None = None  # of the admin changes that `runtime` reflects
        # What this worker last saw of the admin changes and of the scripted replies (which change
        # under a token of their own): the script is read again when this changes.
        self.script_version: tuple[str | None, str | None] = (None, None)
        self._patch_count = 0  # of the stored patches that `runtime` reflects
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

    def note_server_error(self, exc: BaseException) -> None:
        with self._server_errors_lock:
            self._server_errors.append(exc)
            self._server_error_count += 1

    @property
    def server_errors(self) -> list[BaseException]:
        """The newest unexpected exceptions (at most 100)."""
        with self._server_errors_lock:
            return list(self._server_errors)

    def server_errors_after(self, seen: int) -> tuple[list[BaseException], int]:
        """The exceptions noted after the first `seen` (those still kept), and how many there were."""
        with self._server_errors_lock:
            kept, count = list(self._server_errors), self._server_error_count
        new = max(0, min(count - seen, len(kept)))
        return kept[len(kept) - new :], count

    def limiter_now(self) -> float | None:
        # In production the Redis store reads the Redis server's clock so replicas agree;
        # an injected (fake) clock must drive the buckets instead.
        return None if isinstance(self.clock, SystemClock) else self.clock.now()

    async def patch_settings(self, patch: Mapping[str, Any]) -> Settings:
        """Validate a partial update against the current settings and publish it to every worker."""
        async with self._exclusive():
            await self._read_generation()
            # Checked whole (replies files read) before anything is stored: a ConfigError leaves
            # every worker as it was.
            runtime = await asyncio.to_thread(self.runtime.patched, patch)
            # Appended in one store operation, so patches sent to two workers at once both land.
            dropped = await self.store.append(_PATCHES_KEY, dict(patch), max_len=_MAX_PATCHES)
            if dropped:
                log.warning("the oldest settings patch was dropped: %d are kept until a reset", _MAX_PATCHES)
            patches = await self.store.items(_PATCHES_KEY)
            if dropped or len(patches) != self._patch_count + 1:  # another worker's landed meanwhile
                runtime = await asyncio.to_thread(runtime_with_patches, self.boot_runtime, patches)
            self.runtime, self._patch_count = runtime, len(patches)
            await self._publish()
        await self._let_workers_see_it()
        return self.runtime.settings

    async def announce_script_change(self) -> None:
        """Publish a change of the scripted replies to every worker, by the time this returns. Under a
        token of its own: a worker that sees only it reads the script again (`script_version`), and
        keeps its runtime."""
        async with self._exclusive():
            token = uuid.uuid4().hex
            await self.store.put(_SCRIPT_GENERATION_KEY, token)
            self.script_version = (self._generation, token)
        await self._let_workers_see_it()

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
            self.runtime, self._patch_count = self.boot_runtime, 0
            self.created_faults = []
            self.script_version = (None, None)  # its token went with the rest of the store
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
            refresh = self._refresh
            assert refresh is not None
            try:
                # The read's store calls time out on their own after REQUEST_STORE_WAIT (the Redis
                # stores' timeout): a timer of the request's own is needed only for what is left.
                read = functools.partial(asyncio.shield, refresh)
                await within_request_wait(read, bounded_by=REQUEST_STORE_WAIT)
            except RequestWaitSpent:
                return  # go on with what we have, as after a failed read; later store calls fail fast

    def _refresh_soon(self) -> None:
        loop = asyncio.get_running_loop()
        if self._refresh is None or self._refresh.done() or self._refresh.get_loop() is not loop:
            self._refresh = loop.create_task(self._refresh_generation())

    async def _refresh_generation(self) -> None:
        not_a_request()  # a read for every request that waits on it, bounded by the client's timeout
        try:
            async with self._exclusive():
                await self._read_generation()
        except StoreUnavailable as exc:  # requests go on with what they have; the next one tries again
            log.warning("settings not synchronised: %s", exc)

    async def _read_generation(self) -> None:
        started = time.monotonic()
        # One round trip for both: a script change alone leaves the runtime as it is.
        generation, script = await self.store.get_many([_GENERATION_KEY, _SCRIPT_GENERATION_KEY])
        if generation != self._generation:
            patches = await self.store.items(_PATCHES_KEY)
            self.runtime = await asyncio.to_thread(runtime_with_patches, self.boot_runtime, patches)
            self._patch_count = len(patches)
            self.created_faults = await self.faults.created()
            self._generation = generation
        self.script_version = (generation, script)
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
        # A reset, or a change of settings or faults: the script is read again as well.
        self.script_version = (self._generation, self.script_version[1])

    async def _let_workers_see_it(self) -> None:
        if self.sync_interval:
            # Real time, whatever clock the server runs on: it bounds other workers' real caching.
            await asyncio.sleep(self.sync_interval)

    async def close(self) -> None:
        await self.buckets.close()
        await self.store.close()


_MAX_REMEMBERED_KEYS = 4096
_KEPT_SERVER_ERRORS = 100
_SHARED_SYNC_INTERVAL = 0.01
# A list, appended atomically (the JSON document under "settings:patches" of earlier versions is
# ignored). Every worker applies all of them on each admin change: a bound keeps that quick.
_PATCHES_KEY = "settings:patch-list"
_MAX_PATCHES = 1000
_GENERATION_KEY = "admin:generation"
_SCRIPT_GENERATION_KEY = "admin:script-generation"


@functools.cache
def default_betas() -> frozenset[str]:
    raw = resources.files("mockserver.defaults").joinpath("betas.toml").read_text()
    return frozenset(tomllib.loads(raw)["known"])
