"""Workers sharing one Redis pick up each other's admin changes: read-your-writes across workers,
even though a worker re-reads the shared generation at most every `sync_interval`."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import anthropic
import pytest

from mockserver.admin_client import AdminClient, AdminError
from mockserver.runtime import Runtime, ServerState
from mockserver.server import MockServer
from tests.conftest import make_settings
from tests.support.redis_server import RedisServer, redis_server_fixture, unique_key_prefix

redis_server = redis_server_fixture(scope="module")
pytestmark = pytest.mark.redis


def worker(url: str, prefix: str) -> ServerState:
    return ServerState(Runtime.from_settings(make_settings(storage=url, key_prefix=prefix)))


def test_a_patch_is_seen_by_another_worker_that_synced_just_before(redis_server: RedisServer) -> None:
    async def go() -> None:
        prefix = unique_key_prefix()
        a, b = worker(redis_server.url, prefix), worker(redis_server.url, prefix)
        try:
            assert b.sync_interval > 0  # a shared store: generation reads are rationed
            await b.sync()  # b now trusts what it read for sync_interval
            await a.patch_settings({"seed": 42})  # answers only once every worker's trust has run out
            await b.sync()
            assert b.runtime.settings.seed == 42
        finally:
            await a.close()
            await b.close()

    asyncio.run(go())


def test_within_the_interval_a_worker_does_not_read_again(redis_server: RedisServer) -> None:
    async def go() -> None:
        state = worker(redis_server.url, unique_key_prefix())
        reads = 0
        real_get_many = state.store.get_many

        async def counting_get_many(keys: list[str]) -> list[object]:
            # The generation and the script's token, read together.
            nonlocal reads
            reads += 1
            return await real_get_many(keys)

        state.store.get_many = counting_get_many  # type: ignore[method-assign]
        try:
            state.sync_interval = 60.0  # long enough that timing cannot make this test flaky
            await state.sync()
            await state.sync()
            assert reads == 1
        finally:
            await state.close()

    asyncio.run(go())


def test_requests_arriving_during_a_read_wait_for_it_and_see_a_change_made_before(
    redis_server: RedisServer,
) -> None:
    """Two requests on one worker in the same loop pass: the second must not run on the old runtime
    while the first one's read of the generation is still in flight."""

    async def go() -> None:
        prefix = unique_key_prefix()
        a, b = worker(redis_server.url, prefix), worker(redis_server.url, prefix)
        try:
            await a.patch_settings({"seed": 42})  # answered: every worker must now run with it
            seen: list[int] = []

            async def request() -> None:
                await b.sync()
                seen.append(b.runtime.settings.seed)

            await asyncio.gather(request(), request(), request())
            assert seen == [42, 42, 42]
        finally:
            await a.close()
            await b.close()

    asyncio.run(go())


def test_the_next_read_starts_ahead_of_need_without_holding_the_request(redis_server: RedisServer) -> None:
    async def go() -> None:
        state = worker(redis_server.url, unique_key_prefix())
        state.sync_interval = 0.2
        try:
            await state.sync()  # the first read: the request waits for it
            first = state._refresh
            await asyncio.sleep(0.12)  # past half the interval, still inside it
            await state.sync()  # returns at once on the completed read...
            assert state._refresh is not first and state._refresh is not None
            assert not state._refresh.done()  # ...while the next one is under way
            await state._refresh
        finally:
            await state.close()

    asyncio.run(go())


def test_an_unreachable_store_does_not_hold_requests_forever(caplog: pytest.LogCaptureFixture) -> None:
    async def go() -> None:
        state = worker("redis://127.0.0.1:1/0", "mockserver:")  # nothing listens on port 1
        await asyncio.wait_for(state.sync(), timeout=10)  # tries, logs, goes on with what it has
        await state.close()

    with caplog.at_level("WARNING", logger="mockserver"):
        asyncio.run(go())
    assert "settings not synchronised" in caplog.text


def test_memory_storage_has_nothing_to_watch() -> None:
    state = worker("memory://", "mockserver:")
    assert not state.shared and state.sync_interval == 0.0


# --- admin changes through two in-process servers sharing one Redis and key prefix ----------------

HELLO = [{"role": "user", "content": "Hello"}]
CANNED = '[[replies]]\ncontains = "Hello"\ntext = "Canned hello."\n'


@pytest.fixture
def two_servers(redis_server: RedisServer, start_server) -> Callable[[], tuple[MockServer, MockServer]]:
    prefix = unique_key_prefix()

    def start() -> tuple[MockServer, MockServer]:
        return tuple(start_server(storage=redis_server.url, key_prefix=prefix) for _ in range(2))

    return start


def ask(server: MockServer) -> str:
    client = anthropic.Anthropic(api_key="sk-sync", base_url=server.url, max_retries=0)
    block = client.messages.create(model="claude-opus-4-7", max_tokens=20, messages=HELLO).content[0]
    assert block.type == "text"
    return block.text


def test_a_refused_patch_is_not_stored_and_every_worker_keeps_serving(two_servers, start_server) -> None:
    a, b = two_servers()
    with AdminClient(a.url) as admin_a, AdminClient(b.url) as admin_b:
        with pytest.raises(AdminError) as caught:
            admin_a.configure(replies=["/nonexistent.toml"])
        assert caught.value.status == 400 and "/nonexistent.toml" in caught.value.message
        admin_a.configure(seed=7)  # the next valid patch makes every worker rebuild from the store
        assert admin_b.settings()["seed"] == 7 and admin_b.settings()["replies"] == []
        ask(a), ask(b)
    # A restart on the same Redis applies what was stored: only the accepted patch.
    (c, _) = two_servers()
    with AdminClient(c.url) as admin_c:
        assert admin_c.settings()["seed"] == 7
    ask(c)
    assert not a.state.server_errors and not b.state.server_errors and not c.state.server_errors


def test_a_stored_patch_that_no_longer_loads_is_skipped_by_name_and_the_rest_apply(
    two_servers, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    canned = tmp_path / "canned.toml"
    canned.write_text(CANNED)
    a, b = two_servers()
    with AdminClient(a.url) as admin_a:
        admin_a.configure(replies=[str(canned)])
        admin_a.configure(seed=11)
    assert ask(b) == "Canned hello."
    canned.unlink()  # the file goes (or a replica never had it): the stored patch cannot load
    with caplog.at_level("WARNING", logger="mockserver"):
        restarted, _ = two_servers()
        with AdminClient(restarted.url) as admin:
            settings = admin.settings()
        assert settings["seed"] == 11 and settings["replies"] == []
        assert ask(restarted) != "Canned hello."
    assert f"settings patch 1 of 2 {{'replies': ['{canned}']}} skipped" in caplog.text
    assert str(canned) in caplog.text and not restarted.state.server_errors


def test_patches_sent_to_two_workers_at_once_both_land(two_servers) -> None:
    a, b = two_servers()
    with AdminClient(a.url) as admin_a, AdminClient(b.url) as admin_b:
        with ThreadPoolExecutor(8) as pool:
            list(
                pool.map(
                    lambda n: (admin_a if n % 2 else admin_b).configure(
                        {"organizations": {f"org-{n}": {"keys": [f"sk-{n}"]}}}
                    ),
                    range(16),
                )
            )
        for admin in (admin_a, admin_b):
            assert set(admin.settings()["organizations"]) >= {f"org-{n}" for n in range(16)}


def test_faults_added_through_two_workers_at_once_all_land_and_a_name_is_taken_once(two_servers) -> None:
    a, b = two_servers()
    with AdminClient(a.url) as admin_a, AdminClient(b.url) as admin_b:

        def add(n: int) -> int:
            try:
                (admin_a if n % 2 else admin_b).add_fault(name=f"f{n // 2}", kind="http_error", status=500)
            except AdminError as exc:
                assert exc.status == 400 and "already exists" in exc.message
                return 400
            return 201

        with ThreadPoolExecutor(8) as pool:
            statuses = list(pool.map(add, range(20)))  # each name sent to both workers at once
        assert statuses.count(201) == 10 and statuses.count(400) == 10
        names = [fault["name"] for fault in admin_b.faults()]
        assert sorted(names) == sorted(f"f{n}" for n in range(10))
        for admin in (admin_a, admin_b):
            assert [fault["name"] for fault in admin.faults()] == names  # one order everywhere
        admin_a.delete_fault("f3")
        with pytest.raises(AdminError) as caught:
            admin_b.delete_fault("f3")
        assert caught.value.status == 404
        assert len(admin_b.faults()) == 9
