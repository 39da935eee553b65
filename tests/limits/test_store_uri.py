from __future__ import annotations

import subprocess
import sys

import pytest

from mockserver.clock import FakeClock
from mockserver.errors import ConfigError
from mockserver.limits import InvalidStoreURI, MemoryBucketStore, RedisBucketStore, bucket_store_from_uri


def test_memory_uri():
    clock = FakeClock()
    store = bucket_store_from_uri("memory://", clock=clock)
    assert isinstance(store, MemoryBucketStore)
    assert store._clock is clock


@pytest.mark.parametrize(
    "uri", ["redis://127.0.0.1:6379/0", "rediss://cache.internal:6380/2", "unix:///tmp/r.sock"]
)
def test_redis_uris_build_without_connecting(uri):
    store = bucket_store_from_uri(uri, key_prefix="ci:")
    assert isinstance(store, RedisBucketStore)
    assert store.url == uri and store.key_prefix == "ci:"


@pytest.mark.parametrize("uri", ["http://localhost", "memcached://x:1", "", "redis", "memory://somewhere"])
def test_unsupported_uris_name_the_uri_and_the_choices(uri):
    with pytest.raises(InvalidStoreURI) as info:
        bucket_store_from_uri(uri)
    assert repr(uri) in str(info.value)
    assert "memory://" in str(info.value)
    assert isinstance(info.value, ConfigError)


def test_bad_redis_url_is_a_config_error_without_the_password():
    with pytest.raises(InvalidStoreURI, match="invalid Redis URL") as info:
        bucket_store_from_uri("redis://:hunter2@localhost:notaport/0")
    assert "hunter2" not in str(info.value)


def test_importing_limits_does_not_import_redis():
    code = "import sys, mockserver.limits, mockserver.limits.redis; print('redis' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"
