"""pytest fixtures that start the sandbox on free ports: `sandbox` (fresh per test) and `shared_sandbox` (per module).

Enable with `pytest_plugins = ["sandbox.pytest_plugin"]` in a conftest.
"""
from __future__ import annotations

from collections.abc import Iterator
from datetime import date

import pytest

from sandbox.server import Sandbox

TEST_AS_OF = date(2026, 11, 22)


@pytest.fixture
def sandbox() -> Iterator[Sandbox]:
    """A small sandbox of its own for one test, which may change it freely; rate limits off unless a test sets them."""
    with Sandbox(size="small", seed=7, as_of=TEST_AS_OF, rate_limits=False) as box:
        yield box


@pytest.fixture(scope="module")
def shared_sandbox() -> Iterator[Sandbox]:
    """A small sandbox shared by a module's tests, which must only read from it."""
    with Sandbox(size="small", seed=7, as_of=TEST_AS_OF, rate_limits=False) as box:
        yield box
