"""The synthetic CRM in a warehouse's shape: what a Segment/RudderStack-fed warehouse would hold.

:func:`write_warehouse` writes a canonical CRM as ``users`` (its own stage names, the consent in
force as booleans: true granted, false withdrawn, NULL none or denied), ``companies``, ``tracks``
(``event`` + JSON ``properties``), ``orders`` (the purchases), ``billing``, ``deals`` and
``support_tickets`` into SQLite, DuckDB or MariaDB; :func:`mapping` is its ``config/sources.yml``,
shipped as ``config/examples/warehouse/sources.yml``. ``lifecycle seed --shape warehouse`` and
``lifecycle demo --warehouse`` use it; the equivalence tests prove it decides the
canonical ledger.
"""

from __future__ import annotations

import json
import tempfile
from datetime import datetime
from pathlib import Path

import pandas as pd
from sqlalchemy import Engine, String, cast, select

from lifecycle.devtools.seed import EVENT_TYPES, SeedReport, seed_crm
from lifecycle.model import schema
from lifecycle.model.db import get_engine
from lifecycle.paths import PROJECT_ROOT

EXAMPLE_MAPPING = PROJECT_ROOT / "config" / "examples" / "warehouse" / "sources.yml"
STAGES = {
    "subscriber": "newsletter",
    "lead": "lead",
    "trial": "trialing",
    "customer": "customer_active",
    "churned": "customer_churned",
}
SUBSCRIPTION_STATES = {"trialing": "trial", "active": "paid", "past_due": "overdue", "cancelled": "canceled"}
CARD_STATES = {"ok": "current", "card_expiring": "expiring", "failed": "declined"}
DEAL_STAGES = {
    "prospecting": "Prospecting",
    "qualification": "Qualified",
    "proposal": "Proposal Sent",
    "negotiation": "Negotiation",
    "closed_won": "Closed Won",
    "closed_lost": "Closed Lost",
}
TICKET_STATES = {"open": "new", "pending": "waiting", "solved": "closed"}
CONSENT_COLUMNS = {
    ("email", "marketing"): "email_opt_in",
    ("email", "transactional"): "email_service_opt_in",
    ("sms", "marketing"): "sms_opt_in",
    ("sms", "transactional"): "sms_service_opt_in",
}


def segment_name(event_type: str) -> str:
    """``cart_abandoned`` as a Segment track call names it: ``Cart Abandoned``."""
    return event_type.replace("_", " ").title()


def _frames(crm: Engine) -> dict[str, pd.DataFrame]:
    tables = schema.CRM_TABLES.items()
    with crm.connect() as conn:
        # Events' properties as the JSON text the database holds: only the purchases' are parsed.
        columns = {name: [cast(c, String) if c.name == "properties" else c for c in t.columns] for name, t in tables}
        read = {name: pd.read_sql(select(*columns[name]), conn) for name, _t in tables}
    contacts, consents, events = read["contacts"], read["consents"], read["events"]
    users = pd.DataFrame(
        {
            "id": contacts.contact_id,
            "company_id": contacts.account_id,
            "email": contacts.email,
            "phone": contacts.phone,
            "first_name": contacts.first_name,
            "last_name": contacts.last_name,
            "country": contacts.country,
            "region": contacts.region,
            "tz": contacts.timezone,
            "locale": contacts.locale,
            "job_role": contacts.role,
            "industry": contacts.industry,
            "stage": contacts.lifecycle_stage.map(STAGES),
            "plan": contacts.plan,
            "mrr": contacts.mrr,
            "ltv": contacts.ltv,
            "signed_up_at": contacts.created_at,
            "last_seen_at": contacts.last_active_at,
            "churned_at": contacts.churned_at,
            "churn_reason": contacts.churn_reason,
            "owner": contacts.owner,
            "updated_at": contacts.created_at,
        }
    )
    consents = consents.sort_values("captured_at", kind="stable")  # the newest row is the one in force
    for (channel, purpose), name in CONSENT_COLUMNS.items():
        rows = consents[(consents.channel == channel) & (consents.purpose == purpose)].set_index("contact_id")
        latest = rows[~rows.index.duplicated(keep="last")]
        # A boolean says granted or withdrawn; a denied consent is no consent (NULL), as it decides.
        picked = latest.reindex(users.id.to_numpy())
        flags = picked.status.map({"granted": True, "withdrawn": False})
        users[name] = pd.array(flags.astype(object).where(flags.notna(), None).to_numpy(), dtype="boolean")
        users[f"{name}_at"] = pd.to_datetime(picked.captured_at.to_numpy())
    purchases = events.event_type == "purchase"
    tracks = pd.DataFrame(
        {
            "message_id": events.event_id,
            "user_id": events.contact_id,
            "event": events.event_type.map(segment_name),
            "timestamp": events.occurred_at,
            "properties": events.properties.fillna("{}"),
        }
    )[~purchases]
    bought = events[purchases]
    bought_props = bought.properties.map(lambda p: json.loads(p or "{}"))
    orders = pd.DataFrame(
        {
            "id": bought.event_id,
            "user_id": bought.contact_id,
            "order_ref": [p.get("order_id") for p in bought_props],
            "product": [p.get("product") for p in bought_props],
            "amount": pd.Series([p.get("amount") for p in bought_props], index=bought.index, dtype="float64"),
            "ordered_at": bought.occurred_at,
        }
    )
    accounts, subs, opps, tickets = read["accounts"], read["subscriptions"], read["opportunities"], read["tickets"]
    return {
        "users": users,
        "companies": accounts.rename(columns={"account_id": "id", "name": "company_name", "employees": "headcount"}),
        "tracks": tracks,
        "orders": orders,
        "billing": pd.DataFrame(
            {
                "sub_id": subs.subscription_id,
                "customer_id": subs.contact_id,
                "company_id": subs.account_id,
                "plan_name": subs.plan,
                "state": subs.status.map(SUBSCRIPTION_STATES),
                "renewal_date": subs.renews_at,
                "card_status": subs.billing_status.map(CARD_STATES),
                "monthly": subs.mrr,
            }
        ),
        "deals": pd.DataFrame(
            {
                "id": opps.opportunity_id,
                "company_id": opps.account_id,
                "user_id": opps.contact_id,
                "pipeline_stage": opps.stage.map(DEAL_STAGES),
                "amount": opps.amount,
                "modified_at": opps.updated_at,
            }
        ),
        "support_tickets": pd.DataFrame(
            {
                "id": tickets.ticket_id,
                "requester": tickets.contact_id,
                "state": tickets.status.map(TICKET_STATES),
                "created": tickets.opened_at,
                "solved": tickets.closed_at,
            }
        ),
    }


def write_warehouse(crm: Engine, url: str) -> None:
    """Write ``crm`` in the warehouse shape at ``url`` (a SQLite or DuckDB file, or a MariaDB database)."""
    frames = _frames(crm)
    if url.startswith("duckdb"):
        import duckdb

        con = duckdb.connect(url.split(":///", 1)[1])
        for name, frame in frames.items():
            con.register("frame", frame)
            con.execute(f"CREATE TABLE {name} AS SELECT * FROM frame")
            con.unregister("frame")
        con.close()
        return
    if url.startswith("mysql"):
        from sqlalchemy import create_engine
        from sqlalchemy.dialects.mysql import DATETIME

        engine = create_engine(url)
        for name, frame in frames.items():
            # DATETIME keeps whole seconds unless told otherwise: keep the microseconds the canonical CRM has.
            stamps = {c: DATETIME(fsp=6) for c in frame.columns if pd.api.types.is_datetime64_any_dtype(frame[c])}
            frame.to_sql(name, engine, index=False, if_exists="replace", dtype=stamps)
        engine.dispose()
        return
    engine = get_engine(url)
    for name, frame in frames.items():
        frame.to_sql(name, engine, index=False, if_exists="replace")


def _consent_part(channel: str, purpose: str) -> str:
    column = CONSENT_COLUMNS[(channel, purpose)]
    return f"""
  - query: "SELECT id, {column}, {column}_at FROM users WHERE {column} IS NOT NULL"
    columns:
      contact_id: id
      channel: "'{channel}'"
      purpose: "'{purpose}'"
      status: {column}
      captured_at: {column}_at
      source: "'warehouse'"
    values:
      status: {{granted: true, withdrawn: false}}"""


def mapping() -> str:
    """The shape's ``config/sources.yml`` (the text of :data:`EXAMPLE_MAPPING`)."""
    stages = "\n".join(f"        {k}: {v}" for k, v in STAGES.items())
    events = "\n".join(f"        {e}: {segment_name(e)}" for e in EVENT_TYPES if e != "purchase")
    consents = "".join(_consent_part(c, p) for c, p in CONSENT_COLUMNS)
    return f"""# The warehouse-shaped synthetic CRM (lifecycle seed --shape warehouse) mapped onto the canonical model.
# Generated by lifecycle.devtools.warehouse.mapping(); README "Bring your own data" explains each part.
contacts:
  table: users
  watermark: updated_at
  columns:
    contact_id: id
    account_id: company_id
    email: email
    phone: phone
    first_name: first_name
    last_name: last_name
    country: country
    region: region
    timezone: tz
    locale: locale
    role: job_role
    industry: industry
    lifecycle_stage: stage
    plan: plan
    mrr: mrr
    ltv: ltv
    created_at: signed_up_at
    last_active_at: last_seen_at
    churned_at: churned_at
    churn_reason: churn_reason
    owner: owner
  values:
    lifecycle_stage:
{stages}
accounts:
  table: companies
  columns: {{account_id: id, name: company_name, industry: industry, employees: headcount, tier: tier}}
consents:{consents}
events:
  - table: tracks
    watermark: timestamp
    columns:
      event_id: message_id
      contact_id: user_id
      event_type: event
      occurred_at: timestamp
      properties: properties
    values:
      event_type:
{events}
  - table: orders
    watermark: ordered_at
    columns:
      event_id: id
      contact_id: user_id
      event_type: "'purchase'"
      occurred_at: ordered_at
      properties: {{order_id: order_ref, product: product, amount: amount}}
subscriptions:
  table: billing
  columns:
    subscription_id: sub_id
    contact_id: customer_id
    account_id: company_id
    plan: plan_name
    status: state
    renews_at: renewal_date
    billing_status: card_status
    mrr: monthly
  values:
    status: {{{", ".join(f"{k}: {v}" for k, v in SUBSCRIPTION_STATES.items())}}}
    billing_status: {{{", ".join(f"{k}: {v}" for k, v in CARD_STATES.items())}}}
opportunities:
  table: deals
  watermark: modified_at
  columns:
    opportunity_id: id
    account_id: company_id
    contact_id: user_id
    stage: pipeline_stage
    amount: amount
    updated_at: modified_at
  values:
    stage: {{{", ".join(f"{k}: {v}" for k, v in DEAL_STAGES.items())}}}
tickets:
  table: support_tickets
  columns: {{ticket_id: id, contact_id: requester, status: state, opened_at: created, closed_at: solved}}
  values:
    status: {{{", ".join(f"{k}: {v}" for k, v in TICKET_STATES.items())}}}
"""


def seed_warehouse(url: str, contacts: int, as_of: datetime, seed: int = 7) -> SeedReport:
    """Seed the synthetic CRM and write it in the warehouse shape at ``url`` (DuckDB, SQLite or MariaDB)."""
    if url.startswith("duckdb:///"):
        Path(url.split(":///", 1)[1]).unlink(missing_ok=True)
    with tempfile.TemporaryDirectory(prefix="lifecycle-seed-") as tmp:
        canonical_url = f"sqlite:///{Path(tmp) / 'canonical.db'}"
        report = seed_crm(canonical_url, contacts, as_of, seed=seed)
        engine = get_engine(canonical_url)
        write_warehouse(engine, url)
        engine.dispose()
    return report
