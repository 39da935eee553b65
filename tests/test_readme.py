"""Every Python example in the README and in docs/ runs as written.

A block that defines tests (`def test_`) is a test module for the user's suite: all of them run in
one pytest subprocess with the plugin, as `pytest` would run them in a project that installed
mockserver. Any other block is a script for `mockserver serve`'s default address; it runs in a
subprocess against a server of this test, whose URL stands in for http://127.0.0.1:8080.
"""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from mockserver.server import MockServer
from tests.conftest import make_settings

pytest_plugins = ["pytester"]

ROOT = Path(__file__).resolve().parent.parent
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
README_URL = "http://127.0.0.1:8080"
BLOCK = re.compile(r"^( *)```python\n(.*?)^\1```", re.DOTALL | re.MULTILINE)  # in a list item: indented


def python_blocks() -> list[tuple[str, str]]:
    """(where, code) of every ```python block, where = "file:line"."""
    found = []
    for document in DOCUMENTS:
        text = document.read_text()
        for match in BLOCK.finditer(text):
            line = text.count("\n", 0, match.start()) + 1
            found.append((f"{document.relative_to(ROOT)}:{line}", textwrap.dedent(match.group(2))))
    return found


BLOCKS = python_blocks()
TEST_DEF = re.compile(r"^(?:async )?def test_", re.MULTILINE)
TEST_MODULES = [(where, code) for where, code in BLOCKS if TEST_DEF.search(code)]
SCRIPTS = [(where, code) for where, code in BLOCKS if (where, code) not in TEST_MODULES]


def test_the_documents_have_examples_of_both_kinds():
    assert TEST_MODULES and SCRIPTS
    assert any(where.startswith("README.md") for where, _ in TEST_MODULES)  # the front's test


@pytest.fixture(scope="module")
def server() -> Iterator[MockServer]:
    # The examples' server has the defaults of `mockserver serve`, only a hundred times faster.
    with MockServer(make_settings(timing={"time_scale": 100.0})) as running:
        yield running


@pytest.mark.parametrize(("where", "code"), SCRIPTS, ids=[where for where, _ in SCRIPTS])
def test_script_example_runs(where: str, code: str, server: MockServer):
    assert README_URL in code, f"{where}: a script example should talk to {README_URL}"
    ran = subprocess.run(
        [sys.executable, "-c", code.replace(README_URL, server.url)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert ran.returncode == 0, f"{where} failed:\n{ran.stdout}\n{ran.stderr}"


def test_test_examples_pass_under_the_plugin(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch):
    for name in ("PYTEST_XDIST_WORKER", "PYTEST_XDIST_WORKER_COUNT"):  # the outer run's, not the inner's
        monkeypatch.delenv(name, raising=False)
    for index, (where, code) in enumerate(TEST_MODULES):
        pytester.makepyfile(**{f"test_example_{index}": f"# {where}\n{code}"})
    expected = sum(len(TEST_DEF.findall(code)) for _, code in TEST_MODULES)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-q", timeout=300)
    result.assert_outcomes(passed=expected)
