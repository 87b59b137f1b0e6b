"""Shared test setup: the sandbox fixtures (`sandbox`, `shared_sandbox`) for every test."""
from __future__ import annotations

pytest_plugins = ["sandbox.pytest_plugin"]
