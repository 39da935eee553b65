"""The curated public surface: `mockserver.__all__` is exactly what users may rely on."""

from __future__ import annotations

import subprocess
import sys

import mockserver

EXPECTED = {
    "__version__",
    "AdminClient",
    "AdminError",
    "MockServer",
    "create_app",
    "Settings",
    "load_settings",
    "Clock",
    "SystemClock",
    "FakeClock",
    "Fault",
    "ConfigError",
}


def test_all_is_the_curated_surface_and_every_name_resolves():
    assert set(mockserver.__all__) == EXPECTED == {"__version__", *mockserver._EXPORTS}
    for name in mockserver.__all__:
        assert getattr(mockserver, name) is not None


def test_importing_the_package_imports_nothing_heavy():
    heavy = "('starlette', 'pydantic', 'httpx', 'uvicorn')"
    code = f"import sys, mockserver; print(sorted(m for m in {heavy} if m in sys.modules))"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=30, check=True
    )
    assert result.stdout.strip() == "[]"


def test_version_matches_the_distribution():
    from importlib.metadata import version

    assert mockserver.__version__ == version("mockserver")
