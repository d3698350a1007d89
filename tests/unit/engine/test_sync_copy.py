"""The sync stage's copy: a first copy in one pass holds what a hash-then-write copy holds, a copy after
N changed rows writes about N rows, and values survive the bulk write (PostgreSQL COPY, SQLite
executemany) exactly as the stages read them."""

from __future__ import annotations

import sqlite3
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select, text, update

from lifecycle.config.sources import ENTITIES, KEYS, load_sources
from lifecycle.engine import sync
from lifecycle.model import schema
from lifecycle.model.db import get_engine, migrate, source_engine
from tests.conftest import AS_OF
from tests.support.warehouse import WAREHOUSE_MAPPING, canonical_crm, write_warehouse


@pytest.fixture
def warehouse(tmp_path: Path, monkeypatch) -> str:
    """A SQLite warehouse of 60 contacts, mapped by the shipped example mapping."""
    canonical = canonical_crm(f"sqlite:///{tmp_path / 'canonical.db'}", 60, AS_OF)
    url = f"sqlite:///{tmp_path / 'warehouse.db'}"
    write_warehouse(canonical, url)
    config = tmp_path / "config"
    config.mkdir()
    (config / "sources.yml").write_text(WAREHOUSE_MAPPING)
    monkeypatch.setenv("LIFECYCLE_CONFIG_DIR", str(config))
    return url


def _copy(source_url: str, state) -> dict[str, sync.SyncResult]:
    source = source_engine(source_url)
    try:
        return sync.sync(source, state, load_sources(), ENTITIES, shared=False)
    finally:
        source.dispose()


def _mirror(state) -> dict[str, list[tuple]]:
    tables = {**schema.CRM_TABLES, "attributes": schema.contact_attributes}
    with state.connect() as conn:
        return {name: sorted(map(tuple, conn.execute(select(t))), key=repr) for name, t in tables.items()}


def _checksums(state) -> dict[str, tuple]:
    s = schema.source_sync
    with state.connect() as conn:
        return {r.entity: (r.checksum, r.row_count) for r in conn.execute(select(s))}


def test_a_first_copy_in_one_pass_holds_what_a_hash_then_write_copy_holds(warehouse: str, db_url: str) -> None:
    state = get_engine(db_url)
    migrate(state)
    first = _copy(warehouse, state)
    expected, expected_sums = _mirror(state), _checksums(state)
    assert {r.mode for r in first.values()} == {"full"}
    assert all(r.rows_read == r.rows_written for r in first.values())  # each source row read once
    # The last copy's checksum no longer matches and a row is missing from every mirror table: the next
    # copy hashes each full-refresh entity, finds it changed and writes it; the others count a difference.
    with state.begin() as conn:
        conn.execute(update(schema.source_sync).values(checksum="0"))
        for name in schema.CRM_TABLES:
            key = KEYS[name][0]
            conn.execute(text(f"DELETE FROM {name} WHERE {key} = (SELECT min({key}) FROM {name})"))

    again = _copy(warehouse, state)

    assert {r.mode for r in again.values()} == {"full"}
    full_refresh = [e for e in ENTITIES if e not in ("contacts", "events", "opportunities")]
    assert all(again[e].rows_read == 2 * again[e].rows_written for e in full_refresh)  # hashed, then written
    assert _mirror(state) == expected
    assert _checksums(state) == expected_sums


def test_a_copy_after_n_changed_rows_writes_about_n_rows(warehouse: str, tmp_path: Path) -> None:
    state = get_engine(f"sqlite:///{tmp_path / 'state.db'}")
    migrate(state)
    _copy(warehouse, state)
    later = AS_OF + timedelta(hours=1)
    with sqlite3.connect(warehouse.removeprefix("sqlite:///")) as con:
        con.execute(
            "UPDATE users SET last_seen_at = ?, updated_at = ? WHERE id IN (SELECT id FROM users ORDER BY id LIMIT 7)",
            (str(later), str(later)),
        )
        con.execute(
            "INSERT INTO tracks SELECT message_id || '-next', user_id, event, ?, properties FROM tracks "
            "ORDER BY message_id LIMIT 5",
            (str(later),),
        )

    daily = _copy(warehouse, state)

    assert daily["contacts"].mode == "incremental"
    assert 7 <= daily["contacts"].rows_written <= 7 + 2  # the changed rows, and the watermark's edge rows
    assert 5 <= daily["events"].rows_written <= 5 + 2 + 2  # new tracks; the edges of tracks and orders
    assert sum(r.rows_written for e, r in daily.items() if e not in ("contacts", "events")) <= 2
    with state.connect() as conn:
        seen = conn.execute(select(func.count()).where(schema.contacts.c.last_active_at == later)).scalar_one()
    assert seen == 7


def test_values_survive_the_bulk_write_as_the_stages_read_them(warehouse: str, db_url: str) -> None:
    awkward = "tab\there, new\nline, back\\slash \\N, \r"
    with sqlite3.connect(warehouse.removeprefix("sqlite:///")) as con:
        first = con.execute("SELECT min(id) FROM users").fetchone()[0]
        con.execute("UPDATE users SET first_name = ?, last_name = '', region = NULL WHERE id = ?", (awkward, first))
        event = con.execute("SELECT min(message_id) FROM tracks").fetchone()[0]
        con.execute(
            "UPDATE tracks SET properties = ? WHERE message_id = ?", ('{"path": "/caf\\u00e9\\t\\"x\\""}', event)
        )
    state = get_engine(db_url)
    migrate(state)

    _copy(warehouse, state)

    c, e = schema.contacts, schema.events
    with state.connect() as conn:
        row = conn.execute(select(c.c.first_name, c.c.last_name, c.c.region).where(c.c.contact_id == first)).one()
        properties = conn.execute(select(e.c.properties).where(e.c.event_id == event)).scalar_one()
        created = conn.execute(select(c.c.created_at).where(c.c.contact_id == first)).scalar_one()
        # A bound timestamp compares with the stored ones as the stages' segments compare them.
        same_time = conn.execute(select(func.count()).where(c.c.created_at == created)).scalar_one()
        if state.dialect.name == "sqlite":
            stored = conn.execute(text("SELECT created_at FROM contacts WHERE contact_id = :id"), {"id": first})
            assert datetime.strptime(stored.scalar_one(), "%Y-%m-%d %H:%M:%S.%f") == created
    assert tuple(row) == (awkward, "", None)
    assert properties == {"path": '/café\t"x"'}
    assert same_time >= 1
