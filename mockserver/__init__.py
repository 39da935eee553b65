"""mockserver: a local Anthropic Messages API with fast-mode semantics, for tests and chaos.

The public surface is below. Names load on first use (PEP 562): importing `mockserver` (which the
pytest plugin's import does) must cost nothing and start nothing.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS = {
    "AdminClient": "mockserver.admin_client",
    "AdminError": "mockserver.admin_client",
    "MockServer": "mockserver.server",
    "create_app": "mockserver.app",
    "Settings": "mockserver.settings",
    "load_settings": "mockserver.settings",
    "Clock": "mockserver.clock",
    "SystemClock": "mockserver.clock",
    "FakeClock": "mockserver.clock",
    "Fault": "mockserver.faults",
    "ConfigError": "mockserver.errors",
}

__all__ = [
    "AdminClient",
    "AdminError",
    "Clock",
    "ConfigError",
    "FakeClock",
    "Fault",
    "MockServer",
    "Settings",
    "SystemClock",
    "__version__",
    "create_app",
    "load_settings",
]

if TYPE_CHECKING:
    from mockserver.admin_client import AdminClient, AdminError
    from mockserver.app import create_app
    from mockserver.clock import Clock, FakeClock, SystemClock
    from mockserver.errors import ConfigError
    from mockserver.faults import Fault
    from mockserver.server import MockServer
    from mockserver.settings import Settings, load_settings


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'mockserver' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
