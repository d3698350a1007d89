"""One contact's story across every program, for the question support asks first: "why didn't she
get the renewal reminder?"

Read by contact id: the contact (addresses masked), every enrollment (entered, left and why, its
group), every planned message (step, channel, status and the reason it did not go), the consent
in force per channel and purpose with what the policy's legal basis makes of it, and every
suppression that stops the contact — its own, and those of another contact row with the same
normalised address (an opt-out, bounce or spam report holds for the address). Addresses are only
ever shown masked; nothing here logs.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine, and_, or_, select

from lifecycle import config
from lifecycle.config import Policy, Program
from lifecycle.model import channels, schema
from lifecycle.model.ledger import ADDRESS_LISTS
from lifecycle.reporting.performance import IN_PROGRESS, OUTCOME_OF, OUTCOMES

C, E, M, S, CONSENT = schema.contacts, schema.enrollments, schema.messages, schema.suppressions, schema.consents
OUTCOME_LABELS = {o.key: o.label for o in OUTCOMES}
SENDS_ON = {"explicit": ("granted",), "implied": ("granted", None)}
"""Per legal basis, the newest consent statuses (None: no row) under which a message may go."""


def mask(address: str | None) -> str:
    """An address a person can recognise but not read: ``a•••@example.com``, ``+1•••••••00``."""
    if not address:
        return "none"
    if "@" in address:
        local, _, domain = address.rpartition("@")
        return f"{local[:1]}•••@{domain}"
    keep = 2 if len(address) > 6 else 0
    return address[:2] + "•" * max(len(address) - 2 - keep, 1) + (address[-keep:] if keep else "")


@dataclass(frozen=True)
class Timeline:
    """A contact's timeline: ``contact`` is None when the CRM no longer holds the id."""

    contact_id: str
    contact: dict[str, Any] | None
    enrollments: list[dict[str, Any]]
    messages: list[dict[str, Any]]
    consents: list[dict[str, Any]]
    suppressions: list[dict[str, Any]]


def _name(programs: Mapping[str, Program], program_id: str) -> str:
    return programs[program_id].name if program_id in programs else program_id


def _consents(engine: Engine, contact_id: str, policy: Policy) -> list[dict[str, Any]]:
    newest: dict[tuple[str, str], Any] = {}
    with engine.connect() as conn:
        for consent in conn.execute(
            select(CONSENT).where(CONSENT.c.contact_id == contact_id).order_by(CONSENT.c.captured_at)
        ).mappings():
            newest[(consent["channel"], consent["purpose"])] = consent
    result = []
    for channel in channels.names():
        for purpose in config.PURPOSES:
            row = newest.get((channel, purpose))
            basis = policy.basis_for(purpose)
            status = row["status"] if row is not None else None
            result.append(
                {
                    "channel": channel,
                    "purpose": purpose,
                    "status": status or "no consent row",
                    "captured_at": row["captured_at"] if row is not None else None,
                    "source": row["source"] if row is not None else "",
                    "basis": basis,
                    "may_send": status in SENDS_ON[basis],
                }
            )
    return result


def _suppressions(engine: Engine, contact_id: str, addresses: Mapping[str, str | None]) -> list[dict[str, Any]]:
    same_address = [
        and_(S.c.channel == channel, S.c.address == address, S.c.reason.in_(ADDRESS_LISTS))
        for channel, address in addresses.items()
        if address
    ]
    query = select(S).where(or_(S.c.contact_id == contact_id, *same_address)).order_by(S.c.created_at)
    with engine.connect() as conn:
        return [
            {
                "channel": row["channel"],
                "reason": row["reason"],
                "source": row["source"],
                "created_at": row["created_at"],
                "via": "this contact" if row["contact_id"] == contact_id else "another contact with the same address",
            }
            for row in conn.execute(query).mappings()
        ]


def contact_timeline(
    engine: Engine, contact_id: str, programs: Mapping[str, Program], policy: Policy | None = None
) -> Timeline | None:
    """The contact's timeline, or None when neither the CRM nor the ledger knows the id."""
    policy = policy or config.load_policy()
    addresses: dict[str, str | None] = {}
    with engine.connect() as conn:
        address_columns = [channels.get(name).address.of(C).label(name) for name in channels.names()]
        found = conn.execute(
            select(C.c.lifecycle_stage, C.c.country, C.c.timezone, *address_columns).where(C.c.contact_id == contact_id)
        ).first()
        enrollments = conn.execute(
            select(E).where(E.c.contact_id == contact_id).order_by(E.c.enrolled_at, E.c.enrollment_id)
        ).mappings()
        enrolled = [
            {
                "program": _name(programs, row["program"]),
                "program_id": row["program"],
                "entry": row["entry"],
                "state": row["state"],
                "enrolled_at": row["enrolled_at"],
                "exited_at": row["exited_at"],
                "exit_reason": row["exit_reason"],
                "group": row["group"],
                "variant": row["variant"],
            }
            for row in enrollments
        ]
        messages = [
            {
                "program": _name(programs, row["program"]),
                "step": row["step"],
                "channel": row["channel"],
                "planned_channel": row["planned_channel"],
                "channel_reason": row["channel_reason"],
                "status": row["status"],
                "outcome": OUTCOME_LABELS[OUTCOME_OF.get(row["status"], IN_PROGRESS)],
                "reason": row["reason"],
                "planned_at": row["planned_at"],
                "due_at": row["due_at"],
                "sent_at": row["sent_at"],
            }
            for row in conn.execute(
                select(M).where(M.c.contact_id == contact_id).order_by(M.c.planned_at, M.c.step_index, M.c.message_id)
            ).mappings()
        ]
    if found is None and not enrolled and not messages:
        return None
    contact = None
    if found is not None:
        addresses = {name: getattr(found, name) for name in channels.names()}
        contact = {
            "stage": found.lifecycle_stage,
            "country": found.country,
            "timezone": found.timezone,
            "addresses": {name: mask(address) for name, address in addresses.items()},
        }
    return Timeline(
        contact_id=contact_id,
        contact=contact,
        enrollments=enrolled,
        messages=messages,
        consents=_consents(engine, contact_id, policy),
        suppressions=_suppressions(engine, contact_id, addresses),
    )
