"""The sync stage: a read-only source is only read, and a mapping the source does not fit fails naming
the mapping entry and the fix, for the programs that read that entity only."""

from __future__ import annotations

import os
import stat
import uuid
from pathlib import Path

import pytest
from sqlalchemy import create_engine, func, select, text

from lifecycle.config.sources import ENTITIES, load_sources
from lifecycle.engine import sync
from lifecycle.model import schema
from lifecycle.model.db import get_engine, migrate, source_engine
from tests.conftest import AS_OF, require_postgres
from tests.support.warehouse import WAREHOUSE_MAPPING, canonical_crm, write_warehouse


def _state(tmp_path: Path):
    state = get_engine(f"sqlite:///{tmp_path / 'state.db'}")
    migrate(state)
    return state


def _counts(engine) -> dict[str, int]:
    with engine.connect() as conn:
        return {
            name: conn.execute(select(func.count()).select_from(t)).scalar_one()
            for name, t in schema.CRM_TABLES.items()
        }


def test_read_only_sqlite_file_is_copied_and_never_written(tmp_path: Path) -> None:
    crm_path = tmp_path / "crm.db"
    canonical_crm(f"sqlite:///{crm_path}", 80, AS_OF)
    get_engine(f"sqlite:///{crm_path}").dispose()
    for leftover in tmp_path.glob("crm.db-*"):
        leftover.unlink()
    os.chmod(crm_path, stat.S_IRUSR | stat.S_IRGRP | stat.S_IROTH)  # 0444
    before = crm_path.read_bytes()
    state = _state(tmp_path)
    source = source_engine(f"sqlite:///{crm_path}")

    first = sync.sync(source, state, None, ENTITIES, shared=False)
    again = sync.sync(source, state, None, ENTITIES, shared=False)

    assert {r.mode for r in first.values()} == {"full"}
    assert {r.mode for r in again.values()} == {"unchanged"}
    assert _counts(state) == _counts(create_engine(f"sqlite:///file:{crm_path}?mode=ro&uri=true"))
    assert crm_path.read_bytes() == before
    with pytest.raises(Exception, match="readonly|read-only"), source.begin() as conn:
        conn.execute(text("DELETE FROM contacts"))


@pytest.mark.slow
def test_postgres_role_with_only_select_is_enough(tmp_path: Path, postgres_url: str) -> None:
    require_postgres()
    canonical_crm(postgres_url, 80, AS_OF)
    role = f"lifecycle_ro_{uuid.uuid4().hex[:8]}"
    admin = create_engine(postgres_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f"CREATE ROLE {role} LOGIN"))
        conn.execute(text(f"GRANT USAGE ON SCHEMA public TO {role}"))
        conn.execute(text(f"GRANT SELECT ON ALL TABLES IN SCHEMA public TO {role}"))
    try:
        base = postgres_url.split("://", 1)[1].split("@", 1)[1]
        reader = f"postgresql+psycopg2://{role}@{base}"
        state = _state(tmp_path)
        results = sync.sync(source_engine(reader), state, None, ENTITIES, shared=False)
        assert {r.mode for r in results.values()} == {"full"}
        assert _counts(state) == _counts(get_engine(postgres_url))
        with admin.connect() as conn:
            writes = conn.execute(
                text("SELECT n_tup_ins + n_tup_upd + n_tup_del FROM pg_stat_user_tables WHERE relname = 'contacts'")
            ).scalar_one()
        with pytest.raises(Exception, match="permission denied|read-only"), source_engine(reader).begin() as conn:
            conn.execute(text("DELETE FROM contacts"))
        assert writes == 80  # the seed's inserts; the copy wrote nothing
    finally:
        source_engine(reader).dispose()
        with admin.connect() as conn:
            conn.execute(text(f"DROP OWNED BY {role}"))
            conn.execute(text(f"DROP ROLE {role}"))
        admin.dispose()


@pytest.fixture
def warehouse(tmp_path: Path, monkeypatch) -> tuple[str, Path]:
    canonical = canonical_crm(f"sqlite:///{tmp_path / 'canonical.db'}", 60, AS_OF)
    url = f"sqlite:///{tmp_path / 'warehouse.db'}"
    write_warehouse(canonical, url)
    config = tmp_path / "config"
    config.mkdir()
    monkeypatch.setenv("LIFECYCLE_CONFIG_DIR", str(config))
    return url, config / "sources.yml"


@pytest.mark.parametrize(
    ("change", "entity", "expected"),
    [
        (
            ("table: support_tickets", "table: zendesk_tickets"),
            "tickets",
            r"tickets\.table: table 'zendesk_tickets' is not in the source — fix",
        ),
        (
            ("status: state, opened_at: created", "status: state, opened_at: opened"),
            "tickets",
            r"tickets\.columns\.opened_at: column 'opened' is not in support_tickets — fix",
        ),
        (
            ("    created_at: signed_up_at", "    created_at: stage"),
            "contacts",
            r"contacts\.columns\.created_at: 'stage' gives values that are not a timestamp .* fix",
        ),
        (
            ("renews_at: renewal_date", "renews_at: monthly"),
            "subscriptions",
            r"subscriptions\.columns\.renews_at: 'monthly' gives float values .* is a timestamp",
        ),
        (
            ("customer: customer_active", "customer: customer_paying"),
            "contacts",
            r"contacts\.values\.lifecycle_stage: .*outside the mapped vocabulary: 'customer_active' .* fix",
        ),
    ],
)
def test_a_mapping_the_source_does_not_fit_names_the_entry_and_the_fix(warehouse, change, entity, expected) -> None:
    url, file = warehouse
    file.write_text(WAREHOUSE_MAPPING.replace(*change))
    state = get_engine(f"sqlite:///{file.parent.parent / 'state.db'}")
    migrate(state)
    others = [e for e in ENTITIES if e != entity]

    copied = sync.sync(source_engine(url), state, load_sources(), others, shared=False, also=[entity])
    with pytest.raises(sync.SourceError, match=expected) as failure:
        sync.sync(source_engine(url), state, load_sources(), [entity], shared=False)

    assert set(copied) == set(others)  # every other entity still copies; only readers of this one fail
    assert str(failure.value).startswith(str(file))


def test_a_mapping_into_the_source_database_is_refused(warehouse) -> None:
    url, file = warehouse
    file.write_text(WAREHOUSE_MAPPING)
    with pytest.raises(sync.SourceError, match="configure the lifecycle_state connection"):
        sync.sync(source_engine(url), get_engine(url), load_sources(), ["contacts"], shared=True)
