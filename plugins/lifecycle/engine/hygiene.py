"""### Data hygiene

Validates and normalises every contact's email and phone, resolves duplicate identities, puts
unusable and duplicate contacts on the suppression list and measures data quality. It never
changes a CRM row: its results live in the engine's own tables. Each step is one transaction and
idempotent for its run; the run's as-of time is its data interval end.

1. **normalise_and_validate** streams `contacts` in chunks into `lifecycle_contact_quality`
   (one row per contact, replaced every run): the email trimmed and lowercased and checked for
   syntax by `email-validator` (no DNS lookup); the phone parsed by `phonenumbers` with the
   contact's country as the default region and written in E.164 when it is a valid number; the
   required fields left empty (`email_or_phone` when both are missing, `country`, `timezone`,
   `lifecycle_stage`, `created_at`).
2. **resolve_duplicates**: contacts that share a valid normalised email or a valid E.164 phone
   are one person (transitively: A shares an email with B, B a phone with C, so A, B and C are
   one). The **survivor** of each group is, in this order: the one with a granted marketing
   consent in force (email or SMS), then the most recent `last_active_at`, then the earliest
   `created_at` (unknown dates lose), then the smallest `contact_id`. The others get
   `survivor_id`; every member gets `duplicate_key` (`email:...`, or `phone:...` when it shares
   no email).
3. **flag_suppressions** keeps `lifecycle_suppressions` (source `data_hygiene`) in step with the
   snapshot: `invalid_address` for an email or phone that is present but invalid (proof: the
   problem), `duplicate_contact` on every channel for every non-survivor, so one person is not
   messaged twice (each flag on the channels whose suppression lists include it). A flag whose
   cause is gone (address fixed, survivor changed) is lifted.
4. **compute_figures** writes `lifecycle_data_quality` (run, as-of, metric, value). Every rate
   is a share of all contacts: `required_fields_filled_rate`, `duplicate_rate`
   (non-survivors), `invalid_email_rate` and `invalid_phone_rate` (present but invalid),
   `consent_coverage_email` / `consent_coverage_sms` (newest marketing consent row per contact
   and channel as of the run is `granted`; on a tie the non-granted row wins), and
   `bounce_rate` (bounced / messages that went out by the as-of time, 0 when none), each with
   its count (`missing_<field>`, `invalid_email`, `duplicate_contacts`, `duplicate_groups`,
   `consent_granted_<channel>`, `messages_out`, `bounced`...). Consent coverage of a part of the
   CRM is a row whose `dimension` names it: per region (`region:eu`, `region:unknown_country`,
   `region:*` for contacts in no region), `contacts` and, per channel a person is reached on,
   `reachable_<channel>` / `reachable_rate_<channel>`: the contacts the marketing consent rule of
   their region lets through (:func:`~lifecycle.engine.suppression.consent_rules`); per policy topic
   (`topic:offers`), `opted_out` and `subscribed_rate` of all contacts. A rate over no contacts is
   not written: not measured, which is not 0%.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, cast

from sqlalchemy import (
    Column,
    Connection,
    DateTime,
    Engine,
    String,
    Text,
    and_,
    bindparam,
    case,
    delete,
    exists,
    false,
    func,
    insert,
    literal,
    or_,
    select,
    text,
    type_coerce,
    update,
)
from sqlalchemy.sql.expression import ColumnElement, Subquery

from lifecycle.channels import registry
from lifecycle.config import Policy
from lifecycle.engine import suppression
from lifecycle.engine.preferences import opt_out_channels
from lifecycle.model import schema
from lifecycle.model.addresses import parse_phone
from lifecycle.model.db import Record, concat, insert_ignore
from lifecycle.model.ledger import WENT_OUT, Status
from lifecycle.model.ledger import SuppressionReason as R

if TYPE_CHECKING:
    from phonenumbers import PhoneNumber

C = schema.contacts
Q = schema.contact_quality
S = schema.suppressions
CHUNK = 5_000
SOURCE = "data_hygiene"
REQUIRED_FIELDS = ("email_or_phone", "country", "timezone", "lifecycle_stage", "created_at")


@dataclass(frozen=True)
class AddressCheck:
    """One email or phone after normalising: its normal form, whether it is usable, and why not.

    ``valid`` is None when there is no address to check."""

    value: str | None
    valid: bool | None
    problem: str | None = None


NO_ADDRESS = AddressCheck(None, None)


def _blank(value: Any) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def _length(column: Column[Any]) -> int:
    """The declared length of a string column: values are cut to fit it."""
    length = cast(String, column.type).length
    assert length is not None, f"{column} has no length"
    return length


def check_email(raw: str | None) -> AddressCheck:
    """Trim and lowercase; valid when ``email-validator`` accepts the syntax (deliverability is
    not checked: no network). An invalid email keeps its trimmed, lowercased form."""
    if raw is None or _blank(raw):
        return NO_ADDRESS
    from email_validator import EmailNotValidError, validate_email

    normalized = raw.strip().lower()[: _length(Q.c.email_normalized)]
    try:
        validate_email(normalized, check_deliverability=False)
    except EmailNotValidError as exc:
        return AddressCheck(normalized, False, str(exc)[: _length(Q.c.email_problem)])
    return AddressCheck(normalized, True)


def _parse_problem(error_type: int) -> str:
    from phonenumbers import NumberParseException as Error

    return {
        Error.INVALID_COUNTRY_CODE: "no valid country code, and no usable contact country",
        Error.TOO_SHORT_AFTER_IDD: "too short",
        Error.TOO_SHORT_NSN: "too short",
        Error.TOO_LONG: "too long",
    }.get(error_type, "not a phone number")


def _invalid_number_problem(number: PhoneNumber) -> str:
    from phonenumbers import ValidationResult, is_possible_number_with_reason

    return {
        ValidationResult.INVALID_COUNTRY_CODE: "unknown country code",
        ValidationResult.TOO_SHORT: "too short",
        ValidationResult.TOO_LONG: "too long",
        ValidationResult.INVALID_LENGTH: "wrong length for its country",
        ValidationResult.IS_POSSIBLE_LOCAL_ONLY: "local number without its area code",
    }.get(is_possible_number_with_reason(number), "not a number in its country's numbering plan")


def check_phone(raw: str | None, country: str | None) -> AddressCheck:
    """Read as :func:`~lifecycle.model.addresses.parse_phone` reads it (the contact's country as
    the default region, as sending and the STOP lookup do); valid when
    ``phonenumbers`` says it is a valid number, and then written in E.164."""
    if raw is None or _blank(raw):
        return NO_ADDRESS
    import phonenumbers

    try:
        number = parse_phone(raw, country)
    except phonenumbers.NumberParseException as exc:
        return AddressCheck(None, False, _parse_problem(exc.error_type))
    if not phonenumbers.is_valid_number(number):
        return AddressCheck(None, False, _invalid_number_problem(number))
    return AddressCheck(phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164), True)


def missing_fields(contact: Record) -> list[str]:
    """The required fields a contact leaves empty, in ``REQUIRED_FIELDS`` order."""
    empty = {name: _blank(contact[name]) for name in ("email", "phone", *REQUIRED_FIELDS[1:])}
    empty["email_or_phone"] = empty["email"] and empty["phone"]
    return [name for name in REQUIRED_FIELDS if empty[name]]


def quality_row(contact: Record, run_id: str, checked_at: datetime) -> dict[str, Any]:
    """The ``lifecycle_contact_quality`` row of one CRM contact, before duplicates are resolved."""
    email = check_email(contact["email"])
    phone = check_phone(contact["phone"], contact["country"])
    return {
        "contact_id": contact["contact_id"],
        "email_normalized": email.value,
        "email_valid": email.valid,
        "email_problem": email.problem,
        "phone_e164": phone.value,
        "phone_valid": phone.valid,
        "phone_problem": phone.problem,
        "missing_fields": ",".join(missing_fields(contact)) or None,
        "survivor_id": None,
        "duplicate_key": None,
        "run_id": run_id,
        "checked_at": checked_at,
    }


def _as_text(column: Column[Any]) -> ColumnElement[Any]:
    """Read a CRM timestamp as the text it holds: a CRM may store anything there (SQLite does)."""
    return type_coerce(column, Text).label(column.name) if isinstance(column.type, DateTime) else column


def _timestamp(value: Any) -> datetime | None:
    """A CRM timestamp, or None when it is empty or not a timestamp (unknown dates lose)."""
    if value is None or isinstance(value, datetime):
        return value
    try:
        return datetime.fromisoformat(str(value))
    except ValueError:
        return None


def normalise_and_validate(engine: Engine, run_id: str, as_of: datetime, chunk: int = CHUNK) -> dict[str, int]:
    """Refresh the quality snapshot: one row per contact, streaming the CRM ``chunk`` rows at a time
    (a server-side cursor on PostgreSQL); returns counts.

    Each chunk commits on its own, so the run never holds the database's one write lock (SQLite)
    for long; rows of contacts no longer in the CRM are removed at the end, and the table's planner
    statistics refreshed."""
    counts: Counter[str] = Counter()
    source = select(C.c.contact_id, C.c.email, C.c.phone, *(_as_text(C.c[name]) for name in REQUIRED_FIELDS[1:]))
    with engine.connect() as reader:
        streamed = reader.execute(source.execution_options(yield_per=chunk))
        for contacts in streamed.mappings().partitions():
            rows = [quality_row(contact, run_id, as_of) for contact in contacts]
            with engine.begin() as conn:
                conn.execute(delete(Q).where(Q.c.contact_id.in_([row["contact_id"] for row in rows])))
                conn.execute(insert(Q), rows)
            counts["contacts"] += len(rows)
            counts["invalid_email"] += sum(row["email_valid"] is False for row in rows)
            counts["invalid_phone"] += sum(row["phone_valid"] is False for row in rows)
            counts["incomplete"] += sum(row["missing_fields"] is not None for row in rows)
    with engine.begin() as conn:
        counts["removed"] = conn.execute(delete(Q).where(~exists().where(C.c.contact_id == Q.c.contact_id))).rowcount
        conn.execute(text(f"ANALYZE {Q.name}"))
    return dict(counts)


@dataclass(frozen=True)
class Candidate:
    """A contact that shares a key with another, with what decides whether it survives."""

    contact_id: str
    granted: bool
    last_active_at: datetime | None
    created_at: datetime | None


def survivor_rank(candidate: Candidate) -> tuple:
    """Sort key whose smallest value is the survivor: granted marketing consent, then latest
    ``last_active_at``, then earliest ``created_at`` (unknown dates last), then ``contact_id``."""
    return (
        not candidate.granted,
        candidate.last_active_at is None,
        datetime.max - (candidate.last_active_at or datetime.max),
        candidate.created_at is None,
        candidate.created_at or datetime.min,
        candidate.contact_id,
    )


@dataclass(frozen=True)
class Resolution:
    """Where one member of a duplicate group ends up (``survivor_id`` None: it survives)."""

    contact_id: str
    survivor_id: str | None
    duplicate_key: str


def resolve_identities(members: Iterable[tuple[str, Candidate]]) -> list[Resolution]:
    """Group contacts linked by shared keys, transitively, and pick each group's survivor.

    ``members`` pairs a key (``email:...`` or ``phone:...``) with a contact holding it; each
    member's ``duplicate_key`` is its email key when it shares one, else its phone key."""
    parent: dict[str, str] = {}
    candidates: dict[str, Candidate] = {}
    keys: dict[str, list[str]] = {}
    first_holder: dict[str, str] = {}

    def root(contact_id: str) -> str:
        while parent[contact_id] != contact_id:
            parent[contact_id] = parent[parent[contact_id]]
            contact_id = parent[contact_id]
        return contact_id

    for key, candidate in members:
        contact_id = candidate.contact_id
        candidates[contact_id] = candidate
        parent.setdefault(contact_id, contact_id)
        keys.setdefault(contact_id, []).append(key)
        parent[root(contact_id)] = root(first_holder.setdefault(key, contact_id))
    groups: dict[str, list[Candidate]] = {}
    for contact_id, candidate in candidates.items():
        groups.setdefault(root(contact_id), []).append(candidate)
    resolutions = []
    for group in groups.values():
        survivor = min(group, key=survivor_rank).contact_id
        resolutions += [
            Resolution(c.contact_id, None if c.contact_id == survivor else survivor, min(keys[c.contact_id]))
            for c in group
        ]
    return sorted(resolutions, key=lambda r: r.contact_id)


def consent_in_force(as_of: datetime, purpose: str = "marketing") -> Subquery:
    """(contact_id, channel, status): the newest consent row per contact and channel for
    ``purpose`` captured by ``as_of``; on a tie the non-granted row wins."""
    k = schema.consents
    newest = func.row_number().over(
        partition_by=(k.c.contact_id, k.c.channel),
        order_by=(k.c.captured_at.desc(), case((k.c.status == "granted", 1), else_=0)),
    )
    ranked = (
        select(k.c.contact_id, k.c.channel, k.c.status, newest.label("newest"))
        .where(k.c.purpose == purpose, k.c.captured_at <= as_of)
        .subquery("ranked_consents")
    )
    return (
        select(ranked.c.contact_id, ranked.c.channel, ranked.c.status)
        .where(ranked.c.newest == 1)
        .subquery("consent_in_force")
    )


def _shared_key_members(conn: Connection, as_of: datetime) -> Iterator[tuple[str, Candidate]]:
    """Every (key, Candidate) whose valid email or phone at least one other contact also has."""
    in_force = consent_in_force(as_of)
    granted = select(in_force.c.contact_id).where(in_force.c.status == "granted").distinct().subquery("granted")
    for kind, value, valid in (
        ("email", Q.c.email_normalized, Q.c.email_valid),
        ("phone", Q.c.phone_e164, Q.c.phone_valid),
    ):
        shared = select(value).where(valid.is_(True)).group_by(value).having(func.count() > 1)
        query = (
            select(
                value,
                Q.c.contact_id,
                granted.c.contact_id.is_not(None),
                _as_text(C.c.last_active_at),
                _as_text(C.c.created_at),
            )
            .select_from(
                Q.join(C, C.c.contact_id == Q.c.contact_id).outerjoin(granted, granted.c.contact_id == Q.c.contact_id)
            )
            .where(valid.is_(True), value.in_(shared))
        )
        for key, contact_id, has_consent, last_active_at, created_at in conn.execute(query):
            yield (
                f"{kind}:{key}",
                Candidate(contact_id, bool(has_consent), _timestamp(last_active_at), _timestamp(created_at)),
            )


def resolve_duplicates(engine: Engine, run_id: str, as_of: datetime, chunk: int = CHUNK) -> dict[str, int]:
    """Mark every duplicate group in the snapshot with its survivor; returns counts. Memory grows
    with the contacts that share a key, not with the CRM."""
    with engine.begin() as conn:
        resolutions = resolve_identities(_shared_key_members(conn, as_of))
        conn.execute(
            update(Q)
            .where(Q.c.survivor_id.is_not(None) | Q.c.duplicate_key.is_not(None))
            .values(survivor_id=None, duplicate_key=None)
        )
        mark = (
            update(Q)
            .where(Q.c.contact_id == bindparam("b_contact"))
            .values(survivor_id=bindparam("b_survivor"), duplicate_key=bindparam("b_key"))
        )
        for start in range(0, len(resolutions), chunk):
            conn.execute(
                mark,
                [
                    {"b_contact": r.contact_id, "b_survivor": r.survivor_id, "b_key": r.duplicate_key}
                    for r in resolutions[start : start + chunk]
                ],
            )
    duplicates = sum(r.survivor_id is not None for r in resolutions)
    return {"duplicate_groups": len(resolutions) - duplicates, "duplicate_contacts": duplicates}


def _flags() -> list[tuple[str, str, ColumnElement, ColumnElement]]:
    """(channel, reason, which snapshot rows, proof) of every suppression hygiene maintains: on each
    channel blocked by that list, an invalid address (by the channel's address) and a duplicate."""
    duplicate, duplicate_proof = Q.c.survivor_id.is_not(None), concat("duplicate of ", Q.c.survivor_id)
    listed = [registry.get(name) for name in registry.names()]
    return [
        *(
            (c.name, R.INVALID_ADDRESS, c.address.verdict.is_(False), c.address.problem)
            for c in listed
            if R.INVALID_ADDRESS in c.list_reasons
        ),
        *(
            (c.name, R.DUPLICATE_CONTACT, duplicate, duplicate_proof)
            for c in listed
            if R.DUPLICATE_CONTACT in c.list_reasons
        ),
    ]


def flag_suppressions(engine: Engine, run_id: str, as_of: datetime) -> dict[str, int]:
    """Add the snapshot's invalid-address and duplicate-contact suppressions (existing rows are
    kept as they are) and lift hygiene's own flags whose cause is gone; returns counts."""
    counts: dict[str, int] = {"lifted": 0}
    with engine.begin() as conn:
        for channel, reason, flagged, proof in _flags():
            ours = and_(S.c.source == SOURCE, S.c.channel == channel, S.c.reason == reason)
            counts["lifted"] += conn.execute(
                delete(S).where(ours, ~exists().where(Q.c.contact_id == S.c.contact_id, flagged))
            ).rowcount
            rows = select(
                Q.c.contact_id,
                literal(channel),
                literal(reason),
                literal(SOURCE),
                proof,
                literal(as_of, DateTime()),
            ).where(flagged)
            counts[f"{reason}_{channel}"] = conn.execute(
                insert_ignore(conn, S).from_select(
                    ["contact_id", "channel", "reason", "source", "proof", "created_at"], rows
                )
            ).rowcount
    return counts


def _count_if(condition: ColumnElement) -> ColumnElement:
    return func.coalesce(func.sum(case((condition, 1), else_=0)), 0)


def _count_unless(condition: ColumnElement) -> ColumnElement:
    """Rows where ``condition`` is not true (NULL counts, as a rule that is NULL stops no message)."""
    return func.coalesce(func.sum(case((condition, 0), else_=1)), 0)


def _snapshot_counts(conn: Connection) -> dict[str, int]:
    lacks = {name: concat(",", Q.c.missing_fields, ",").like(f"%,{name},%") for name in REQUIRED_FIELDS}
    row = (
        conn.execute(
            select(
                func.count().label("contacts"),
                _count_if(Q.c.missing_fields.is_(None)).label("required_fields_filled"),
                _count_if(Q.c.email_valid.is_(None)).label("missing_email"),
                _count_if(Q.c.phone_valid.is_(None)).label("missing_phone"),
                *(_count_if(condition).label(f"missing_{name}") for name, condition in lacks.items()),
                _count_if(Q.c.email_valid.is_(False)).label("invalid_email"),
                _count_if(Q.c.phone_valid.is_(False)).label("invalid_phone"),
                _count_if(Q.c.survivor_id.is_not(None)).label("duplicate_contacts"),
                func.count(func.distinct(Q.c.survivor_id)).label("duplicate_groups"),
            )
        )
        .mappings()
        .one()
    )
    return {name: int(value) for name, value in row.items()}


def consent_channels() -> list[str]:
    """The channels that ask the contact's consent (a sales task does not): those with a coverage figure."""
    return [name for name in registry.names() if registry.get(name).consent]


def _consent_counts(conn: Connection, as_of: datetime) -> dict[str, int]:
    in_force = consent_in_force(as_of)
    granted = dict.fromkeys(consent_channels(), 0) | dict(
        conn.execute(
            select(in_force.c.channel, func.count())
            .select_from(in_force.join(Q, Q.c.contact_id == in_force.c.contact_id))
            .where(in_force.c.status == "granted", in_force.c.channel.in_(consent_channels()))
            .group_by(in_force.c.channel)
        ).all()
    )
    return {f"consent_granted_{channel}": n for channel, n in granted.items()}


def _delivery_counts(conn: Connection, as_of: datetime) -> dict[str, int]:
    m = schema.messages
    out, bounced = conn.execute(
        select(func.count(), _count_if(m.c.status == Status.BOUNCED)).where(
            m.c.status.in_(WENT_OUT), m.c.sent_at <= as_of
        )
    ).one()
    return {"messages_out": int(out), Status.BOUNCED: int(bounced)}


def _share(part: float, whole: float) -> float:
    return part / whole if whole else 0.0


def figures(counts: Mapping[str, int]) -> dict[str, float]:
    """Every count plus the rates derived from them (see the module docstring)."""
    contacts = counts["contacts"]
    rates = {
        "required_fields_filled_rate": _share(counts["required_fields_filled"], contacts),
        "duplicate_rate": _share(counts["duplicate_contacts"], contacts),
        "invalid_email_rate": _share(counts["invalid_email"], contacts),
        "invalid_phone_rate": _share(counts["invalid_phone"], contacts),
        "bounce_rate": _share(counts[Status.BOUNCED], counts["messages_out"]),
    }
    rates |= {f"consent_coverage_{c}": _share(counts[f"consent_granted_{c}"], contacts) for c in consent_channels()}
    return {name: float(value) for name, value in sorted({**counts, **rates}.items())}


MARKETING = "marketing"
REGION = "region"
TOPIC = "topic"
ELSEWHERE = "*"
"""The region of the contacts in no policy region (every contact, without regions): ``region:*``."""


def dimension(kind: str, name: str | None) -> str:
    """The ``dimension`` of a region's or a topic's figures: ``region:eu``, ``topic:offers``."""
    return f"{kind}:{name or ELSEWHERE}"


def _region_counts(conn: Connection, policy: Policy, as_of: datetime) -> dict[tuple[str, str], int]:
    """Per region, its contacts and, per channel, those its marketing consent rule lets through."""
    counts: dict[tuple[str, str], int] = {}
    basis = policy.basis_for(MARKETING)
    for channel in opt_out_channels():
        regions = policy.region_bases(channel, MARKETING)
        rules = suppression.consent_rules(channel, MARKETING, basis, as_of, regions)
        group = case(
            *(
                (g.member(Q.c.contact_id), literal(dimension(REGION, g.region)))
                for g in suppression.consent_groups(basis, regions)
            )
        ).label("region")
        blocked = or_(*(rule.predicate(Q.c.contact_id) for rule in rules))
        for g in suppression.consent_groups(basis, regions):
            counts[("contacts", dimension(REGION, g.region))] = 0
            counts[(f"reachable_{channel}", dimension(REGION, g.region))] = 0
        for region, contacts, reachable in conn.execute(
            select(group, func.count(), _count_unless(blocked)).select_from(Q).group_by(group)
        ):
            counts[("contacts", region)] = int(contacts)
            counts[(f"reachable_{channel}", region)] = int(reachable)
    return counts


def _topic_counts(conn: Connection, policy: Policy, as_of: datetime) -> dict[tuple[str, str], int]:
    """Per policy topic, the contacts opted out of it (none for a topic that is not optional)."""
    counts = {}
    for topic in policy.topics:
        rules = suppression.topic_rules(suppression.optional_topic(policy, topic), as_of)
        opted_out = or_(false(), *(rule.predicate(Q.c.contact_id) for rule in rules))
        counts[("opted_out", dimension(TOPIC, topic))] = int(
            conn.execute(select(_count_if(opted_out)).select_from(Q)).scalar_one()
        )
    return counts


def coverage_figures(counts: Mapping[tuple[str, str], int], contacts: int) -> dict[tuple[str, str], float]:
    """Every (metric, dimension) count plus its rate: ``reachable_rate_<channel>`` of a region's
    contacts, ``subscribed_rate`` of a topic (of all ``contacts``). A rate over no contacts is left
    out: not measured, which is not 0%."""
    rates = {}
    for (metric, part), n in counts.items():
        if metric.startswith("reachable_") and counts[("contacts", part)]:
            rates[(metric.replace("reachable_", "reachable_rate_", 1), part)] = n / counts[("contacts", part)]
        elif metric == "opted_out" and contacts:
            rates[("subscribed_rate", part)] = 1 - n / contacts
    return {key: float(value) for key, value in sorted({**counts, **rates}.items())}


def compute_figures(engine: Engine, run_id: str, as_of: datetime, policy: Policy) -> dict[str, float]:
    """Measure the snapshot, consents and deliveries as of the run and (re)write the run's rows of
    ``lifecycle_data_quality``, with consent coverage by region and by topic under ``policy``;
    returns the figures of the whole CRM."""
    dq = schema.data_quality
    with engine.begin() as conn:
        result = figures(_snapshot_counts(conn) | _consent_counts(conn, as_of) | _delivery_counts(conn, as_of))
        coverage = coverage_figures(
            _region_counts(conn, policy, as_of) | _topic_counts(conn, policy, as_of), int(result["contacts"])
        )
        conn.execute(delete(dq).where(dq.c.run_id == run_id))
        rows = {(metric, ""): value for metric, value in result.items()} | coverage
        conn.execute(
            insert(dq),
            [
                {"run_id": run_id, "as_of": as_of, "metric": metric, "dimension": part, "value": value}
                for (metric, part), value in rows.items()
            ],
        )
    return result
