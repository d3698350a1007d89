"""The mapped-source benchmark: ``lifecycle bench --source warehouse``.

It seeds the synthetic CRM of N contacts (the same one the canonical benchmark seeds), writes it in
the warehouse shape to a DuckDB file (:mod:`lifecycle.devtools.warehouse`), and on each state
database (SQLite, PostgreSQL):

- copies the warehouse into a fresh state database through ``config/examples/warehouse/sources.yml``
  (the first copy: rows read and written, seconds per entity);
- runs the eight programs' decision stages (evaluate .. cap) on the canonical CRM (one database) and
  on the mirror, program by program in turn so that both meet the same load, and checks both ledgers
  hold the same messages (idempotency key, status, reason);
- copies again with nothing changed (a quiet copy), then after a day of change in the warehouse
  (1% of the contacts updated, a day of new events), and reports the rows and seconds of each.

Sending is not run: what this measures is the decisions and the data moved between source and state.
Each measured step runs in a fresh child process, as the DAG tasks do.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import select

from lifecycle.config.sources import ENTITIES
from lifecycle.devtools.bench import (
    DECISIONS,
    Databases,
    _progress,
    in_child,
    machine,
    run_stages,
    scopes_for,
    usable_databases,
)
from lifecycle.devtools.seed import seed_crm
from lifecycle.devtools.warehouse import EXAMPLE_MAPPING, write_warehouse
from lifecycle.model import schema
from lifecycle.model.db import get_engine, migrate
from lifecycle.paths import PROJECT_ROOT

CHANGED_CONTACTS = 0.01
"""The share of contacts a day of change updates."""
DECISION_TARGET = 1.5
WRITTEN_TARGET = 1.1
M = schema.messages


@dataclass
class Copy:
    """One copy of every entity: per entity (mode, rows read, rows written, seconds)."""

    entities: dict[str, dict[str, Any]]

    def total(self, key: str) -> float:
        """The sum of one figure over the entities."""
        return sum(entity[key] for entity in self.entities.values())


@dataclass
class Decisions:
    """The decision stages' seconds (summed over the programs) and the ledger they wrote."""

    stages: dict[str, float]
    messages: int
    ledger: str  # a digest of every (idempotency key, status, reason)
    cpu: float  # the CPU seconds of the deciding process: SQLite's work included, PostgreSQL's server not

    @property
    def seconds(self) -> float:
        """Evaluate .. cap."""
        return sum(self.stages[stage] for stage in DECISIONS)


@dataclass
class SourceResult:
    """Everything measured on one kind of state database."""

    database: str
    version: str
    seed_seconds: float
    canonical: Decisions
    mapped: Decisions
    first: Copy
    quiet: Copy
    daily: Copy
    change: dict[str, int]


@dataclass
class SourceReport:
    """The mapped-source benchmark's figures, and how they print."""

    contacts: int
    as_of: datetime
    seed: int
    machine: dict[str, str]
    warehouse: dict[str, int] = field(default_factory=dict)
    warehouse_seconds: float = 0.0
    databases: list[SourceResult] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The report as plain data (``--json``)."""
        return asdict(self)

    def render(self) -> str:
        """The report as printed."""
        lines = [
            f"Lifecycle benchmark, mapped source: {self.contacts:,} contacts in a warehouse-shaped DuckDB file, "
            f"all programs as of {self.as_of:%Y-%m-%d %H:%M} UTC, seed {self.seed}",
            "Machine: " + ", ".join(f"{k} {v}" for k, v in self.machine.items()),
            "Sending is not run on this path: the decision stages (evaluate .. cap) and the data moved between "
            "source and state are measured.",
            "warehouse: "
            + ", ".join(f"{name} {rows:,}" for name, rows in self.warehouse.items())
            + f" written in {self.warehouse_seconds:.1f} s (not engine time)",
        ]
        for name, why in self.skipped.items():
            lines.append(f"{name}: skipped ({why})")
        targets: list[tuple[str, str, str, str, bool]] = []
        for db in self.databases:
            lines += _render_database(db)
            ratio = db.mapped.seconds / db.canonical.seconds if db.canonical.seconds else 0.0
            targets.append(
                (
                    db.database,
                    "decisions mapped / canonical",
                    f"{ratio:.2f}x",
                    f"<= {DECISION_TARGET}x",
                    ratio <= DECISION_TARGET,
                )
            )
            changed = sum(db.change.values())
            written = db.daily.total("rows_written")
            targets.append(
                (
                    db.database,
                    "daily copy rows written / rows changed",
                    f"{written / changed:.2f}x",
                    f"<= {WRITTEN_TARGET}x",
                    written <= WRITTEN_TARGET * changed,
                )
            )
            targets.append(
                (
                    db.database,
                    "same ledger, canonical and mapped",
                    "yes" if same_ledger(db) else "no",
                    "yes",
                    same_ledger(db),
                )
            )
        lines += ["", f"{'database':<11} {'target':<42} {'value':>8} {'goal':>8}  result"]
        for database, what, value, goal, passed in targets:
            lines.append(f"{database:<11} {what:<42} {value:>8} {goal:>8}  {'PASS' if passed else 'MISS'}")
        return "\n".join(lines)


def same_ledger(db: SourceResult) -> bool:
    return db.canonical.ledger == db.mapped.ledger and db.canonical.messages == db.mapped.messages


def _render_database(db: SourceResult) -> list[str]:
    lines = [
        "",
        f"== state in {db.database} {db.version}",
        f"canonical CRM seeded in {db.seed_seconds:.1f} s (not engine time)",
        "",
        f"{'stage':<18} {'canonical':>10} {'mapped':>9} {'ratio':>7}",
    ]
    for stage in DECISIONS:
        c, m = db.canonical.stages[stage], db.mapped.stages[stage]
        lines.append(f"{stage:<18} {c:>10.2f} {m:>9.2f} {m / c if c else 0:>6.2f}x")
    c, m = db.canonical.seconds, db.mapped.seconds
    lines.append(f"{'decisions':<18} {c:>10.2f} {m:>9.2f} {m / c if c else 0:>6.2f}x  (evaluate .. cap)")
    c, m = db.canonical.cpu, db.mapped.cpu
    where = "SQLite's work included" if db.database == "SQLite" else "the server's work not included"
    lines.append(
        f"{'  CPU seconds':<18} {c:>10.2f} {m:>9.2f} {m / c if c else 0:>6.2f}x  (the deciding process; {where})"
    )
    same = "yes" if same_ledger(db) else "NO"
    lines.append(f"same ledger: {same} ({db.mapped.messages:,} messages; idempotency key, status, reason)")
    lines += [
        "",
        f"{'first copy':<15} {'mode':<12} {'rows read':>12} {'rows written':>13} {'seconds':>9} {'µs/row':>7}",
    ]
    for entity, r in db.first.entities.items():
        per_row = r["seconds"] / r["rows_read"] * 1e6 if r["rows_read"] else 0.0
        lines.append(
            f"{entity:<15} {r['mode']:<12} {r['rows_read']:>12,} {r['rows_written']:>13,} {r['seconds']:>9.2f} "
            f"{per_row:>7.1f}"
        )
    read, written, seconds = (db.first.total(k) for k in ("rows_read", "rows_written", "seconds"))
    lines.append(
        f"{'total':<15} {'':<12} {read:>12,} {written:>13,} {seconds:>9.2f} {seconds / max(read, 1) * 1e6:>7.1f}"
    )
    change = ", ".join(f"{what} {n:,}" for what, n in db.change.items())
    lines += ["", f"{'daily copy':<15} {'quiet':>30} {'after a day of change':>44}"]
    lines.append(
        f"{'':<15} {'read':>10} {'written':>9} {'seconds':>9}   {'mode':<12}{'read':>10} {'written':>9} {'seconds':>9}"
    )
    for entity in db.first.entities:
        q, d = db.quiet.entities.get(entity, {}), db.daily.entities.get(entity, {})
        lines.append(
            f"{entity:<15} {q.get('rows_read', 0):>10,} {q.get('rows_written', 0):>9,} {q.get('seconds', 0):>9.2f}   "
            f"{d.get('mode', '-'):<12}{d.get('rows_read', 0):>10,} {d.get('rows_written', 0):>9,} "
            f"{d.get('seconds', 0):>9.2f}"
        )
    q_read, q_written, q_seconds = (db.quiet.total(k) for k in ("rows_read", "rows_written", "seconds"))
    d_read, d_written, d_seconds = (db.daily.total(k) for k in ("rows_read", "rows_written", "seconds"))
    lines.append(
        f"{'total':<15} {q_read:>10,.0f} {q_written:>9,.0f} {q_seconds:>9.2f}   {'':<12}{d_read:>10,.0f} "
        f"{d_written:>9,.0f} {d_seconds:>9.2f}"
    )
    lines.append(
        f"day of change: {change} ({sum(db.change.values()):,} rows changed of {db.first.total('rows_read'):,.0f} "
        f"in the CRM); the daily copy wrote {d_written:,.0f} rows in {d_seconds:.1f} s, a quiet one {q_written:,.0f}"
    )
    return lines


# --- the measured steps, each in a child process ------------------------------------------------------


def _ledger(url: str) -> tuple[int, str]:
    engine = get_engine(url)
    digest = hashlib.md5()
    with engine.connect() as conn:
        rows = sorted(conn.execute(select(M.c.idempotency_key, M.c.status, M.c.reason)).all())
    for row in rows:
        digest.update(repr(tuple(row)).encode())
    return len(rows), digest.hexdigest()


def decide(canonical_url: str, mapped_url: str, as_of: datetime, config: str) -> tuple[Decisions, Decisions]:
    """Every program's decision stages for ``as_of`` on the canonical CRM and on the mapped state
    (``config`` the config folder with its ``sources.yml``), program by program in turn, which of the
    two goes first alternating: both meet the same load on a shared machine."""
    runs = {"canonical": (canonical_url, None), "mapped": (mapped_url, config)}
    scopes, times, cpu = {}, {}, {}
    for label, (url, folder) in runs.items():
        with _config(folder):
            migrate(get_engine(url))
            scopes[label] = list(scopes_for(as_of).values())
        times[label], cpu[label] = dict.fromkeys(DECISIONS, 0.0), 0.0
    for turn in range(len(scopes["canonical"])):
        for label in list(runs)[:: 1 if turn % 2 == 0 else -1]:
            url, folder = runs[label]
            with _config(folder):
                started = time.process_time()
                run_stages(get_engine(url), *scopes[label][turn], times[label])
                cpu[label] += time.process_time() - started
    canonical, mapped = (Decisions(times[label], *_ledger(url), cpu[label]) for label, (url, _f) in runs.items())
    return canonical, mapped


@contextmanager
def _config(folder: str | None) -> Iterator[None]:
    """The project's config folder, or ``folder`` (the mapped run's, with its ``sources.yml``)."""
    saved = os.environ.pop("LIFECYCLE_CONFIG_DIR", None)
    if folder:
        os.environ["LIFECYCLE_CONFIG_DIR"] = folder
    try:
        yield
    finally:
        os.environ.pop("LIFECYCLE_CONFIG_DIR", None)
        if saved is not None:
            os.environ["LIFECYCLE_CONFIG_DIR"] = saved


def copy(source_url: str, state_url: str, config: str) -> Copy:
    """One ``sync_source`` of every entity from the warehouse into the state."""
    os.environ["LIFECYCLE_CONFIG_DIR"] = config
    from lifecycle.config.sources import load_sources
    from lifecycle.engine.sync import sync
    from lifecycle.model.db import source_engine

    state = get_engine(state_url)
    migrate(state)
    source = source_engine(source_url)
    try:
        results = sync(source, state, load_sources(), ENTITIES, shared=False)
    finally:
        source.dispose()
    return Copy({entity: asdict(result) for entity, result in results.items()})


def _count(con: Any, statement: str) -> int:
    row = con.execute(statement).fetchone()
    return int(row[0]) if row else 0


def day_of_change(path: str, as_of: datetime, share: float = CHANGED_CONTACTS) -> dict[str, int]:
    """A day in the warehouse: ``share`` of the users updated (seen again, ``updated_at`` moved) and
    as many new tracks and orders as the last day before ``as_of`` had, a day later."""
    import duckdb

    later = as_of + timedelta(hours=1)
    day = as_of - timedelta(days=1)
    con = duckdb.connect(path)
    try:
        users = _count(con, "SELECT count(*) FROM users")
        updated = max(1, int(users * share))
        con.execute(
            f"UPDATE users SET last_seen_at = TIMESTAMP '{later}', updated_at = TIMESTAMP '{later}' "
            f"WHERE id IN (SELECT id FROM users USING SAMPLE reservoir({updated} ROWS) REPEATABLE (7))"
        )
        before = _count(con, "SELECT count(*) FROM tracks") + _count(con, "SELECT count(*) FROM orders")
        con.execute(
            "INSERT INTO tracks SELECT message_id || '-next', user_id, event, timestamp + INTERVAL 1 DAY, properties "
            f"FROM tracks WHERE timestamp >= TIMESTAMP '{day}'"
        )
        con.execute(
            "INSERT INTO orders SELECT id || '-next', user_id, order_ref, product, amount, ordered_at + INTERVAL 1 DAY "
            f"FROM orders WHERE ordered_at >= TIMESTAMP '{day}'"
        )
        after = _count(con, "SELECT count(*) FROM tracks") + _count(con, "SELECT count(*) FROM orders")
    finally:
        con.close()
    return {"contacts updated": updated, "events added": after - before}


# --- orchestration ---------------------------------------------------------------------------------


def _warehouse_rows(path: str) -> dict[str, int]:
    import duckdb

    con = duckdb.connect(path, read_only=True)
    try:
        names = [row[0] for row in con.execute("SELECT table_name FROM information_schema.tables").fetchall()]
        return {name: _count(con, f"SELECT count(*) FROM {name}") for name in sorted(names)}
    finally:
        con.close()


def bench_state(
    databases: Databases, args: argparse.Namespace, warehouse: Path, config: Path, report: SourceReport
) -> SourceResult:
    """Canonical decisions, then the mapped copies and decisions, on one kind of state database."""
    with databases.fresh("canonical") as canonical_url, databases.fresh("state") as state_url:
        _progress(f"{databases.name}: seeding {args.contacts:,} contacts (canonical)")
        seeded = seed_crm(canonical_url, args.contacts, args.as_of, seed=args.seed)
        if not warehouse.exists():
            _progress("writing the warehouse-shaped DuckDB file")
            started = time.perf_counter()
            engine = get_engine(canonical_url)
            write_warehouse(engine, f"duckdb:///{warehouse}")
            engine.dispose()
            report.warehouse_seconds = time.perf_counter() - started
            report.warehouse = _warehouse_rows(str(warehouse))
        pristine = warehouse.with_suffix(".pristine.duckdb")
        shutil.copyfile(warehouse, pristine)
        try:
            source_url = f"duckdb:///{pristine}"
            _progress(f"{databases.name}: first copy")
            first = in_child(copy, source_url, state_url, str(config))
            _progress(f"{databases.name}: decisions, canonical and mapped in turn")
            canonical, mapped = in_child(decide, canonical_url, state_url, args.as_of, str(config))
            _progress(f"{databases.name}: quiet copy")
            quiet = in_child(copy, source_url, state_url, str(config))
            change = day_of_change(str(pristine), args.as_of)
            _progress(f"{databases.name}: daily copy after {change}")
            daily = in_child(copy, source_url, state_url, str(config))
        finally:
            pristine.unlink(missing_ok=True)
    return SourceResult(
        databases.name,
        databases.version(),
        seeded.elapsed_seconds,
        canonical,
        mapped,
        first,
        quiet,
        daily,
        change,
    )


def mapped_config(work: Path) -> Path:
    """A copy of the project's config folder with the warehouse example's ``sources.yml``."""
    config = work / "config-warehouse"
    shutil.rmtree(config, ignore_errors=True)
    shutil.copytree(PROJECT_ROOT / "config", config)
    (config / "sources.yml").write_text(EXAMPLE_MAPPING.read_text())
    return config


def run(args: argparse.Namespace, kinds: Sequence[str], work: Path) -> SourceReport:
    """``lifecycle bench --source warehouse``: the mapped path on every kind of state database."""
    report = SourceReport(args.contacts, args.as_of, args.seed, machine())
    config = mapped_config(work)
    warehouse = work / "warehouse.duckdb"
    warehouse.unlink(missing_ok=True)
    for databases in usable_databases(kinds, work, args.postgres_url, report):
        report.databases.append(bench_state(databases, args, warehouse, config, report))
    warehouse.unlink(missing_ok=True)
    return report
