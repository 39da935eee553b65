from __future__ import annotations

import os

# Imported here, before any inner run: pytester's in-process runs drop the modules they imported
# when they end, and httpx imports httpcore lazily but caches its exception classes for good, so a
# second import of httpcore would leave connection errors unmapped (not httpx.HTTPError). The same
# holds for httpx2 and httpcore2, which the SDK (2.x) uses.
import anthropic  # noqa: F401
import httpcore  # noqa: F401
import httpcore2  # noqa: F401
import pytest

import mockserver.server
import mockserver.testing  # noqa: F401


@pytest.fixture(autouse=True)
def hermetic_environment(monkeypatch):
    """Inner pytest runs read MOCKSERVER_* (and the xdist worker id): keep the outer run's out of them."""
    for name in list(os.environ):
        if name.startswith("MOCKSERVER_") or name in ("PYTEST_XDIST_WORKER", "PYTEST_XDIST_WORKER_COUNT"):
            monkeypatch.delenv(name)
