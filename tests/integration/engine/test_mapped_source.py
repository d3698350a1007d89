"""The same CRM in the canonical shape and in a warehouse shape (mapped by config/sources.yml, copied by
the sync stage into a state database of its own) decides the same ledger, program for program."""

from __future__ import annotations

import shutil
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select, text
from sqlalchemy.exc import DBAPIError

from lifecycle.config.sources import ENTITIES, load_sources
from lifecycle.engine import sync
from lifecycle.model import schema
from lifecycle.model.db import get_engine, migrate, source_engine
from tests.conftest import AS_OF, ROOT
from tests.support.journey import run_program
from tests.support.warehouse import WAREHOUSE_MAPPING, canonical_crm, write_warehouse

PROGRAMS = (
    "welcome",
    "abandoned_cart",
    "renewal",
    "upsell",
    "winback",
    "lead_nurture",
    "education",
    "reactivation",
)
OFFSETS = (timedelta(0), timedelta(days=1, hours=2), timedelta(days=7))


def _ledger(engine) -> list[tuple]:
    m = schema.messages
    with engine.connect() as conn:
        query = select(m.c.idempotency_key, m.c.status, m.c.reason, m.c.channel).order_by(m.c.idempotency_key)
        rows = conn.execute(query)
        return [tuple(r) for r in rows]


def _run_all(engine, before=None) -> None:
    for offset in OFFSETS:
        if before is not None:
            before()
        for program_id in PROGRAMS:
            run_program(engine, program_id, AS_OF + offset)


@pytest.mark.slow
@pytest.mark.parametrize("warehouse", ["sqlite", "duckdb", "mariadb"])
def test_warehouse_shape_decides_the_canonical_ledger(tmp_path: Path, monkeypatch, request, warehouse: str) -> None:
    canonical = canonical_crm(f"sqlite:///{tmp_path / 'canonical.db'}", 600, AS_OF)
    if warehouse == "mariadb":
        warehouse_url = request.getfixturevalue("mariadb_url")
    else:
        warehouse_url = f"{warehouse}:///{tmp_path / f'warehouse.{warehouse}'}"
    write_warehouse(canonical, warehouse_url)

    monkeypatch.setenv("LIFECYCLE_CONFIG_DIR", str(ROOT / "config"))
    migrate(canonical)
    _run_all(canonical)

    mapped_config = tmp_path / "config"
    shutil.copytree(ROOT / "config", mapped_config)
    (mapped_config / "sources.yml").write_text(WAREHOUSE_MAPPING)
    monkeypatch.setenv("LIFECYCLE_CONFIG_DIR", str(mapped_config))
    state = get_engine(f"sqlite:///{tmp_path / 'state.db'}")
    migrate(state)
    source = source_engine(warehouse_url)
    copies = []

    def copy() -> None:
        copies.append(sync.sync(source, state, load_sources(), ENTITIES, shared=False))

    _run_all(state, before=copy)

    expected = _ledger(canonical)
    assert len(expected) > 100
    assert {status for _key, status, _reason, _channel in expected} >= {"suppressed", "held_out", "capped"}
    assert _ledger(state) == expected
    assert {key.split(":")[0] for key, *_ in expected} >= {"education", "reactivation"}
    assert all(r.mode == "full" for r in copies[0].values())
    # Nothing changed at the source: later copies write only what the watermark re-reads at its edge.
    assert all(r.rows_written <= 2 for later in copies[1:] for r in later.values())


@pytest.mark.slow
def test_a_mariadb_source_is_only_read(mariadb_url: str, tmp_path: Path) -> None:
    canonical = canonical_crm(f"sqlite:///{tmp_path / 'canonical.db'}", 20, AS_OF)
    write_warehouse(canonical, mariadb_url)
    source = source_engine(mariadb_url)
    with source.connect() as conn:
        assert conn.execute(text("SELECT COUNT(*) FROM users")).scalar_one() == 20
        for statement in (
            "DELETE FROM users",
            "UPDATE users SET stage = 'lead'",
            "INSERT INTO companies (id) VALUES ('x')",
        ):
            with pytest.raises(DBAPIError, match="READ ONLY"):
                conn.execute(text(statement))
            conn.rollback()
        assert conn.execute(text("SELECT COUNT(*) FROM users")).scalar_one() == 20
