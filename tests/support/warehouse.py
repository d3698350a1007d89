"""The same CRM in two shapes: the canonical tables, and a warehouse fed by Segment-style tools.

:func:`canonical_crm` seeds a synthetic CRM and keeps only what a warehouse with consent booleans
can say (the newest consent row per contact, channel and purpose; no ``denied`` rows).
:func:`write_warehouse` (:mod:`lifecycle.devtools.warehouse`) writes that CRM as a warehouse would
hold it, and :data:`WAREHOUSE_MAPPING` is its ``config/sources.yml``, the shipped example.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Engine, and_, delete, func, select

from lifecycle.devtools.seed import seed_crm
from lifecycle.devtools.warehouse import (  # noqa: F401 - the tests' names for the shape
    CARD_STATES,
    CONSENT_COLUMNS,
    DEAL_STAGES,
    EXAMPLE_MAPPING,
    STAGES,
    SUBSCRIPTION_STATES,
    TICKET_STATES,
    segment_name,
    write_warehouse,
)
from lifecycle.model import schema
from lifecycle.model.db import get_engine


def canonical_crm(url: str, contacts: int, as_of: datetime, seed: int = 11) -> Engine:
    """A seeded canonical CRM reduced to what consent booleans can hold."""
    seed_crm(url, contacts, as_of, seed=seed)
    engine = get_engine(url)
    k = schema.consents
    newest = (
        select(k.c.contact_id, k.c.channel, k.c.purpose, func.max(k.c.captured_at).label("at"))
        .group_by(k.c.contact_id, k.c.channel, k.c.purpose)
        .subquery()
    )
    with engine.begin() as conn:
        keep = conn.execute(
            select(k).join(
                newest,
                and_(
                    k.c.contact_id == newest.c.contact_id,
                    k.c.channel == newest.c.channel,
                    k.c.purpose == newest.c.purpose,
                    k.c.captured_at == newest.c.at,
                ),
            )
        ).mappings()
        rows = [dict(r) for r in keep if r["status"] != "denied"]
        conn.execute(delete(k))
        conn.execute(k.insert(), rows)
    return engine


WAREHOUSE_MAPPING = EXAMPLE_MAPPING.read_text()
