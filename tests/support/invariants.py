"""The outbox's promises, checked on the ledger and the provider sandbox after any fault.

1. Nothing is sent twice: the sandbox accepted each ledger message at most once (an email is
   named by its ``lifecycle_message_id`` custom arg, an SMS by the same parameter in its status
   callback URL), and every message the ledger says went out is one the sandbox accepted.
2. Nothing is lost: every ledger row is in a settled status (gone out, or terminal or retriable
   with a reason), none is left ``sending`` unless the test knows its worker died and was not
   retried yet, and a message the sandbox accepted is never recorded as not sent.
3. Ledger and suppressions agree: every opt-out suppression comes from a recorded provider event
   or unsubscribe about that contact, no message was claimed once its contact's suppression on
   that channel was known, nor once its address's opt-out was (whichever contact row it came
   through), and there is one row per idempotency key and per (program, contact,
   entry, step).
4. Consent (when asked for): no message went out to a contact whose consent for its channel was
   not granted at the message's as-of, nor (when asked for) when it was claimed.

Also here, shared by the fault tests: a program run's stages before sending, a transport that dies
mid-chunk (the fault these guard against most) and signed, replayable SendGrid webhook posts.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Callable, Collection, Mapping, Sequence
from datetime import datetime
from urllib.parse import parse_qs, urlsplit

import httpx
from sqlalchemy import Engine, select

from lifecycle.channels.base import Outbound, SendResult
from lifecycle.channels.providers import ProviderTransport
from lifecycle.engine import dispatch, pipeline
from lifecycle.messages.links import MESSAGE_ID_PARAM
from lifecycle.model import schema
from lifecycle.model.addresses import to_e164

M = schema.messages
GONE_OUT = ("sent", "delivered", "opened", "clicked", "bounced")
SETTLED = (
    *GONE_OUT,
    "dry_run",
    "failed",
    "unknown",
    "suppressed",
    "capped",
    "deferred",
    "held_out",
    "skipped",
    "ready",
)
WAITING = ("ready",)
OPT_OUT_EVENTS = {
    "sms_stop": {"inbound_stop"},
    "hard_bounce": {"bounce"},
    "spam_report": {"spamreport"},
    "unsubscribed": {"unsubscribe", "group_unsubscribe"},
}


def stage_run(engine: Engine, program: str, run_id: str, as_of: datetime, batch_size: int | None = None) -> list[int]:
    """Every stage of a program run before sending (evaluate .. cap, then batches of ``batch_size``,
    default the policy's); returns the batch numbers."""
    scope, programs = pipeline.load_scope(program, run_id, as_of)
    pipeline.evaluate(engine, scope)
    pipeline.enroll_and_exit(engine, scope)
    pipeline.plan(engine, scope)
    pipeline.suppress(engine, scope)
    pipeline.cap(engine, scope, programs)
    return dispatch.prepare_batches(engine, program, run_id, batch_size or scope.policy.send_batch_size)


class WorkerDied(Exception):
    """The send task's process died in the middle of a chunk."""


class DyingTransport(ProviderTransport):
    """Hands the first ``survivors`` messages of a chunk to the provider, then dies before any
    outcome is recorded, as a worker killed mid-chunk would."""

    def __init__(self, survivors: int) -> None:
        super().__init__()
        self.survivors = survivors

    def send(self, channel: str, batch: Sequence[Outbound], still_claimed=None) -> list[SendResult]:
        list(super().send(channel, batch[: self.survivors], still_claimed))
        raise WorkerDied


def post_sendgrid_events(sandbox, webhooks_url: str, events: list[dict]) -> Callable[[], httpx.Response]:
    """A replayable post of ``events`` to the app's SendGrid webhook, signed once with the sandbox's key."""
    body = json.dumps(events).encode()
    headers = {"Content-Type": "application/json", **sandbox.app.signer.headers(str(int(time.time())), body)}
    return lambda: httpx.post(f"{webhooks_url}/webhooks/sendgrid", content=body, headers=headers)


def deliveries(sandbox) -> Counter[int]:
    """How many times the sandbox accepted each ledger message, by message id."""
    emails = [int(record["custom_args"][MESSAGE_ID_PARAM]) for record in sandbox.sendgrid_messages()]
    texts = [
        int(parse_qs(urlsplit(record["status_callback"]).query)[MESSAGE_ID_PARAM][0])
        for record in sandbox.twilio_messages()
        if record["direction"] != "inbound"
    ]
    return Counter(emails + texts)


def _rows(conn, table) -> list:
    return list(conn.execute(select(table)).mappings())


def sent_twice(ledger: list, accepted: Counter[int]) -> list[str]:
    """Invariant 1: accepted at most once, and nothing the ledger calls gone out is unknown to the provider."""
    problems = [f"message {mid} reached the provider {n} times" for mid, n in accepted.items() if n > 1]
    problems += [
        f"message {r['message_id']} is {r['status']} in the ledger but the provider never took it"
        for r in ledger
        if r["status"] in GONE_OUT and r["message_id"] not in accepted
    ]
    return problems


def lost(ledger: list, accepted: Counter[int], events: list, in_flight: Collection[int]) -> list[str]:
    """Invariant 2: settled statuses with reasons, no stray ``sending``, accepted never recorded as not sent."""
    failed_by_provider = {
        e["message_id"] for e in events if e["event_type"] in {"dropped", "status_failed", "status_undelivered"}
    }
    problems = []
    for r in ledger:
        mid, status = r["message_id"], r["status"]
        if status == "sending" and mid in in_flight:
            continue
        if status not in SETTLED:
            problems.append(f"message {mid} is left {status!r}")
        elif status not in GONE_OUT and status not in WAITING and not r["reason"]:
            problems.append(f"message {mid} is {status} without a reason")
        if (
            mid in accepted
            and status not in (*GONE_OUT, "unknown", "sending")
            and not (status == "failed" and mid in failed_by_provider)
        ):
            problems.append(f"message {mid} reached the provider but the ledger says {status}")
    return problems


def _address(contact: Mapping | None, channel: str) -> str | None:
    if contact is None:
        return None
    if channel == "sms":
        return to_e164(contact["phone"], contact["country"])
    return (contact["email"] or "").strip().lower() or None


def inconsistent(
    ledger: list, accepted: Counter[int], suppressions: list, events: list, contacts: Mapping[str, Mapping]
) -> list[str]:
    """Invariant 3: opt-outs have their event, nothing claimed after a known suppression, unique keys."""
    by_event = {(e["provider"], e["event_id"]): e for e in events}
    problems, known_at = [], {}
    for s in suppressions:
        provider, _, event_id = (s["proof"] or "").partition(":")
        event = by_event.get((provider, event_id))
        known_at[s["suppression_id"]] = event["received_at"] if event else s["created_at"]
        if s["reason"] not in OPT_OUT_EVENTS:
            continue
        if event is None or event["event_type"] not in OPT_OUT_EVENTS[s["reason"]]:
            problems.append(f"suppression {s['reason']} of {s['contact_id']} has no matching event ({s['proof']})")
        elif event["contact_id"] != s["contact_id"] and _address(
            contacts.get(event["contact_id"]), s["channel"]
        ) != _address(contacts.get(s["contact_id"]), s["channel"]):
            problems.append(f"suppression {s['reason']} of {s['contact_id']} comes from another contact's event")
    for r in ledger:
        if r["claimed_at"] is None or not (r["status"] in GONE_OUT or r["message_id"] in accepted):
            continue
        address = _address(contacts.get(r["contact_id"]), r["channel"])
        for s in suppressions:
            listed = s["contact_id"] == r["contact_id"] or (s["address"] is not None and s["address"] == address)
            if listed and s["channel"] == r["channel"] and known_at[s["suppression_id"]] < r["claimed_at"]:
                problems.append(
                    f"message {r['message_id']} was claimed after {r['contact_id']} was suppressed "
                    f"({s['reason']}) on {r['channel']}"
                )
    keys = Counter(r["idempotency_key"] for r in ledger)
    steps = Counter((r["program"], r["contact_id"], r["entry"], r["step"]) for r in ledger)
    problems += [f"idempotency key {k} has {n} rows" for k, n in keys.items() if n > 1]
    problems += [f"{k} was planned {n} times" for k, n in steps.items() if n > 1]
    return problems


def without_consent(
    ledger: list, accepted: Counter[int], consents: list, as_of: Mapping[int, datetime], purpose: str
) -> list[str]:
    """Invariant 4: every message that went out had granted consent at its as-of (default: ``due_at``)."""
    problems = []
    for r in ledger:
        if not (r["status"] in GONE_OUT or r["message_id"] in accepted):
            continue
        when = as_of.get(r["message_id"], r["due_at"])
        in_force = max(
            (
                c
                for c in consents
                if (c["contact_id"], c["channel"], c["purpose"]) == (r["contact_id"], r["channel"], purpose)
                and c["captured_at"] <= when
            ),
            key=lambda c: c["captured_at"],
            default=None,
        )
        if in_force is None or in_force["status"] != "granted":
            status = in_force["status"] if in_force else "no consent"
            problems.append(
                f"message {r['message_id']} went to {r['contact_id']} by {r['channel']} with {status} "
                f"at {when:%Y-%m-%d %H:%M}"
            )
    return problems


def assert_outbox_invariants(
    engine: Engine,
    sandbox,
    *,
    in_flight: Collection[int] = (),
    consent_as_of: Mapping[int, datetime] | None = None,
    consent_at_claim: bool = False,
    purpose: str = "marketing",
) -> Counter[str]:
    """Check invariants 1-3 (and 4 when ``consent_as_of`` is given: consent at those moments, and
    with ``consent_at_claim`` also as consent stood when each message was claimed); returns the
    ledger's statuses.

    ``in_flight`` names messages a test left ``sending`` on purpose (a killed worker not yet retried).
    """
    accepted = deliveries(sandbox)
    with engine.connect() as conn:
        ledger = _rows(conn, M)
        events = _rows(conn, schema.provider_events)
        suppressions = _rows(conn, schema.suppressions)
        contacts = {c["contact_id"]: c for c in _rows(conn, schema.contacts)}
        consents = _rows(conn, schema.consents) if consent_as_of is not None else []
    problems = sent_twice(ledger, accepted) + lost(ledger, accepted, events, in_flight)
    problems += inconsistent(ledger, accepted, suppressions, events, contacts)
    if consent_as_of is not None:
        problems += without_consent(ledger, accepted, consents, consent_as_of, purpose)
        if consent_at_claim:
            # As the CRM recorded consent by then. Rows that feedback appends carry the provider's
            # event time (whole seconds), which can read a moment before the claim of the very
            # message they are about: those are invariant 3's, by when the event was received.
            claimed = {r["message_id"]: r["claimed_at"] for r in ledger if r["claimed_at"] is not None}
            recorded = [c for c in consents if c["proof"] and ":" not in c["proof"]]
            problems += without_consent(ledger, accepted, recorded, claimed, purpose)
    assert not problems, "outbox invariants broken:\n" + "\n".join(problems)
    return Counter(r["status"] for r in ledger)


def stale_claims(engine: Engine) -> set[int]:
    """Messages left ``sending`` (claimed by a worker that never recorded their outcome)."""
    with engine.connect() as conn:
        return set(conn.execute(select(M.c.message_id).where(M.c.status == "sending")).scalars())
