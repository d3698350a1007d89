"""A seeded CRM with a few weekly runs of every shipped program: what the KPI digest and the
Campaigns page have to show in tests."""

from __future__ import annotations

import math
from datetime import datetime, timedelta

from sqlalchemy import Engine

RUN_WEEKS = 3


def seed_with_runs(url: str, as_of: datetime, contacts: int = 2000, weeks: int = RUN_WEEKS) -> Engine:
    """Seed ``contacts`` as of ``as_of``, migrate the engine tables, then run every shipped program
    (dry run) once a week for ``weeks`` weeks ending at ``as_of``; returns the engine."""
    from lifecycle import config
    from lifecycle.devtools.seed import seed_crm
    from lifecycle.model.db import get_engine, migrate
    from tests.support.journey import run_program

    seed_crm(url, contacts, as_of)
    engine = get_engine(url)
    migrate(engine)
    programs, errors = config.load_all_programs()
    assert not errors, f"shipped program files are invalid: {errors}"
    for back in range(weeks - 1, -1, -1):
        for program_id in programs:
            run_program(engine, program_id, as_of - timedelta(weeks=back))
    return engine


def shown_rate(value: float) -> str:
    """How a page shows a rate measurement computed: ``12.3%``, a dash when undefined."""
    return "–" if math.isnan(value) else f"{value * 100:.1f}%"


def shown_points(value: float) -> str:
    """How a page shows a lift or a CI bound: ``+4.2 pts``, a dash when undefined."""
    return "–" if math.isnan(value) else f"{value * 100:+.1f} pts"


def shown_interval(low: float, high: float) -> str:
    """How a page shows a confidence interval: ``-1.0 to +7.4 pts``, a dash when undefined."""
    return "–" if math.isnan(low) or math.isnan(high) else f"{low * 100:+.1f} to {high * 100:+.1f} pts"
