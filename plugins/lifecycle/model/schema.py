"""Table definitions: the canonical CRM input model and the engine's own ``lifecycle_*`` tables.

All timestamps are naive UTC (``DateTime`` without time zone) so SQLite and PostgreSQL compare
them the same way. The CRM tables are the user's: the engine only reads them (the synthetic
generator creates them for the demo). The engine tables are created by Alembic migrations.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    DateTime,
    Float,
    Index,
    Integer,
    MetaData,
    String,
    Subquery,
    Table,
    Text,
    UniqueConstraint,
    exists,
    select,
    union_all,
)
from sqlalchemy.sql.expression import ColumnElement

crm_metadata = MetaData()
engine_metadata = MetaData()

LIFECYCLE_STAGES = ("subscriber", "lead", "trial", "customer", "churned")
CHURN_REASONS = ("price", "fit", "complexity", "other")
CONSENT_PURPOSES = ("marketing", "transactional", "ads")
"""``ads``: the contact may be matched into paid-advertising audiences (``audience_sync``)."""
CONSENT_STATUSES = ("granted", "withdrawn", "denied")
CAPTURE_PENDING = "pending"
"""``lifecycle_consent_captures.status`` of a capture waiting for its confirmation link: no consent."""
CAPTURE_GRANTED = "granted"
"""``lifecycle_consent_captures.status`` of a confirmed capture (or a paper form): consent from ``confirmed_at``."""
SUBSCRIPTION_STATUSES = ("trialing", "active", "past_due", "cancelled")
BILLING_STATUSES = ("ok", "card_expiring", "failed")
OPPORTUNITY_STAGES = (
    "prospecting",
    "qualification",
    "proposal",
    "negotiation",
    "closed_won",
    "closed_lost",
)
TICKET_STATUSES = ("open", "pending", "solved")
CHANNEL_NAME_LENGTH = 32
"""How long a channel's name may be: the width of the ledger's and the suppression list's ``channel`` columns."""

# --- CRM input model ------------------------------------------------------------------------

contacts = Table(
    "contacts",
    crm_metadata,
    Column("contact_id", String(64), primary_key=True),
    Column("account_id", String(64)),
    Column("email", String(320)),
    Column("phone", String(64)),
    Column("first_name", String(200)),
    Column("last_name", String(200)),
    Column("country", String(2)),
    Column("region", String(100)),
    Column("timezone", String(64)),
    Column("locale", String(16)),
    Column("role", String(100)),
    Column("industry", String(100)),
    Column("lifecycle_stage", String(20)),
    Column("plan", String(50)),
    Column("mrr", Float),
    Column("ltv", Float),
    Column("created_at", DateTime),
    Column("last_active_at", DateTime),
    Column("churned_at", DateTime),
    Column("churn_reason", String(20)),
    Column("owner", String(100)),
    Index("ix_contacts_stage", "lifecycle_stage"),
    Index("ix_contacts_created", "created_at"),
    Index("ix_contacts_last_active", "last_active_at"),
)

accounts = Table(
    "accounts",
    crm_metadata,
    Column("account_id", String(64), primary_key=True),
    Column("name", String(200)),
    Column("industry", String(100)),
    Column("employees", Integer),
    Column("tier", String(20)),
)

consents = Table(
    "consents",
    crm_metadata,
    Column("contact_id", String(64), nullable=False),
    Column("channel", String(CHANNEL_NAME_LENGTH), nullable=False),
    Column("purpose", String(20), nullable=False),
    Column("status", String(10), nullable=False),
    Column("source", String(50)),
    Column("captured_at", DateTime, nullable=False),
    Column("proof", Text),
    Index("ix_consents_lookup", "contact_id", "channel", "purpose", "captured_at"),
)

events = Table(
    "events",
    crm_metadata,
    Column("event_id", String(64), primary_key=True),
    Column("contact_id", String(64), nullable=False),
    Column("event_type", String(50), nullable=False),
    Column("occurred_at", DateTime, nullable=False),
    Column("properties", JSON),
    Index("ix_events_contact_type_time", "contact_id", "event_type", "occurred_at"),
    Index("ix_events_type_time", "event_type", "occurred_at"),
)

subscriptions = Table(
    "subscriptions",
    crm_metadata,
    Column("subscription_id", String(64), primary_key=True),
    Column("contact_id", String(64)),
    Column("account_id", String(64)),
    Column("plan", String(50)),
    Column("status", String(20)),
    Column("renews_at", DateTime),
    Column("billing_status", String(20)),
    Column("mrr", Float),
    Index("ix_subscriptions_contact", "contact_id"),
    Index("ix_subscriptions_renews", "renews_at"),
)

opportunities = Table(
    "opportunities",
    crm_metadata,
    Column("opportunity_id", String(64), primary_key=True),
    Column("account_id", String(64)),
    Column("contact_id", String(64)),
    Column("stage", String(20)),
    Column("amount", Float),
    Column("updated_at", DateTime),
    Index("ix_opportunities_contact", "contact_id", "stage"),
)

tickets = Table(
    "tickets",
    crm_metadata,
    Column("ticket_id", String(64), primary_key=True),
    Column("contact_id", String(64)),
    Column("status", String(10)),
    Column("opened_at", DateTime),
    Column("closed_at", DateTime),
    Index("ix_tickets_contact_status", "contact_id", "status"),
)

CRM_TABLES = {
    "contacts": contacts,
    "accounts": accounts,
    "consents": consents,
    "events": events,
    "subscriptions": subscriptions,
    "opportunities": opportunities,
    "tickets": tickets,
}

# --- Engine tables ------------------------------------------------------------------------

audience = Table(
    "lifecycle_audience",
    engine_metadata,
    Column("program", String(64), primary_key=True),
    Column("run_id", String(250), primary_key=True),
    Column("contact_id", String(64), primary_key=True),
)

enrollments = Table(
    "lifecycle_enrollments",
    engine_metadata,
    Column("enrollment_id", Integer, primary_key=True, autoincrement=True),
    Column("program", String(64), nullable=False),
    Column("contact_id", String(64), nullable=False),
    Column("entry", Integer, nullable=False),
    Column("state", String(20), nullable=False),  # active | completed | exited
    Column("exit_reason", String(64)),
    Column("enrolled_at", DateTime, nullable=False),
    Column("exited_at", DateTime),
    Column("next_step", Integer, nullable=False, default=0),
    Column("last_step_at", DateTime),
    Column("anchor_at", DateTime),
    Column("group", String(16), nullable=False),  # treatment | holdout | control
    Column("variant", String(32)),
    Column("trigger", JSON),
    Column("triggered_at", DateTime),  # when the trigger event occurred: enrollment-relative steps count from it
    Column("last_planned_at", DateTime),  # as-of of the run that last planned a message (skips aside)
    Column("run_id", String(250)),
    UniqueConstraint("program", "contact_id", "entry", name="uq_enrollment_entry"),
    Index("ix_enrollments_program_state", "program", "state", "contact_id"),
    Index("ix_enrollments_contact", "contact_id", "state"),
)

CHANNEL_REASON_LENGTH = 200
"""``lifecycle_messages.channel_reason``'s width: a longer fallback reason is cut to it."""

messages = Table(
    "lifecycle_messages",
    engine_metadata,
    Column("message_id", Integer, primary_key=True, autoincrement=True),
    Column("idempotency_key", String(200), nullable=False, unique=True),
    Column("program", String(64), nullable=False),
    Column("priority", Integer, nullable=False, default=0),
    Column("enrollment_id", Integer, nullable=False),
    Column("entry", Integer, nullable=False),
    Column("step", String(64), nullable=False),
    Column("step_index", Integer, nullable=False),
    Column("contact_id", String(64), nullable=False),
    Column("channel", String(CHANNEL_NAME_LENGTH), nullable=False),
    Column("fallback_channel", String(CHANNEL_NAME_LENGTH)),
    Column("planned_channel", String(CHANNEL_NAME_LENGTH), nullable=False),
    Column("channel_reason", String(CHANNEL_REASON_LENGTH)),  # why this channel (ChannelReason)
    Column("template", String(200), nullable=False),
    Column("variant", String(32)),
    Column("group", String(16), nullable=False, default="treatment"),
    Column("status", String(20), nullable=False),
    Column("reason", String(200)),
    Column("due_at", DateTime, nullable=False),
    Column("send_after", DateTime),
    Column("send_run_id", String(250)),
    Column("batch", Integer),
    Column("attempts", Integer, nullable=False, default=0),
    Column("claimed_at", DateTime),
    Column("claim_token", String(64)),
    Column("provider_message_id", String(128)),
    Column("segments", Integer),
    Column("run_id", String(250), nullable=False),
    Column("planned_at", DateTime, nullable=False),
    Column("sent_at", DateTime),
    Column("updated_at", DateTime),
    Index("ix_messages_program_run_status", "program", "run_id", "status"),
    Index("ix_messages_contact_due", "contact_id", "due_at", "status"),
    Index("ix_messages_program_status", "program", "status", "send_after"),
    Index("ix_messages_send_batch", "send_run_id", "batch", "status"),
    Index("ix_messages_provider_id", "provider_message_id"),
)

provider_events = Table(
    "lifecycle_provider_events",
    engine_metadata,
    Column("event_pk", Integer, primary_key=True, autoincrement=True),
    Column("provider", String(20), nullable=False),
    Column("event_id", String(200), nullable=False),
    Column("event_type", String(40), nullable=False),
    Column("message_id", Integer),
    Column("provider_message_id", String(128)),
    Column("contact_id", String(64)),
    Column("occurred_at", DateTime, nullable=False),
    Column("received_at", DateTime, nullable=False),
    Column("payload", JSON),
    UniqueConstraint("provider", "event_id", name="uq_provider_event"),
    Index("ix_provider_events_message", "message_id"),
    # A contact's latest engagement (channel choice's ``last_engaged``).
    Index("ix_provider_events_contact_time", "contact_id", "occurred_at"),
)

suppressions = Table(
    "lifecycle_suppressions",
    engine_metadata,
    Column("suppression_id", Integer, primary_key=True, autoincrement=True),
    Column("contact_id", String(64), nullable=False),
    Column("channel", String(CHANNEL_NAME_LENGTH), nullable=False),
    Column("reason", String(40), nullable=False),
    Column("source", String(64), nullable=False),
    Column("proof", Text),
    Column("created_at", DateTime, nullable=False),
    # The normalised address an opt-out, bounce or spam report was about: it holds for every
    # contact with that address, whichever row (or duplicate) it came through.
    Column("address", String(320)),
    UniqueConstraint("contact_id", "channel", "reason", name="uq_suppression"),
    Index("ix_suppressions_contact", "contact_id", "channel"),
    Index("ix_suppressions_address", "address", "channel"),
)

topic_preferences = Table(
    "lifecycle_topic_preferences",
    engine_metadata,
    Column("preference_id", Integer, primary_key=True, autoincrement=True),
    Column("contact_id", String(64), nullable=False),
    Column("topic", String(32), nullable=False),
    # granted | withdrawn, as consents.status: the newest row per (contact, topic) is in force, and
    # no row means subscribed (the topic follows the contact's consent for the channel and purpose).
    Column("status", String(10), nullable=False),
    Column("source", String(50), nullable=False),
    Column("captured_at", DateTime, nullable=False),
    Column("proof", Text),
    Index("ix_topic_preferences_lookup", "contact_id", "topic", "captured_at"),
)

consent_captures = Table(
    "lifecycle_consent_captures",
    engine_metadata,
    Column("capture_id", Integer, primary_key=True, autoincrement=True),
    # The normalised address consent was given for (lower case, trimmed): a subscriber need not be a
    # CRM contact yet; suppression matches it to contacts by address, and by contact_id once known.
    Column("address", String(320), nullable=False),
    Column("channel", String(CHANNEL_NAME_LENGTH), nullable=False),
    Column("purpose", String(20), nullable=False),
    # pending (waiting for its confirmation link; grants nothing) | granted (confirmed, or a paper form)
    Column("status", String(10), nullable=False),
    Column("source", String(50), nullable=False),  # web_form | paper
    Column("form_id", String(64), nullable=False),
    Column("form_version", String(32), nullable=False),
    Column("consent_text", Text, nullable=False),  # the words the person agreed to, as shown
    Column("captured_at", DateTime, nullable=False),
    Column("confirmed_at", DateTime),  # when consent took effect: the confirmation, or a paper form's date
    Column("ip_address", String(45)),  # only where the policy records it (capture.record_ip)
    # A keyed hash of the IP address, for the per-IP rate limit only; never proof.
    Column("ip_key", String(32)),
    Column("contact_id", String(64)),  # the CRM contact with that address when it was confirmed, if any
    Column("import_key", String(64), unique=True),  # an imported row's identity: a re-run skips it
    Index("ix_consent_captures_address", "address", "channel", "purpose"),
    Index("ix_consent_captures_contact", "contact_id", "channel", "purpose"),
    Index("ix_consent_captures_ip", "ip_key", "captured_at"),
)

kpis = Table(
    "lifecycle_kpis",
    engine_metadata,
    Column("kpi_id", Integer, primary_key=True, autoincrement=True),
    Column("program", String(64), nullable=False),
    Column("run_id", String(250), nullable=False),
    Column("as_of", DateTime, nullable=False),
    Column("metric", String(64), nullable=False),
    Column("dimension", String(64), nullable=False, default=""),
    Column("value", Float, nullable=False),
    UniqueConstraint("program", "run_id", "metric", "dimension", name="uq_kpi"),
    Index("ix_kpis_program_asof", "program", "as_of"),
)

campaign_figures = Table(
    "lifecycle_campaign_figures",
    engine_metadata,
    Column("program", String(64), primary_key=True),
    Column("as_of", DateTime, nullable=False),  # the program's newest run the figures are of
    Column("run_id", String(250), nullable=False),
    Column("computed_at", DateTime, nullable=False),
    Column("version", Integer, nullable=False),  # the payload's format (reporting/figures.py VERSION)
    Column("payload", JSON, nullable=False),
)
"""The Campaigns page's figures per program as of its newest run, refreshed by the runs, the
due-steps sweep and data hygiene (:mod:`lifecycle.reporting.figures`); the page only reads them."""

# --- Data hygiene (written by the data_hygiene DAG; never the CRM's own rows) ----------------

contact_quality = Table(
    "lifecycle_contact_quality",
    engine_metadata,
    Column("contact_id", String(64), primary_key=True),
    Column("email_normalized", String(320)),
    Column("email_valid", Boolean),  # NULL: no email
    Column("email_problem", String(200)),
    Column("phone_e164", String(20)),
    Column("phone_valid", Boolean),  # NULL: no phone
    Column("phone_problem", String(100)),
    Column("missing_fields", String(200)),  # comma list; NULL: every required field filled
    Column("survivor_id", String(64)),  # the contact this one duplicates; NULL: it survives
    Column("duplicate_key", String(400)),
    Column("run_id", String(250), nullable=False),
    Column("checked_at", DateTime, nullable=False),
    Index("ix_contact_quality_email", "email_normalized"),
    Index("ix_contact_quality_phone", "phone_e164"),
    Index("ix_contact_quality_survivor", "survivor_id"),
)

data_quality = Table(
    "lifecycle_data_quality",
    engine_metadata,
    Column("run_id", String(250), primary_key=True),
    Column("as_of", DateTime, nullable=False),
    Column("metric", String(64), primary_key=True),
    # What the figure is of: '' for the whole CRM, ``region:<name>`` or ``topic:<name>`` for a part.
    Column("dimension", String(64), primary_key=True, server_default=""),
    Column("value", Float, nullable=False),
    Index("ix_data_quality_metric_asof", "metric", "as_of"),
)

# --- Source sync (written by the sync stage; the mirror tables are the canonical CRM tables above) --

source_sync = Table(
    "lifecycle_source_sync",
    engine_metadata,
    Column("entity", String(32), primary_key=True),
    Column("mapping", String(64), nullable=False),  # digest of the entity's mapping: a new mapping copies afresh
    Column("watermarks", JSON),  # per part of the mapping, the highest watermark value copied
    Column("row_count", Integer, nullable=False),
    Column("checksum", String(32), nullable=False),
    Column("synced_at", DateTime, nullable=False),
)

contact_attributes = Table(
    "lifecycle_contact_attributes",
    engine_metadata,
    Column("contact_id", String(64), primary_key=True),
    Column("attributes", JSON, nullable=False),  # {name: value} of every custom attribute sources.yml declares
)
"""The contacts' custom attributes (``contacts.custom`` in ``config/sources.yml``), beside the mirror."""

# --- Tracked events (the track endpoint's inbox) ----------------------------------------------

tracked_events = Table(
    "lifecycle_tracked_events",
    engine_metadata,
    Column("event_id", String(64), primary_key=True),  # "trk_" + sha256(message_id)[:40]
    Column("message_id", String(200), nullable=False, unique=True),
    Column("contact_id", String(64), nullable=False),
    Column("event_type", String(50), nullable=False),
    Column("occurred_at", DateTime, nullable=False),
    Column("received_at", DateTime, nullable=False),
    Column("properties", JSON),
    Index("ix_tracked_events_type_received", "event_type", "received_at"),
    Index("ix_tracked_events_contact_type_time", "contact_id", "event_type", "occurred_at"),
)
"""Events received by ``POST /lifecycle/track``, in the state: the engine reads them beside the
CRM's ``events`` through :func:`all_events`."""


def all_events(name: str, where: Callable[[Table], Iterable[ColumnElement[bool]]]) -> Subquery:
    """Every event the engine decides on, as one selectable with the columns of ``events``: the
    CRM's ``events`` (or their mirror) and the tracked events. A tracked event whose ``event_id``
    the CRM also holds counts once (the CRM's row).

    ``where`` gives the filters for a table (correlated to the enclosing statement where they
    name its columns); they are applied inside each half of the union, so each half reads its own
    ``(contact_id, event_type, occurred_at)`` index: SQLite does not push correlated filters (nor
    an enclosing ORDER BY ... LIMIT) into a UNION ALL, and would otherwise read every event. The
    inbox's half first asks, once per statement, whether the inbox holds any row: while it is
    empty, its half costs nothing per contact."""
    any_tracked = tracked_events.alias("any_tracked")
    inbox_in_use = exists(select(any_tracked.c.event_id).correlate_except(any_tracked))
    halves = []
    for table in (events, tracked_events):
        half = select(*(table.c[column.name] for column in events.columns)).where(*where(table))
        if table is tracked_events:
            half = half.where(inbox_in_use, ~exists().where(events.c.event_id == table.c.event_id))
        halves.append(half.correlate_except(table))
    return union_all(*halves).subquery(name)


# --- Event watch (written by the event trigger of realtime programs, in the triggerer) --------

event_watch = Table(
    "lifecycle_event_watch",
    engine_metadata,
    Column("program", String(64), primary_key=True),
    Column("mapping", String(64), nullable=False),  # digest of the events mapping: a new mapping starts afresh
    Column("marks", JSON, nullable=False),  # {"source": [highest watermark per mapping part], "inbox": received_at}
    Column("started_at", DateTime, nullable=False),  # when the watch began: older events are the schedule's
    Column("checked_at", DateTime, nullable=False),  # the last poll
    Column("fired_at", DateTime),  # the last time it asked Airflow for a run
    Column("waiting", Integer, nullable=False, default=0),  # trigger events no finished run has taken yet
    Column("oldest_waiting", DateTime),  # the oldest of them (occurred_at)
)
"""Where each realtime program's watcher is (its watermarks survive a triggerer restart) and what waits."""


# --- Activity write-back (written by the write_back stage) ------------------------------------

activity_writebacks = Table(
    "lifecycle_activity_writebacks",
    engine_metadata,
    Column("message_id", Integer, primary_key=True),  # the ledger's message, posted once
    Column("program", String(64), nullable=False),
    Column("activity_id", String(128)),  # the CRM's id for the activity, when it answered one
    Column("posted_at", DateTime, nullable=False),
)
"""Sent messages posted to the CRM as activities (policy ``write_back``): a re-run posts none twice."""


# --- Paid-audience sync (written by the sync_audience stage) ---------------------------------

ad_audience_members = Table(
    "lifecycle_ad_audience_members",
    engine_metadata,
    Column("program", String(64), primary_key=True),
    Column("audience", String(64), primary_key=True),  # the ad platform's audience id
    # One uploaded row: the SHA-256 hex of the normalised email and phone ('' for one not sent).
    Column("email_sha256", String(64), primary_key=True),
    Column("phone_sha256", String(64), primary_key=True),
    Column("added_at", DateTime, nullable=False),
)
"""What the ad platform's audience holds, as last synced: each run sends only the difference."""

ad_audience_syncs = Table(
    "lifecycle_ad_audience_syncs",
    engine_metadata,
    Column("sync_id", Integer, primary_key=True, autoincrement=True),
    Column("program", String(64), nullable=False),
    Column("audience", String(64), nullable=False),
    Column("run_id", String(250), nullable=False),
    Column("as_of", DateTime, nullable=False),
    Column("synced_at", DateTime, nullable=False),
    Column("added", Integer, nullable=False),
    Column("removed", Integer, nullable=False),
    Column("size", Integer, nullable=False),  # rows in the audience after the sync
    Index("ix_ad_audience_syncs_program", "program", "audience", "synced_at"),
)
"""One row per completed audience sync: its adds, removes and the audience's size after it."""


# --- Predictive scores (written by the lifecycle_scoring DAG) ---------------------------------

SCORE_NAMES = ("churn_risk", "purchase_propensity")
"""Every predictive score the engine computes (``lifecycle.engine.scoring``); segments and templates name them."""
SCORE_BANDS = 10
"""Bands of probability ([k/10, (k+1)/10), the last closed) the published scores are counted in."""

score_models = Table(
    "lifecycle_score_models",
    engine_metadata,
    Column("score", String(64), primary_key=True),  # e.g. churn_risk, purchase_propensity
    Column("model_version", String(64), primary_key=True),
    Column("trained_at", DateTime, nullable=False),
    Column("as_of", DateTime, nullable=False),  # the features' as-of time (the split's end)
    Column("algorithm", String(64), nullable=False),
    Column("features", JSON, nullable=False),  # the feature names, in order
    Column("n_train", Integer, nullable=False),
    Column("n_valid", Integer, nullable=False),
    Column("auc", Float),  # validation AUC of the model
    Column("baseline_auc", Float),  # validation AUC of the simple baseline it must beat
    Column("brier", Float),
    Column("calibration", JSON),  # [{"band": k, "predicted": p, "observed": o, "n": n}, ...]
    # The published scores when it published them: {"deciles": [{"decile", "contacts", "low", "high",
    # "mean"}, ...], "bands": [contacts with a value in [k/10, (k+1)/10), k = 0..9]}.
    Column("distribution", JSON),
    Column("published", Boolean, nullable=False),  # False: worse than the baseline, not applied
    Column("reason", Text),  # why it was not published, in words
)
"""Every trained model with its validation figures; only published ones write scores."""

scores = Table(
    "lifecycle_scores",
    engine_metadata,
    Column("contact_id", String(64), primary_key=True),
    Column("score", String(64), primary_key=True),
    Column("value", Float, nullable=False),  # a probability in [0, 1]
    Column("decile", Integer, nullable=False),  # 1 (lowest) .. 10 (highest) among scored contacts
    Column("model_version", String(64), nullable=False),
    Column("as_of", DateTime, nullable=False),
    Index("ix_lifecycle_scores_score_value", "score", "value"),
)
"""Each contact's newest published score per score name (one row per contact and score)."""
