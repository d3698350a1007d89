"""The Campaigns page's render time on the benchmark's database (``lifecycle bench``), and a
page-only benchmark (``python -m lifecycle.devtools.bench_page``) that seeds, runs every program
once as the benchmark does (sending to the sandbox) and measures the page, without the floors and
the naive baseline.

Measured is :func:`lifecycle.web.campaigns.campaigns_page`, the page's HTML as the app serves it
(the Airflow API's "which DAGs are paused" round trip and the HTTP layer are not included):

- **cold**: no stored figures (a fresh install, or every program with a new run): the page
  computes and stores every program's figures (:func:`lifecycle.reporting.figures.current`) —
  the work the runs' ``log_kpis`` do, one program each, in the background;
- **warm**: the figures stored, as after the runs: the page reads ``lifecycle_campaign_figures``
  (the median of :data:`WARM_VIEWS` views; the slowest is reported too). The warm page must be the
  cold one apart from its time stamps.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import uuid
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import delete

from lifecycle.model import schema
from lifecycle.model.db import get_engine, utc_naive

WARM_VIEWS = 5
WARM_TARGET = 1.0
"""Seconds: a warm page (stored figures) renders in under this."""


@dataclass
class PageTimes:
    """The Campaigns page's render times on one database."""

    cold: float
    warm: float
    warm_max: float
    programs: int
    same_page: bool


def strip_stamps(page: str) -> str:
    """The page without its "computed" and "page rendered" times, which differ between views."""
    import re

    page = re.sub(r'<span class="computed-at"[^>]*>computed [^<]*</span>', "", page)
    return re.sub(r"page rendered \d{4}-\d\d-\d\d \d\d:\d\d UTC", "", page)


def measure_page(url: str) -> PageTimes:
    """Cold then warm renders of the Campaigns page on the database at ``url``."""
    from lifecycle.web.campaigns import campaigns_page

    engine = get_engine(url)
    with engine.begin() as conn:
        conn.execute(delete(schema.campaign_figures))
    started = time.perf_counter()
    cold_page = campaigns_page(engine)
    cold = time.perf_counter() - started
    warm: list[float] = []
    page = cold_page
    for _ in range(WARM_VIEWS):
        started = time.perf_counter()
        page = campaigns_page(engine)
        warm.append(time.perf_counter() - started)
    programs = page.count('class="computed-at"')
    return PageTimes(cold, statistics.median(warm), max(warm), programs, strip_stamps(page) == strip_stamps(cold_page))


def describe(page: PageTimes) -> str:
    """One line for the benchmark's report."""
    return (
        f"Campaigns page: cold {page.cold:.2f} s (computes and stores {page.programs} programs' figures), "
        f"warm {page.warm:.3f} s (stored figures; median of {WARM_VIEWS}, slowest {page.warm_max:.3f} s); "
        f"same page: {'yes' if page.same_page else 'NO'}"
    )


def target(database: str, page: PageTimes) -> Any:
    """The warm render's row in the benchmark's targets table."""
    from lifecycle.devtools.bench import Target

    return Target(
        database, "Campaigns page, warm (stored figures)", page.warm, WARM_TARGET, f"{page.warm:.3f} s", "< 1 s"
    )


# --- the page-only benchmark ---------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    """Seed, run every program once (sending to the sandbox, as ``lifecycle bench`` does), then
    measure the page; prints the engine's time and the page's."""
    from lifecycle.devtools import bench
    from lifecycle.devtools.local import provider_connections
    from lifecycle.sandbox import SandboxServer

    parser = argparse.ArgumentParser(prog="bench_page", description=__doc__.split("\n\n")[0])
    parser.add_argument("--contacts", type=int, default=bench.DEFAULT_CONTACTS)
    parser.add_argument("--db", choices=("sqlite", "postgres"), default="postgres")
    parser.add_argument("--postgres-url", default=bench.DEFAULT_POSTGRES)
    parser.add_argument("--as-of", default=bench.DEFAULT_AS_OF)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args(argv)
    args.as_of = utc_naive(datetime.fromisoformat(args.as_of))
    work = Path(tempfile.mkdtemp(prefix="lifecycle-bench-page-"))
    report = bench.Report(args.contacts, 0, args.as_of, args.seed, bench.machine(), {}, [])
    with SandboxServer() as sandbox:
        env = bench._airflow_env(work) | provider_connections(sandbox, bench.PUBLIC_BASE_URL, uuid.uuid4().hex)
        with bench._environment(env):
            for databases in bench.usable_databases((args.db,), work, args.postgres_url, report):
                with bench.seeded_run(databases, "page", args.contacts, args, sandbox.url) as (url, run):
                    bench._progress(f"{databases.name}: measuring the Campaigns page")
                    page = bench.in_child(measure_page, url)
                print(f"Lifecycle page benchmark: {args.contacts:,} contacts, {databases.name} {databases.version()}")
                print("Machine: " + ", ".join(f"{k} {v}" for k, v in report.machine.items()))
                print(f"load average at the end: {Path('/proc/loadavg').read_text().strip()}")
                print(f"seed {run.seed_seconds:.1f} s; engine {run.seconds:.1f} s ({run.sent:,} sent)")
                print(describe(page))
                t = target(databases.name, page)
                print(f"{t.database:<12}{t.name:<42}{t.shown:>14}{t.goal:>10}  {'PASS' if t.passed else 'MISS'}")
    return 0 if page.same_page else 1


if __name__ == "__main__":
    raise SystemExit(main())
