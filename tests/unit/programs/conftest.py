"""Fixtures for the shipped programs' tests: the project's own config, and an empty SQLite CRM."""

from __future__ import annotations

import pytest

from tests.conftest import AS_OF


@pytest.fixture
def shipped_config(monkeypatch) -> None:
    """Read the project's own config/ and include/templates/, whatever the environment says."""
    monkeypatch.delenv("LIFECYCLE_CONFIG_DIR", raising=False)
    monkeypatch.delenv("LIFECYCLE_TEMPLATES_DIR", raising=False)


@pytest.fixture
def shipped_crm(sqlite_url, shipped_config):
    """An empty SQLite CRM with the engine tables migrated; yields (engine, CrmBuilder)."""
    from lifecycle.model import schema
    from lifecycle.model.db import get_engine, migrate
    from tests.support.crm_builder import CrmBuilder

    engine = get_engine(sqlite_url)
    schema.crm_metadata.create_all(engine)
    migrate(engine)
    return engine, CrmBuilder(engine, AS_OF)
