"""Suppression: planned messages that must not go out, each marked with its reason.

Reasons come in two kinds. Channel reasons (no address, no consent, unsubscribed, bounced,
STOP...) block one channel, so a step that allows the other channel is re-planned there first.
A service program's messages (transactional purpose) are not stopped by a marketing unsubscribe,
and its consent follows the policy's legal basis for its purpose (implied by default).
Consent follows the contact's region where the policy has regions (the reason names the region).
Contact reasons (an opt-out of the program's topic, open ticket, in negotiation, recent purchase,
already converted) block every channel. Reasons are checked in a fixed order and the first that applies is recorded.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from datetime import datetime
from itertools import permutations
from typing import Any

from sqlalchemy import (
    Connection,
    and_,
    case,
    exists,
    false,
    func,
    literal,
    not_,
    null,
    or_,
    select,
    true,
    union_all,
    update,
)
from sqlalchemy.sql.expression import ColumnElement

from lifecycle.channels import registry
from lifecycle.config import Policy, Program, RegionBasis, Step, segments
from lifecycle.engine import capture
from lifecycle.engine.scope import RunScope
from lifecycle.model import schema
from lifecycle.model.addresses import CONTACT_ID
from lifecycle.model.db import concat, json_value
from lifecycle.model.ledger import (
    ADDRESS_LISTS,
    MARKETING_ONLY,
    ChannelReason,
    PolicyRule,
    Status,
    regional_no_consent,
    topic_opt_out,
)
from lifecycle.model.ledger import SuppressionReason as R

M = schema.messages
C = schema.contacts


@dataclass(frozen=True)
class Reason:
    """A named rule: a SQL predicate over a contact id that is true when the message must not go."""

    name: str
    predicate: Callable[[ColumnElement], ColumnElement]


def _contact_has(contact_id: ColumnElement[Any], condition: Callable[[Any], ColumnElement[Any]]) -> ColumnElement[bool]:
    # An alias, so the rule stays tied to ``contact_id`` even when the outer query reads contacts itself.
    holder = C.alias("address_holder")
    return exists().where(holder.c.contact_id == contact_id, condition(holder))


def _consent_status(contact_id: ColumnElement, channel: str, purpose: str, at: datetime) -> ColumnElement:
    """The status in force at ``at``: the newest of the contact's consent rows and granted captures
    (double opt-in confirmed, a paper form; :mod:`lifecycle.engine.capture`); of rows at the same
    moment, a non-granted one wins. A pending capture is no consent: it is not a row here."""
    k = schema.consents.alias("consent_now")
    crm = (
        select(k.c.status, k.c.captured_at.label("at"))
        .where(k.c.contact_id == contact_id, k.c.channel == channel, k.c.purpose == purpose, k.c.captured_at <= at)
        .correlate_except(k)
    )
    rows = union_all(crm, capture.granted_rows(contact_id, channel, purpose, at)).subquery("consent_rows")
    return (
        select(rows.c.status)
        .order_by(rows.c.at.desc(), case((rows.c.status == "granted", 1), else_=0))
        .limit(1)
        .scalar_subquery()
    )


def _on_list(contact_id: ColumnElement, channel: str, reason: str) -> ColumnElement:
    """The contact is listed, or (for an opt-out, bounce or spam report) its address is: two contact
    rows sharing an address are one inbox, whichever of them opted out."""
    s = schema.suppressions
    listed = exists().where(s.c.contact_id == contact_id, s.c.channel == channel, s.c.reason == reason)
    if reason not in ADDRESS_LISTS:
        return listed
    holder = C.alias("listed_holder")
    # Correlated to whatever ``contact_id`` comes from, two levels out (hence correlate_except).
    address = (
        select(registry.get(channel).address.of(holder))
        .where(holder.c.contact_id == contact_id)
        .correlate_except(holder)
        .limit(1)
        .scalar_subquery()
    )
    by_address = exists().where(s.c.address == address, s.c.channel == channel, s.c.reason == reason)
    return or_(listed, by_address)


def _list_predicate(channel: str, name: str) -> Callable[[ColumnElement[Any]], ColumnElement[bool]]:
    return lambda contact_id: _on_list(contact_id, channel, name)


def list_reasons(channel: str, *, service: bool = False) -> list[Reason]:
    """The suppression-list rules for ``channel`` (opt-outs, bounces, bad or duplicate addresses);
    for a ``service`` message, without the lists that stop marketing only (a marketing unsubscribe).
    A channel that asks no consent of the contact (a sales task) is also stopped, for marketing, by
    a contact who opted out of everything.

    They hold whatever the as-of, so the outbox checks them again when it claims a message
    (:func:`claim_reasons`).
    """
    facts = registry.get(channel)
    reasons = [
        Reason(name, _list_predicate(channel, name))
        for name in facts.list_reasons
        if not (service and name in MARKETING_ONLY)
    ]
    if not facts.consent and not service:
        reasons.append(Reason(R.UNSUBSCRIBED, _unsubscribed_everywhere))
    return reasons


def _unsubscribed_everywhere(contact_id: ColumnElement[Any]) -> ColumnElement[bool]:
    """The contact opted out of everything: it is listed ``unsubscribed`` on every channel that
    reaches an inbox of its own and asks its consent (what "unsubscribe from all" records). It stops
    the marketing of a channel that reaches someone else about the contact (a sales task)."""
    inboxes = [
        name
        for name in registry.names()
        if R.UNSUBSCRIBED in registry.get(name).list_reasons
        and registry.get(name).consent
        and registry.get(name).address is not CONTACT_ID
    ]
    if not inboxes:
        return false()
    return and_(*(_on_list(contact_id, name, R.UNSUBSCRIBED) for name in inboxes))


unsubscribed_everywhere = _unsubscribed_everywhere
"""Public name of :func:`_unsubscribed_everywhere` (the paid-audience sync leaves such contacts out)."""


def claim_reasons(channel: str, service_programs: Collection[str]) -> list[Reason]:
    """:func:`list_reasons` for ledger messages of any program, as the outbox checks them when it
    claims a message: a marketing-only list stops a message unless its program is one of
    ``service_programs``."""
    marketing = M.c.program.not_in(list(service_programs))

    def for_marketing(predicate: Callable[[ColumnElement], ColumnElement]) -> Callable[[ColumnElement], ColumnElement]:
        return lambda contact_id: and_(marketing, predicate(contact_id))

    return [
        Reason(r.name, for_marketing(r.predicate)) if r.name in MARKETING_ONLY else r for r in list_reasons(channel)
    ]


def _fails(basis: str, status: ColumnElement) -> ColumnElement[bool]:
    """The newest consent row's ``status`` is not enough under ``basis``: ``explicit`` needs it
    granted (no row, or a denied one, is not), ``implied`` only a denied one stops."""
    if basis == "implied":
        return status == "denied"
    return or_(status.is_(None), status != "granted")


def _country(contact_id: ColumnElement) -> ColumnElement:
    """The contact's country as regions list it (trimmed, in capitals); '' when it has none."""
    holder = C.alias("country_holder")
    return (
        select(func.upper(func.trim(func.coalesce(holder.c.country, ""))))
        .where(holder.c.contact_id == contact_id)
        .correlate_except(holder)
        .limit(1)
        .scalar_subquery()
    )


def _in_region(contact_id: ColumnElement, rule: RegionBasis) -> ColumnElement[bool]:
    """The contact is in the region: its country is listed, or (``countries`` None) it has none."""
    if rule.countries is not None:
        return _country(contact_id).in_(rule.countries)
    return _country(contact_id) == ""


@dataclass(frozen=True)
class ConsentGroup:
    """Contacts one consent rule covers: a region's (``region`` None: those in no region, under the
    policy's ``legal_basis``) and the basis they are messaged on."""

    region: str | None
    basis: str
    member: Callable[[ColumnElement], ColumnElement[bool]]


def consent_groups(basis: str, regions: Sequence[RegionBasis] = ()) -> list[ConsentGroup]:
    """Who each consent rule covers, in the order the rules are checked: each region's contacts
    (contacts without a country under ``unknown_country``), then every other contact on ``basis``.
    Every contact is in exactly one group."""
    listed = [country for rule in regions for country in rule.countries or ()]

    def elsewhere(contact_id: ColumnElement) -> ColumnElement[bool]:
        """In no region: a known country no region lists (every contact, without regions)."""
        if not regions:
            return true()
        return and_(_country(contact_id) != "", _country(contact_id).not_in(listed))

    def regional(rule: RegionBasis) -> ConsentGroup:
        return ConsentGroup(rule.region, rule.basis, lambda cid: _in_region(cid, rule))

    return [*(regional(rule) for rule in regions), ConsentGroup(None, basis, elsewhere)]


def consent_rules(
    channel: str, purpose: str, basis: str, at: datetime, regions: Sequence[RegionBasis] = ()
) -> list[Reason]:
    """The consent rules for ``channel`` under ``purpose``, as consent stands at ``at``: a withdrawn
    consent always stops it (``consent_withdrawn``); then each region's basis for its contacts
    (``no_consent: <region>``, contacts without a country under ``unknown_country``), and ``basis``
    for every other contact (``no_consent``). ``explicit`` needs the newest row to be granted (no
    row, or a denied one: no consent), ``implied`` only stops a denied one."""

    def status(contact_id: ColumnElement) -> ColumnElement:
        return _consent_status(contact_id, channel, purpose, at)

    def rule(group: ConsentGroup) -> Reason:
        name = R.NO_CONSENT if group.region is None else regional_no_consent(group.region)
        return Reason(name, lambda cid: and_(group.member(cid), _fails(group.basis, status(cid))))

    withdrawn = Reason(R.CONSENT_WITHDRAWN, lambda cid: status(cid) == "withdrawn")
    return [withdrawn, *(rule(group) for group in consent_groups(basis, regions))]


def topic_rules(topic: str | None, at: datetime) -> list[Reason]:
    """The rule for a program's ``topic`` as preferences stand at ``at``: a contact whose newest
    preference for it is withdrawn gets none of its messages (``topic_opt_out: <topic>``)."""
    if topic is None:
        return []
    p = schema.topic_preferences.alias("topic_now")

    def preference(contact_id: ColumnElement) -> ColumnElement:
        return (
            select(p.c.status)
            .where(p.c.contact_id == contact_id, p.c.topic == topic, p.c.captured_at <= at)
            .order_by(p.c.captured_at.desc(), p.c.status == "granted", p.c.preference_id.desc())
            .limit(1)
            .scalar_subquery()
        )

    return [Reason(topic_opt_out(topic), lambda cid: preference(cid) == "withdrawn")]


def optional_topic(policy: Policy, topic: str | None) -> str | None:
    """``topic``, when contacts may opt out of it: a policy topic that is optional (a topic that is
    not optional, or none, stops no message)."""
    described = policy.topics.get(topic) if topic else None
    return topic if described is not None and described.optional else None


def opted_out_topic(run: RunScope) -> str | None:
    """The program's topic, when its contacts may opt out of it (see :func:`optional_topic`)."""
    return optional_topic(run.policy, run.program.topic)


def consent_reasons(channel: str, run: RunScope) -> list[Reason]:
    """The consent rules for ``channel`` as of the run, under the program's purpose and the policy's
    legal basis for it (see :func:`consent_rules`). The outbox checks them again when it claims a
    message, as consent stands then."""
    purpose = run.program.consent_purpose
    policy = run.policy
    return consent_rules(channel, purpose, policy.basis_for(purpose), run.as_of, policy.region_bases(channel, purpose))


def channel_reasons(channel: str, run: RunScope) -> list[Reason]:
    """Rules that stop ``channel`` for a contact, in the order they are reported."""
    address = registry.get(channel).address
    rules = [
        Reason(R.MISSING_ADDRESS, lambda cid: not_(_contact_has(cid, lambda c: address.of(c).is_not(None)))),
        Reason(
            R.INVALID_ADDRESS,
            lambda cid: _contact_has(
                cid, lambda c: and_(address.of(c).is_not(None), not_(address.is_valid(address.of(c))))
            ),
        ),
    ]
    rules += list_reasons(channel, service=run.program.is_service)
    if registry.get(channel).consent:
        rules += consent_reasons(channel, run)
    return rules


def channel_blocked(channel: str, run: RunScope, contact_id: ColumnElement) -> ColumnElement:
    """True when any channel rule stops ``channel`` for the contact."""
    return or_(*(r.predicate(contact_id) for r in channel_reasons(channel, run)))


def _applies(rule_name: PolicyRule, run: RunScope) -> bool:
    return run.policy.applies(rule_name, run.program)


def contact_reasons(run: RunScope) -> list[Reason]:
    """Rules that stop every channel for a contact in this program."""
    rules: list[Reason] = topic_rules(opted_out_topic(run), run.as_of)
    goal = run.program.exit.goal
    if goal is not None:
        e = schema.enrollments
        rules.append(
            Reason(
                R.ALREADY_CONVERTED,
                lambda cid: exists().where(
                    e.c.enrollment_id == M.c.enrollment_id,
                    segments.compile_segment(goal.parsed, run.segment_context(e.c.contact_id, journey=True)),
                ),
            )
        )
    if _applies(R.OPEN_SUPPORT_TICKET, run):
        t = schema.tickets
        rules.append(
            Reason(
                R.OPEN_SUPPORT_TICKET,
                lambda cid: exists().where(
                    t.c.contact_id == cid, t.c.status.in_(("open", "pending")), t.c.opened_at <= run.as_of
                ),
            )
        )
    if _applies(R.IN_SALES_NEGOTIATION, run):
        o = schema.opportunities

        def negotiating(cid: ColumnElement) -> ColumnElement:
            # Two probes instead of one OR: the contact's own deals by index, and its account against
            # the negotiating accounts, a subquery the database evaluates once per statement.
            person = C.alias("negotiator")
            accounts = select(o.c.account_id).where(o.c.stage == "negotiation", o.c.account_id.is_not(None))
            return exists().where(
                person.c.contact_id == cid,
                or_(
                    exists().where(o.c.contact_id == person.c.contact_id, o.c.stage == "negotiation"),
                    person.c.account_id.in_(accounts),
                ),
            )

        rules.append(Reason(R.IN_SALES_NEGOTIATION, negotiating))
    if _applies(R.RECENT_PURCHASE, run):
        node = segments.Event(("purchase",), within_last=run.policy.suppressions[R.RECENT_PURCHASE].within)
        rules.append(Reason(R.RECENT_PURCHASE, lambda cid: segments.compile_segment(node, run.segment_context(cid))))
    return rules


def _pending(run: RunScope) -> ColumnElement[bool]:
    return and_(M.c.program == run.program.id, M.c.status == Status.PLANNED)


def release_deferred(conn: Connection, run: RunScope) -> int:
    """Deferred messages whose wait is over go back to ``planned`` to be checked again."""
    return conn.execute(
        update(M)
        .where(M.c.program == run.program.id, M.c.status == Status.DEFERRED, M.c.send_after <= run.as_of)
        .values(status=Status.PLANNED, reason=None)
    ).rowcount


def blocked_reason(channel: str, run: RunScope, contact_id: ColumnElement) -> ColumnElement[str]:
    """The first channel rule that stops ``channel`` for the contact, as the reason it records
    (NULL when none does)."""
    return case(*((r.predicate(contact_id), literal(r.name)) for r in channel_reasons(channel, run)), else_=null())


def _passed_over(passed: Sequence[str], run: RunScope, contact_id: ColumnElement) -> ColumnElement[str]:
    """The channel reason of a message that fell back past ``passed``:
    ``fallback: whatsapp unreachable (no_consent), sms unreachable (missing_address)``."""
    parts: list[Any] = [f"{ChannelReason.FALLBACK}: "]
    for n, channel in enumerate(passed):
        parts += [", " * bool(n) + f"{channel} unreachable (", blocked_reason(channel, run, contact_id), ")"]
    return func.substr(concat(*parts), 1, schema.CHANNEL_REASON_LENGTH)


def apply_fallbacks(conn: Connection, run: RunScope) -> int:
    """Move messages whose channel is blocked to their step's fallback channel when it is open,
    recording why (``fallback: <channel> unreachable (<reason>)``)."""
    moved = 0
    for primary, fallback in permutations(registry.names(), 2):
        moved += conn.execute(
            update(M)
            .where(
                _pending(run),
                M.c.channel == primary,
                M.c.fallback_channel == fallback,
                channel_blocked(primary, run, M.c.contact_id),
                not_(channel_blocked(fallback, run, M.c.contact_id)),
            )
            .values(channel=fallback, channel_reason=_passed_over([primary], run, M.c.contact_id))
        ).rowcount
    return moved


# --- channel choice: a step that lists channels ------------------------------------------------

_ENGAGED = ("open", "click", "status_read")  # provider events on a message: SendGrid's open/click, a WhatsApp read
_STOPS = ("inbound_stop", "whatsapp_inbound_stop")


def last_engaged_channel(contact_id: ColumnElement, as_of: datetime) -> ColumnElement[str]:
    """The channel the contact last engaged on by ``as_of``, from the provider events: the channel
    of the message it last opened, clicked or read, or the channel of its last inbound reply (an
    SMS, a WhatsApp message; not a STOP). NULL when it has none."""
    pe, sent = schema.provider_events.alias("engaged"), M.alias("engaged_message")
    whatsapp_reply = pe.c.event_type.like("whatsapp_inbound%")
    reply = and_(pe.c.event_type.like("%inbound%"), pe.c.event_type.not_in(_STOPS))
    channel = case((whatsapp_reply, literal("whatsapp")), (reply, literal("sms")), else_=sent.c.channel)
    return (
        select(channel)
        .select_from(pe.outerjoin(sent, sent.c.message_id == pe.c.message_id))
        .where(
            pe.c.contact_id == contact_id,
            pe.c.occurred_at <= as_of,
            or_(and_(pe.c.event_type.in_(_ENGAGED), sent.c.message_id.is_not(None)), reply),
        )
        .order_by(pe.c.occurred_at.desc(), pe.c.event_pk.desc())
        .limit(1)
        .scalar_subquery()
    )


PREFERRED_CHANNEL_ATTRIBUTE = "preferred_channel"
"""The custom contact attribute (``contacts.custom`` in ``config/sources.yml``) ``choose_by:
preferred_channel`` reads: a channel name, e.g. ``whatsapp``."""


def first_choice(step: Step, run: RunScope, contact_id: ColumnElement) -> ColumnElement[str] | None:
    """The channel the step's rule puts first for the contact, lower-cased (NULL: no data, so the
    step's own order); None for ``choose_by: order``."""
    if step.rule == ChannelReason.PREFERRED_CHANNEL:
        attrs = schema.contact_attributes.alias("preference")
        chosen: ColumnElement[str] = (
            select(json_value(attrs.c.attributes, PREFERRED_CHANNEL_ATTRIBUTE))
            .where(attrs.c.contact_id == contact_id)
            .scalar_subquery()
        )
        return func.lower(func.trim(chosen))
    if step.rule == ChannelReason.LAST_ENGAGED:
        return last_engaged_channel(contact_id, run.as_of)
    return None


@dataclass(frozen=True)
class Route:
    """Where a message of a step goes for the contacts ``when`` holds for, and the reason it records."""

    channel: str
    when: ColumnElement[bool]
    reason: ColumnElement[str]


def choice_routes(step: Step, run: RunScope, contact_id: ColumnElement) -> list[Route]:
    """Every way a message of a step with ``channels`` can go: for each channel the rule may put
    first (or none: the listed order), the first channel in that order that can reach the contact
    (address, consent for the channel and the program's purpose, suppression lists). The routes
    exclude each other; a contact no channel reaches has none (suppression then records why the
    first one cannot)."""
    listed = step.reach
    first = first_choice(step, run, contact_id)
    heads: list[tuple[str | None, ColumnElement[bool]]] = [(None, true())]
    if first is not None:
        heads = [(h, first == h) for h in listed]
        heads.append((None, or_(first.is_(None), first.not_in(listed))))
    routes = []
    for head, chosen in heads:
        order = [head, *(c for c in listed if c != head)] if head else list(listed)
        rule = step.rule if head else ChannelReason.ORDER
        for k, channel in enumerate(order):
            when = and_(
                chosen,
                *(channel_blocked(c, run, contact_id) for c in order[:k]),
                not_(channel_blocked(channel, run, contact_id)),
            )
            reason = _passed_over(order[:k], run, contact_id) if k else literal(str(rule))
            routes.append(Route(channel, when, reason))
    return routes


def reachable_orders(conn: Connection, run: RunScope) -> dict[int, list[str]]:
    """Per pending message of a step with ``channels``: the step's channels in the contact's order
    (its rule's first, then the listed order) that can reach the contact. Capping moves a message
    whose channel's cap is full to the next of them that has room."""
    found: dict[int, list[str]] = {}
    for step in choice_steps(run.program):
        listed = step.reach
        first = first_choice(step, run, M.c.contact_id)
        head = (first if first is not None else null()).label("head")
        reachable = [not_(channel_blocked(c, run, M.c.contact_id)).label(f"open_{i}") for i, c in enumerate(listed)]
        query = select(M.c.message_id, head, *reachable).where(_pending(run), M.c.step == step.id)
        for row in conn.execute(query):
            chosen = row.head if row.head in listed else None
            order = [chosen, *(c for c in listed if c != chosen)] if chosen else list(listed)
            is_open = {c: bool(row._mapping[f"open_{i}"]) for i, c in enumerate(listed)}
            found[row.message_id] = [c for c in order if is_open[c]]
    return found


def choice_steps(program: Program) -> list[Step]:
    """The program's steps that list channels to choose from."""
    return [step for step in program.steps if step.channels is not None]


def apply_channel_choice(conn: Connection, run: RunScope) -> int:
    """Put each pending message of a step with ``channels`` on the channel its rule chooses for the
    contact, recording why; returns the messages placed."""
    placed = 0
    for step in choice_steps(run.program):
        for route in choice_routes(step, run, M.c.contact_id):
            placed += conn.execute(
                update(M)
                .where(_pending(run), M.c.step == step.id, route.when)
                .values(channel=route.channel, channel_reason=route.reason)
            ).rowcount
    return placed


def suppress(conn: Connection, run: RunScope) -> dict[str, int]:
    """Match newly granted captures to contacts, release due deferrals, choose channels and apply
    fallbacks, then mark every suppressed message with its reason."""
    counts = {"captures_matched": capture.match_contacts(conn)}
    counts |= {
        "released": release_deferred(conn, run),
        "channel_choice": apply_channel_choice(conn, run),
        "fallback": apply_fallbacks(conn, run),
    }
    for reason in contact_reasons(run):
        counts[reason.name] = conn.execute(
            update(M)
            .where(_pending(run), reason.predicate(M.c.contact_id))
            .values(status=Status.SUPPRESSED, reason=reason.name)
        ).rowcount
    for channel in registry.names():
        for reason in channel_reasons(channel, run):
            n = conn.execute(
                update(M)
                .where(_pending(run), M.c.channel == channel, reason.predicate(M.c.contact_id))
                .values(status=Status.SUPPRESSED, reason=reason.name)
            ).rowcount
            counts[reason.name] = counts.get(reason.name, 0) + n
    return counts
