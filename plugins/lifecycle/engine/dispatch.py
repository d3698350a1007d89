"""Sending from the outbox: batch assignment, atomic claims, rendering, and recording outcomes.

The ledger is the outbox. A message is claimed (``ready`` -> ``sending``) in a committed
transaction before any provider call, and its outcome is written right after. A message found
still ``sending`` by a later attempt may or may not have reached the provider, so it becomes
``unknown`` and is never resent blindly. If the attempt that claimed it was in fact still alive
(two send tasks on one batch), the answer it records replaces that guess.

Only a channel whose provider can be asked about a message (``reconcilable``: SMS, through
Twilio) can have it go back to ``ready`` (the provider does not hold it, and the claim is older
than :data:`CLAIM_LEASE`). An attempt that is still alive renews the claim before every provider
attempt on a channel that asks for it (``renews_claim``: SMS) and gives the message up when the
claim is gone, so a slow live worker and the attempt that took its messages for stale never both
send one. Which channel does what is its descriptor's to say (:mod:`lifecycle.channels.registry`).
"""

from __future__ import annotations

import logging
import time
import uuid
from collections import Counter
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from contextlib import suppress
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from itertools import chain
from typing import Any

from sqlalchemy import Connection, Engine, and_, bindparam, case, func, literal, or_, select, true, update
from sqlalchemy.sql.expression import ColumnElement

from lifecycle.channels import registry
from lifecycle.channels.base import MARKETING, ClaimCheck, Outbound, Reconciler, SendResult, Subscription, Transport
from lifecycle.config import QuietHours, RegionBasis
from lifecycle.engine.quiet_hours import quiet_until
from lifecycle.engine.suppression import claim_reasons, consent_rules, topic_rules
from lifecycle.messages.context import MessageData, crm_columns, read_crm, template_context
from lifecycle.messages.links import LinkBuilder
from lifecycle.messages.rendering import RenderError, render
from lifecycle.model import schema
from lifecycle.model.ledger import STILL_CLAIMED, CapReason, OutcomeReason, Status

log = logging.getLogger(__name__)

M = schema.messages
C = schema.contacts
A = schema.accounts
E = schema.enrollments

# A request in flight when a worker died can still land at the provider until its timeout (30 s in
# the hooks) has passed, so "not found" only proves "never sent" once the claim is older than this.
CLAIM_LEASE = timedelta(seconds=60)
# Our clock and the provider's differ a little, and Twilio dates have whole seconds.
CLOCK_SKEW = timedelta(minutes=1)
# Outcomes are written as answers come, at most this many (or this many seconds) at a time.
RECORD_EVERY = 25
RECORD_WITHIN = 0.25
# A claimed message whose outcome its claimer may still record.
_STILL_CLAIMED = or_(*(and_(M.c.status == s, M.c.reason == r if r else true()) for s, r in STILL_CLAIMED.items()))


def _now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def unassigned(program: str) -> ColumnElement[bool]:
    """The program's ready messages no run has taken to send yet: what its next send takes."""
    return and_(M.c.program == program, M.c.status == Status.READY, M.c.send_run_id.is_(None))


def prepare_batches(
    engine: Engine, program: str, run_id: str, batch_size: int, limit: int | None = None, *, adopt: bool = True
) -> list[int]:
    """Assign this run's messages to numbered batches; returns the batch numbers.

    A run takes the program's ready messages no run has taken yet, and adopts what earlier runs left
    behind: ready messages of a run that stopped before sending them, and claims nobody is left to
    settle (see :func:`_unsettled`), which its send task then reconciles or records ``unknown``. So
    no message waits for a retry that a killed run will never make. Idempotent: messages already
    assigned to this run keep their batch, new ones are appended. ``limit`` caps how many messages a
    (manual) run takes; the rest wait for the next run. ``adopt=False`` (a due-steps sweep, which
    may run beside its program's run) takes only messages no run has taken, never another run's.
    A message is taken by one run only, even when two prepare at once: the update checks again
    that the row is still free to take.
    """
    with engine.begin() as conn:
        # Scheduled Airflow run ids name only the logical date, so two programs' runs at the same
        # time share one: a run's batches are its program's messages under its run id.
        mine = _in_run(run_id, program)
        taken = conn.execute(select(M.c.batch).where(mine).distinct()).scalars().all()
        already = conn.execute(select(M.c.message_id).where(mine)).scalars().all()
        room = None if limit is None else max(limit - len(already), 0)
        order = (M.c.priority.desc(), M.c.message_id)
        left_behind = and_(M.c.send_run_id != run_id, or_(M.c.status == Status.READY, _unsettled(_now() - CLAIM_LEASE)))
        free = or_(unassigned(program), and_(M.c.program == program, left_behind)) if adopt else unassigned(program)
        ready = (
            select(M.c.message_id, func.row_number().over(order_by=order).label("position"))
            .where(free)
            .order_by(*order)
        )
        if room is not None:
            ready = ready.limit(room)
        ranked = ready.subquery()
        start = max(taken, default=-1) + 1
        # One statement numbers them all (position p goes to batch start + (p - 1) / size, integer
        # division): a row-by-row update costs a round trip per message on PostgreSQL.
        batch = literal(start) + (ranked.c.position - 1).op("/", precedence=8)(batch_size)
        assigned = conn.execute(
            update(M).where(M.c.message_id == ranked.c.message_id, free).values(send_run_id=run_id, batch=batch)
        ).rowcount
        return sorted(set(taken) | set(range(start, start + -(-assigned // batch_size))))


@dataclass(frozen=True)
class Claimed(MessageData):
    """A claimed message: what its templates are rendered from, plus what addressing and the claim need."""

    message_id: int
    idempotency_key: str
    channel: str
    template: str
    claimed_at: datetime | None = None
    claim_token: str | None = None
    problem: str | None = None
    subscription: Subscription = MARKETING


def _in_run(run_id: str, program: str | None) -> ColumnElement[bool]:
    """The messages a run sends: its send run id, of its program (two programs' scheduled runs at
    the same time have the same Airflow run id); ``None`` is any program (a caller of one program)."""
    mine = M.c.send_run_id == run_id
    return mine if program is None else and_(mine, M.c.program == program)


def _in_batch(run_id: str, batch: int, program: str | None = None) -> ColumnElement[bool]:
    return and_(_in_run(run_id, program), M.c.batch == batch)


def load_messages(conn: Connection, where: ColumnElement[bool]) -> list[Claimed]:
    """The ledger messages matching ``where`` with what rendering and addressing need."""
    rows = conn.execute(
        select(
            M.c.message_id,
            M.c.idempotency_key,
            M.c.program,
            M.c.step,
            M.c.channel,
            M.c.template,
            M.c.variant,
            M.c.claimed_at,
            M.c.claim_token,
            *crm_columns(C, A, E.c.trigger),
        )
        .select_from(
            M.outerjoin(C, C.c.contact_id == M.c.contact_id)
            .outerjoin(A, A.c.account_id == C.c.account_id)
            .outerjoin(E, E.c.enrollment_id == M.c.enrollment_id)
        )
        .where(where)
        .order_by(M.c.message_id)
    ).mappings()
    claimed: dict[int, Claimed] = {}
    for r in rows:
        if r["message_id"] in claimed:
            claimed[r["message_id"]] = replace(claimed[r["message_id"]], problem=OutcomeReason.AMBIGUOUS_CONTACT)
            continue
        contact, account, trigger, problem = read_crm(r)
        claimed[r["message_id"]] = Claimed(
            message_id=r["message_id"],
            idempotency_key=r["idempotency_key"],
            program=r["program"],
            step=r["step"],
            channel=r["channel"],
            template=r["template"],
            variant=r["variant"],
            contact=contact,
            account=account,
            trigger=trigger,
            claimed_at=r["claimed_at"],
            claim_token=r["claim_token"],
            problem=problem,
        )
    return list(claimed.values())


@dataclass(frozen=True)
class SendRules:
    """What a batch's messages are checked against again when each is claimed, as things stand
    then: consent under the program's purpose and the policy's legal basis for it (``explicit`` or
    ``implied``; the contact's region's, where the policy has regions), an opt-out of the program's
    topic, and the channels' quiet hours in the recipient's zone (a run may execute hours
    after its as-of). ``at`` fixes the moment (a simulated run's as-of: its world has no later
    rows yet); left out, it is the wall clock at the claim."""

    purpose: str
    basis: str
    quiet_hours: Mapping[str, QuietHours] = field(default_factory=dict)
    at: datetime | None = None
    # Channel -> the regions' bases for the purpose (``Policy.region_bases``); none: ``basis`` for all.
    regions: Mapping[str, Sequence[RegionBasis]] = field(default_factory=dict)
    # The program's topic a contact may have opted out of since planning.
    topic: str | None = None


def quiet_hours_clock() -> datetime:
    """The moment quiet hours are read at when a message goes out: the wall clock (naive UTC)."""
    return _now()


def _withhold_listed(
    conn: Connection,
    where: ColumnElement[bool],
    channels: Collection[str],
    service_programs: Collection[str],
    rules: SendRules | None,
) -> None:
    """Ready messages that must no longer go are suppressed with the reason, not claimed: their
    contact joined a suppression list for their channel since planning (an opt-out or a bounce that
    came in between; a marketing unsubscribe does not stop a message of one of
    ``service_programs``), or, with ``rules``, the consent in force now no longer allows them (a
    withdrawal captured after the run's as-of, or a re-run of an old date for someone who withdrew
    since). ``channels``: those of the messages ``where`` selects (no statement for the others).

    One statement per channel: a message takes the first of its channel's reasons that holds, in
    their order, as one update per reason in turn would give it."""
    now = _now()
    for channel in registry.names():
        if channel not in channels:
            continue
        reasons = claim_reasons(channel, service_programs)
        if rules is not None:
            at = rules.at or now
            reasons += topic_rules(rules.topic, at)
            if registry.get(channel).consent:
                reasons += consent_rules(channel, rules.purpose, rules.basis, at, rules.regions.get(channel, ()))
        if not reasons:
            continue
        holds = [(reason.predicate(M.c.contact_id), reason.name) for reason in reasons]
        conn.execute(
            update(M)
            .where(where, M.c.status == Status.READY, M.c.channel == channel, or_(*(p for p, _name in holds)))
            .values(status=Status.SUPPRESSED, reason=case(*holds), updated_at=now)
        )


def claim(
    engine: Engine,
    run_id: str,
    batch: int,
    size: int,
    service_programs: Collection[str] = (),
    rules: SendRules | None = None,
    program: str | None = None,
) -> list[Claimed]:
    """Atomically move up to ``size`` ready messages of the batch to ``sending`` and load them
    (after withholding those whose contact is now on a suppression list that stops them: every
    list for a marketing message, all but the marketing-only ones for a message of one of
    ``service_programs``). ``program``: the batch's program, which the run id alone may not tell.

    Only the chunk about to be claimed is checked, in the claim's transaction: each message is
    checked as it is claimed (the rest of the batch when its own chunk comes), and the check costs
    the chunk, not the batch left. Empty only when the batch has no ready message left."""
    token = uuid.uuid4().hex
    with engine.begin() as conn:
        while True:
            chosen = conn.execute(
                select(M.c.message_id, M.c.channel)
                .where(_in_batch(run_id, batch, program), M.c.status == Status.READY)
                .order_by(M.c.message_id)
                .limit(size)
                # PostgreSQL: a concurrent claimer takes the next rows instead of queueing behind these
                # and finding them gone (SQLite, which locks the whole file, renders no clause).
                .with_for_update(skip_locked=True)
            ).all()
            if not chosen:
                return []
            picked = M.c.message_id.in_([row.message_id for row in chosen])
            _withhold_listed(conn, picked, {row.channel for row in chosen}, service_programs, rules)
            # Still ready: not withheld, and (SQLite, which locks nothing until it writes) not taken
            # by another claimer since they were chosen. None left: choose again.
            taken = conn.execute(
                update(M)
                .where(picked, M.c.status == Status.READY)
                .values(status=Status.SENDING, claim_token=token, claimed_at=_now(), attempts=M.c.attempts + 1)
            ).rowcount
            if taken:
                break
        # The batch's index finds the claimed rows; the token alone has none and would scan the ledger.
        return load_messages(
            conn, and_(_in_batch(run_id, batch, program), M.c.status == Status.SENDING, M.c.claim_token == token)
        )


def _claimed_at(item: Claimed) -> datetime:
    """When a message found ``sending`` was claimed (every claim records it)."""
    if item.claimed_at is None:
        raise ValueError(f"message {item.message_id} is sending but has no claim time")
    return item.claimed_at


def _held_provider_ids(engine: Engine, stale: Sequence[Claimed]) -> set[str]:
    """Provider ids the ledger holds for messages on reconcilable channels sent since the oldest
    stale claim (give or take the clock skew): reconciliation must not take another message's for a
    stale one."""
    oldest = min(_claimed_at(item) for item in stale) - CLOCK_SKEW
    reconcilable = _reconcilable()
    with engine.connect() as conn:
        held = select(M.c.provider_message_id).where(
            M.c.channel.in_(reconcilable), M.c.sent_at >= oldest, M.c.provider_message_id.is_not(None)
        )
        return set(conn.execute(held).scalars())


def _reconcilable() -> list[str]:
    return [name for name in registry.names() if registry.get(name).reconcilable]


def _unsettled(lease_over: datetime) -> ColumnElement[bool]:
    """Claimed messages whose outcome nobody is left to record: ``sending`` past the claim lease (the
    attempt that claimed them stopped: a killed run's retries never come, since each new run has a
    new run id), or ``unknown`` on a channel the provider can be asked about (SMS), to be looked up
    again until settled rather than left ``unknown`` because an earlier look came within the lease."""
    return or_(
        and_(M.c.status == Status.SENDING, M.c.claimed_at < lease_over),
        and_(M.c.status == Status.UNKNOWN, M.c.reason == OutcomeReason.STALE_CLAIM, M.c.channel.in_(_reconcilable())),
    )


def recover_stale_claims(
    engine: Engine,
    run_id: str,
    batch: int,
    transport: Transport,
    build: Callable[[Claimed], Outbound],
    program: str | None = None,
) -> Counter:
    """Settle the batch's messages that earlier attempts left claimed: their outcome is unknown.

    Messages on a reconcilable channel (SMS) are looked up at the provider when the transport can
    (a :class:`~lifecycle.channels.base.Reconciler`): found means sent; not found after the claim
    lease means the provider never took it, so it goes back to ``ready`` in this batch, to be sent
    now. A provider message the ledger already holds for another message is never taken for a stale
    one. Everything else becomes (or stays) ``unknown`` with the reason, and is never resent blindly.
    """
    lease_over = _now() - CLAIM_LEASE
    # The batch's own ``sending`` messages are stale whatever their age: this task is the retry of
    # the attempt that claimed them.
    own = or_(M.c.status == Status.SENDING, _unsettled(lease_over))
    with engine.connect() as conn:
        stale = load_messages(conn, and_(_in_batch(run_id, batch, program), own))
    if not stale:
        return Counter()
    reconciler = transport if isinstance(transport, Reconciler) else None
    taken = _held_provider_ids(engine, stale) if reconciler is not None else set()
    results: list[SendResult] = []
    retry: list[int] = []
    for item in stale:
        if (
            registry.get(item.channel).reconcilable
            and reconciler is not None
            and item.contact["contact_id"] is not None
        ):
            try:
                outbound = build(item)
            except RenderError:
                outbound = None
            if outbound is not None:
                (found,) = reconciler.reconcile(item.channel, [outbound], since=_claimed_at(item), exclude=taken)
                if found.provider_message_id:
                    taken.add(found.provider_message_id)
                not_found = found.status == Status.FAILED and found.reason == OutcomeReason.NOT_FOUND_AT_PROVIDER
                if not_found and _claimed_at(item) < lease_over:
                    retry.append(item.message_id)
                    continue
                if not not_found:
                    results.append(found)
                    continue
        results.append(SendResult(item.message_id, Status.UNKNOWN, reason=OutcomeReason.STALE_CLAIM))
    requeued = 0
    if retry:
        with engine.begin() as conn:
            # A claim renewed since it was read belongs to a live attempt: it stays with that attempt.
            requeued = conn.execute(
                update(M)
                .where(M.c.message_id.in_(retry), _STILL_CLAIMED, M.c.claimed_at < lease_over)
                .values(status=Status.READY, reason=None, claim_token=None)
            ).rowcount
    tokens = {item.message_id: item.claim_token for item in stale}
    counts = record_results(engine, results, simulate=False, tokens=tokens)
    counts["requeued"] += requeued
    return counts


def renew_claim(engine: Engine, message_id: int, token: str | None) -> bool:
    """Whether ``token`` still holds the message's claim; if so the claim's lease starts again.

    A claim another attempt marked ``unknown`` is still held: that attempt will not resend it."""
    with engine.begin() as conn:
        held = conn.execute(
            update(M)
            .where(M.c.message_id == message_id, M.c.claim_token == token, _STILL_CLAIMED)
            .values(claimed_at=_now())
        ).rowcount
    return held == 1


def render_outbound(
    item: Claimed, links: Mapping[str, str], brand: Mapping[str, Any], *, reload: bool = True
) -> Outbound:
    """Render a loaded message with ``links`` into its channel's outbound message (raises
    :class:`RenderError`); ``reload=False``: templates already loaded are not checked against their
    files again (a send task's many renders)."""
    rendered = render(item.template, item.channel, template_context(item, links, brand), reload=reload)
    outbound: Outbound = registry.get(item.channel).outbound(item, rendered, links)
    return outbound


def _claim_check(engine: Engine, tokens: Mapping[int, str | None]) -> ClaimCheck:
    """``still_claimed`` for a chunk claimed with ``tokens``: renews each message's claim."""
    return lambda message_id: renew_claim(engine, message_id, tokens[message_id])


def record_results(
    engine: Engine, results: Sequence[SendResult], *, simulate: bool, tokens: Mapping[int, str | None] | None = None
) -> Counter:
    """Write send outcomes to the ledger. A message no longer ``sending`` (a webhook moved it on)
    keeps its status; with ``tokens`` (message id -> claim token), so does a message whose claim
    has passed to another attempt. Results reporting a lost claim are not written. ``simulate``
    (the developer tools' simulated sends) records what the transport accepted as ``dry_run``."""
    now = _now()
    rows: list[dict[str, Any]] = []
    counts: Counter[str] = Counter()
    for r in results:
        if r.reason == OutcomeReason.CLAIM_LOST:
            counts["claim_lost"] += 1
            continue
        status = Status.DRY_RUN if simulate and r.status == Status.SENT else r.status
        counts[status] += 1
        rows.append(
            {
                "mid": r.message_id,
                "st": status,
                "rs": r.reason,
                "pid": r.provider_message_id,
                "seg": r.segments,
                "sent": now if r.status == Status.SENT else None,
                "now": now,
                "tok": None if tokens is None else tokens.get(r.message_id),
            }
        )
    if rows:
        rows.sort(key=lambda row: row["mid"])  # in message id order, as feedback.apply_events locks them
        with engine.begin() as conn:
            conn.execute(
                update(M)
                .where(
                    M.c.message_id == bindparam("mid"),
                    _STILL_CLAIMED,
                    *(() if tokens is None else (M.c.claim_token == bindparam("tok"),)),
                )
                .values(
                    status=bindparam("st"),
                    reason=bindparam("rs"),
                    provider_message_id=bindparam("pid"),
                    segments=bindparam("seg"),
                    sent_at=bindparam("sent"),
                    updated_at=bindparam("now"),
                ),
                rows,
            )
    return counts


def outbound_or_problem(item: Claimed, build: Callable[[Claimed], Outbound]) -> Outbound | str:
    """The message ready to go, or why it cannot go (logged): its contact is gone from the CRM,
    its CRM row cannot be read, or its template fails."""
    if item.contact["contact_id"] is None:
        return OutcomeReason.CONTACT_GONE
    problem = item.problem
    if problem is None:
        try:
            return build(item)
        except RenderError as exc:
            problem = str(exc)
    log.error("message %s (contact %s): %s", item.message_id, item.contact["contact_id"], problem)
    return problem


def _too_many_segments(channel: str, out: Outbound, max_segments: Mapping[str, int]) -> str | None:
    """Why a rendered message is too long to go out (more parts than the policy allows), or None."""
    limit, parts = max_segments.get(channel), registry.get(channel).segments(out)
    if limit is None or parts is None or parts <= limit:
        return None
    return f"{OutcomeReason.TOO_MANY_SEGMENTS}: {parts} over the policy's {channel}_max_segments of {limit}"


def _defer_quiet(engine: Engine, chunk: Sequence[Claimed], rules: SendRules | None) -> tuple[list[Claimed], int]:
    """The claimed messages that may go now, and how many wait: a message on a channel with quiet
    hours goes back to ``deferred`` until the window's end when it is quiet hours now where its
    recipient is; a later run of its program sends it."""
    if rules is None or not rules.quiet_hours:
        return list(chunk), 0
    moment = rules.at or quiet_hours_clock()
    later: list[dict[str, Any]] = []
    going: list[Claimed] = []
    for item in chunk:
        window, contact = rules.quiet_hours.get(item.channel), item.contact
        until = None
        if window is not None and contact["contact_id"] is not None:
            timezone, phone, country = contact.get("timezone"), contact.get("phone"), contact.get("country")
            until = quiet_until(moment, timezone, window, phone=phone, country=country)
        if until is None:
            going.append(item)
        else:
            later.append({"mid": item.message_id, "tok": item.claim_token, "until": until})
    if later:
        with engine.begin() as conn:
            conn.execute(
                update(M)
                .where(
                    M.c.message_id == bindparam("mid"),
                    M.c.status == Status.SENDING,
                    M.c.claim_token == bindparam("tok"),
                )
                .values(
                    status=Status.DEFERRED,
                    reason=CapReason.QUIET_HOURS,
                    send_after=bindparam("until"),
                    claim_token=None,
                    send_run_id=None,
                    batch=None,
                    updated_at=_now(),
                ),
                later,
            )
    return going, len(later)


def _chunks(
    engine: Engine,
    run_id: str,
    batch: int,
    size: int,
    service_programs: Collection[str],
    rules: SendRules | None,
    program: str | None,
) -> Iterator[list[Claimed]]:
    while claimed := claim(engine, run_id, batch, size, service_programs, rules, program):
        yield claimed


def _record_as_completed(
    engine: Engine, results: Iterable[SendResult], tokens: Mapping[int, str | None], simulate: bool
) -> Counter:
    """Write results to the ledger as they come (a transport's iterator yields each as its request
    completes), in small groups: at most :data:`RECORD_EVERY` results or :data:`RECORD_WITHIN`
    seconds wait for the next write."""
    counts: Counter[str] = Counter()
    waiting: list[SendResult] = []
    since = time.monotonic()
    for result in results:
        waiting.append(result)
        if len(waiting) >= RECORD_EVERY or time.monotonic() - since >= RECORD_WITHIN:
            counts.update(record_results(engine, waiting, simulate=simulate, tokens=tokens))
            waiting, since = [], time.monotonic()
    counts.update(record_results(engine, waiting, simulate=simulate, tokens=tokens))
    return counts


def _await_quietly(results: Iterable[SendResult]) -> None:
    """Wait for requests already started whose answers cannot be written (the attempt is failing):
    nothing this attempt claimed is left half-sent when it stops; the retry settles them."""
    with suppress(Exception):
        for _ in results:
            pass


def send_batch(
    engine: Engine,
    run_id: str,
    batch: int,
    transport: Transport,
    *,
    links: LinkBuilder,
    brand: Mapping[str, Any],
    simulate: bool = False,
    claim_size: int = 100,
    service_programs: Collection[str] = (),
    rules: SendRules | None = None,
    max_segments: Mapping[str, int] | None = None,
    subscription: Subscription = MARKETING,
    program: str | None = None,
) -> dict[str, int]:
    """Send one batch: settle stale claims, then claim, render, send and record chunk by chunk.

    A chunk's requests are started (the provider transport sends them concurrently) before the
    previous chunk's last answers are awaited, so the provider is never idle while a chunk's
    slowest request finishes; at most two chunks are claimed and in memory at once. Each chunk is
    claimed before any of its requests, and every outcome is written as its answer comes.

    ``service_programs`` names the service programs among the batch's (a marketing unsubscribe
    does not stop their messages at claim time); a program left out is treated as marketing.
    ``rules`` (consent and quiet hours) are checked again as each message is claimed.
    ``max_segments`` (channel -> limit): a message of more billable parts fails with its reason.
    ``subscription``: what the program's messages are sent under (their topic's unsubscribe group).
    ``program``: the batch's program (two programs' scheduled runs at one time share a run id)."""

    def build(item: Claimed) -> Outbound:
        addressed = replace(item, subscription=subscription)
        # A send task renders the whole batch from the templates as they were when it began.
        return render_outbound(
            addressed, links(item.message_id, item.contact["contact_id"], item.channel), brand, reload=False
        )

    counts = recover_stale_claims(engine, run_id, batch, transport, build, program)
    previous: tuple[Iterable[SendResult], Mapping[int, str | None]] | None = None
    for claimed in _chunks(engine, run_id, batch, claim_size, service_programs, rules, program):
        tokens = {item.message_id: item.claim_token for item in claimed}
        chunk, deferred = _defer_quiet(engine, claimed, rules)
        counts[Status.DEFERRED] += deferred
        failures: list[SendResult] = []
        by_channel: dict[str, list[Outbound]] = {}
        for item in chunk:
            out = outbound_or_problem(item, build)
            if not isinstance(out, str) and (too_long := _too_many_segments(item.channel, out, max_segments or {})):
                log.error("message %s (contact %s): %s", item.message_id, item.contact["contact_id"], too_long)
                out = too_long
            if isinstance(out, str):
                failures.append(SendResult(item.message_id, Status.FAILED, reason=out[:200]))
                continue
            by_channel.setdefault(item.channel, []).append(out)
        streams: list[Iterable[SendResult]] = [failures]
        try:
            for name in registry.names():
                if name in by_channel:
                    renew = _claim_check(engine, tokens) if registry.get(name).renews_claim else None
                    streams.append(transport.send(name, by_channel[name], still_claimed=renew))
        except BaseException:
            # Whatever happens to this chunk, the previous one's answers are written first.
            if previous is not None:
                counts.update(_record_as_completed(engine, *previous, simulate))
            raise
        current = (chain.from_iterable(streams), tokens)
        if previous is not None:
            try:
                counts.update(_record_as_completed(engine, *previous, simulate))
            except BaseException:
                _await_quietly(current[0])
                raise
        previous = current
    if previous is not None:
        counts.update(_record_as_completed(engine, *previous, simulate))
    return {k: v for k, v in counts.items() if v}
