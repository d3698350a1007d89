"""Hand-made CRM rows for tests: a contact with sensible defaults and only what a test needs."""

from __future__ import annotations

import itertools
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Engine, insert

from lifecycle.model import schema

_ids = itertools.count(1)


class CrmBuilder:
    """Writes contacts, consents, events and related rows into a CRM database."""

    def __init__(self, engine: Engine, as_of: datetime) -> None:
        self.engine = engine
        self.as_of = as_of

    def _insert(self, table, rows: list[dict[str, Any]]) -> None:
        if rows:
            with self.engine.begin() as conn:
                conn.execute(insert(table), rows)

    def contact(
        self,
        contact_id: str | None = None,
        *,
        consent: dict[str, str] | None = None,
        signed_up_ago: timedelta | None = None,
        **fields: Any,
    ) -> str:
        """Insert a contact; ``consent`` maps channel -> status for marketing (default: email and
        sms granted); ``signed_up_ago`` adds a ``signed_up`` event that long before as-of."""
        contact_id = contact_id or f"t{next(_ids):06d}"
        created = self.as_of - (signed_up_ago or timedelta(days=1))
        row = {
            "contact_id": contact_id,
            "email": f"{contact_id}@example.com",
            "phone": "+14155550100",
            "first_name": "Ada",
            "last_name": "Lovelace",
            "country": "US",
            "timezone": "America/New_York",
            "locale": "en-US",
            "lifecycle_stage": "lead",
            "created_at": created,
            "last_active_at": created,
        } | fields
        self._insert(schema.contacts, [row])
        for channel, status in (consent if consent is not None else {"email": "granted", "sms": "granted"}).items():
            self.consent(contact_id, channel, status)
        if signed_up_ago is not None:
            self.event(contact_id, "signed_up", created)
        return contact_id

    def consent(
        self, contact_id: str, channel: str, status: str, *, at: datetime | None = None, purpose: str = "marketing"
    ) -> None:
        self._insert(
            schema.consents,
            [
                {
                    "contact_id": contact_id,
                    "channel": channel,
                    "purpose": purpose,
                    "status": status,
                    "source": "test",
                    "captured_at": at or self.as_of - timedelta(days=30),
                    "proof": "test fixture",
                }
            ],
        )

    def event(self, contact_id: str, event_type: str, at: datetime, **properties: Any) -> None:
        self._insert(
            schema.events,
            [
                {
                    "event_id": f"e{next(_ids):08d}",
                    "contact_id": contact_id,
                    "event_type": event_type,
                    "occurred_at": at,
                    "properties": properties,
                }
            ],
        )

    def row(self, table_name: str, **fields: Any) -> None:
        self._insert(schema.CRM_TABLES[table_name], [fields])
