"""Fixtures of the DAG-run tests."""

from __future__ import annotations

import pytest

from tests.support.dagrun import provider_sandbox


@pytest.fixture
def sandbox(monkeypatch):
    """Program runs are always real: their sends go to a provider sandbox the connections point at."""
    with provider_sandbox(monkeypatch) as server:
        yield server
