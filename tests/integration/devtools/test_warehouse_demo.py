"""The shipped second example: the synthetic CRM seeded in the warehouse shape (DuckDB), its mapping
(config/examples/warehouse/sources.yml), and ``lifecycle demo --warehouse`` running on it."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from sqlalchemy import text

from lifecycle.config.sources import load_sources
from lifecycle.devtools import cli, warehouse
from lifecycle.model.db import source_engine
from lifecycle.paths import PROJECT_ROOT


def test_the_shipped_mapping_is_the_shape_s_mapping() -> None:
    assert warehouse.EXAMPLE_MAPPING.read_text() == warehouse.mapping()
    sources = load_sources(warehouse.EXAMPLE_MAPPING)
    assert sources is not None and not sources.errors
    assert set(sources.entities) == set(warehouse.schema.CRM_TABLES)


@pytest.mark.slow
def test_seed_writes_the_warehouse_shape_to_duckdb(tmp_path) -> None:
    url = f"duckdb:///{tmp_path / 'crm.duckdb'}"
    assert cli.main(["seed", "--shape", "warehouse", "--url", url, "--contacts", "50", "--as-of", "2026-11-16"]) == 0
    with source_engine(url).connect() as conn:
        tables = {row[0] for row in conn.execute(text("SELECT table_name FROM information_schema.tables"))}
        assert tables >= {"users", "companies", "tracks", "orders", "billing", "deals", "support_tickets"}
        assert conn.execute(text("SELECT COUNT(*) FROM users")).scalar_one() == 50
    source_engine(url).dispose()


@pytest.mark.slow
@pytest.mark.airflow
def test_the_warehouse_demo_runs(tmp_path) -> None:
    env = os.environ | {
        "LIFECYCLE_DEMO_DIR": str(tmp_path / "demo"),
        "PYTHONPATH": str(PROJECT_ROOT / "plugins"),
    }
    env.pop("AIRFLOW_HOME", None)
    env = {k: v for k, v in env.items() if not k.startswith(("AIRFLOW__", "AIRFLOW_CONN_", "LIFECYCLE_CONFIG"))}
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "lifecycle.devtools.cli",
            "demo",
            "--warehouse",
            "--contacts",
            "300",
            "--days",
            "1",
            "--sim-days",
            "1",
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "the CRM is now a warehouse-shaped DuckDB file" in done.stdout
    assert "0 failed run(s)" in done.stdout
    assert (tmp_path / "demo" / "warehouse.duckdb").exists() and (tmp_path / "demo" / "digest.html").exists()
