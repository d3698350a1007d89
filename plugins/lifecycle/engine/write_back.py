"""Activity write-back: every sent touch posted to the CRM as an activity on the contact, so sales
sees marketing's touches (policy ``write_back``).

A program run's ``write_back`` stage (after its sends, whatever became of them) posts the program's
messages on the policy's channels that went out — the provider accepted them: ``sent`` and what
followed (delivered, opened, clicked, bounced) — sent within ``within`` before the run's as-of time
and not yet written back. Each post carries the message id as its ``Idempotency-Key``, so a post
repeated after a lost answer is recognised by the CRM; each one the CRM took is recorded in
``lifecycle_activity_writebacks`` (migration 0014), so a re-run, a retried task or the next run
posts it no more. Suppressed, capped, held-out, failed and unknown messages are never posted.

A post the endpoint refuses is logged and counted; an endpoint still down or overloaded after the
hook's retries (429, 5xx, no answer) ends the stage, the rest counted as not posted. Neither is
raised: write-back never blocks or fails a send, and the next run tries what was not posted.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Engine, insert, select

from lifecycle.channels.retry import ProviderError, Retryable
from lifecycle.model import schema
from lifecycle.model.ledger import WENT_OUT

log = logging.getLogger(__name__)

M = schema.messages
W = schema.activity_writebacks
ACTIVITY_TYPE = "marketing_touch"
POSTED = "posted"
NOT_POSTED = "not_posted"

Post = Callable[[str, str], str | None]
"""``post(payload, idempotency_key)``: deliver one activity (JSON text); the CRM's id for it, if it
gives one. Raises :class:`~lifecycle.channels.retry.ProviderError` when it did not take it."""


def _iso(moment: datetime) -> str:
    aware = moment if moment.tzinfo else moment.replace(tzinfo=UTC)
    return aware.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def activity(row: Any, program_name: str) -> dict[str, Any]:
    """The activity a sent message becomes: who, on which channel, from which program and step."""
    return {
        "type": ACTIVITY_TYPE,
        "contact_id": row.contact_id,
        "channel": row.channel,
        "program": row.program,
        "step": row.step,
        "template": row.template,
        "subject": f"{program_name}: {row.step} ({row.channel})",
        "sent_at": _iso(row.sent_at),
        "message_id": str(row.message_id),
        "provider_message_id": row.provider_message_id,
    }


def unwritten(engine: Engine, program: str, channels: Sequence[str], since: datetime) -> list[Any]:
    """The program's messages on ``channels`` that went out at or after ``since`` and were not
    written back yet, oldest first."""
    query = (
        select(
            M.c.message_id,
            M.c.contact_id,
            M.c.channel,
            M.c.program,
            M.c.step,
            M.c.template,
            M.c.sent_at,
            M.c.provider_message_id,
        )
        .where(
            M.c.program == program,
            M.c.channel.in_(list(channels)),
            M.c.status.in_(list(WENT_OUT)),
            M.c.sent_at.is_not(None),
            M.c.sent_at >= since,
            ~select(W.c.message_id).where(W.c.message_id == M.c.message_id).exists(),
        )
        .order_by(M.c.sent_at, M.c.message_id)
    )
    with engine.connect() as conn:
        return list(conn.execute(query))


def write_back(
    engine: Engine,
    program: str,
    program_name: str,
    channels: Sequence[str],
    as_of: datetime,
    within: timedelta,
    post: Post,
    clock: Callable[[], datetime] = lambda: datetime.now(UTC).replace(tzinfo=None),
) -> dict[str, int]:
    """Post each unwritten sent message of ``program`` as an activity and record those the CRM
    took; returns ``{"posted": n, "not_posted": m}`` (those not posted are tried by the next run)."""
    counts: Counter[str] = Counter()
    pending = unwritten(engine, program, channels, as_of - within)
    for done, row in enumerate(pending):
        payload = json.dumps(activity(row, program_name), separators=(",", ":"), ensure_ascii=False)
        try:
            activity_id = post(payload, str(row.message_id))
        except Retryable as exc:
            # Down or overloaded through every retry: the rest would wait as long, so they wait for the next run.
            log.warning("Activity write-back stopped at message %s: %s", row.message_id, exc.reason)
            counts[NOT_POSTED] += len(pending) - done
            break
        except (ProviderError, OSError, ValueError) as exc:
            reason = getattr(exc, "reason", None) or type(exc).__name__
            log.warning(
                "Activity of message %s (contact %s) not written back: %s", row.message_id, row.contact_id, reason
            )
            counts[NOT_POSTED] += 1
            continue
        with engine.begin() as conn:
            already = conn.execute(select(W.c.message_id).where(W.c.message_id == row.message_id)).first()
            if already is None:
                conn.execute(
                    insert(W).values(
                        message_id=row.message_id, program=program, activity_id=activity_id, posted_at=clock()
                    )
                )
        counts[POSTED] += 1
    return {POSTED: counts[POSTED], NOT_POSTED: counts[NOT_POSTED]}
