"""The run scope: what every stage of one program run shares.

A run is one program at one as-of time (the run's data interval end, never the clock). Stages
take a :class:`RunScope` and decide everything from it, so a run and its re-run decide the same.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.sql.expression import ColumnElement

from lifecycle.config import Policy, Program, segments
from lifecycle.model import schema

E = schema.enrollments


@dataclass(frozen=True)
class RunScope:
    """One program run: its program, the policy, named segments, run id and as-of time."""

    program: Program
    policy: Policy
    catalog: Mapping[str, segments.Segment]
    run_id: str
    as_of: datetime  # naive UTC

    def segment_context(self, contact_id: ColumnElement, *, journey: bool = False) -> segments.Context:
        """A compile context for a segment correlated to ``contact_id``."""
        return segments.Context(
            as_of=self.as_of,
            contact_id=contact_id,
            contacts_in_scope=False,
            catalog=self.catalog,
            enrolled_at=E.c.enrolled_at if journey else None,
            anchor_at=E.c.anchor_at if journey else None,
        )
