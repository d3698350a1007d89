"""``lifecycle demo``: seed a synthetic CRM and run every program DAG through real Airflow.

Everything lives in ``.demo/`` (Airflow home on SQLite, the CRM database; ``LIFECYCLE_DEMO_DIR``
moves it) and is recreated on each run. With ``--warehouse`` the CRM is read from a warehouse-shaped
DuckDB file (``.demo/warehouse.duckdb``) through ``config/examples/warehouse/sources.yml``, and
the engine's state is a SQLite file of its own (``.demo/crm.db``).

Each program DAG runs with ``dag.test()`` for several consecutive as-of days, so multi-step
journeys advance, deferred messages are released and caps bite. After the simulation the demo adds
the channel tour (``config/examples/demo_channels/``: WhatsApp, SMS or email chosen per contact, an
in-app message through the webhook channel, sales tasks), so every channel sends through the
sandbox. The demo ends with a per-program funnel table read back from ``lifecycle_kpis`` and the
figures per channel.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from lifecycle.airflow.pools import pool_set_args
from lifecycle.devtools import local
from lifecycle.model.ledger import EnrollmentState, Status
from lifecycle.paths import PROJECT_ROOT

WORK = Path(os.environ.get("LIFECYCLE_DEMO_DIR", PROJECT_ROOT / ".demo"))
FUNNEL_COLUMNS = (
    "audience",
    "enrolled",
    EnrollmentState.EXITED,
    Status.PLANNED,
    Status.HELD_OUT,
    Status.SUPPRESSED,
    Status.CAPPED,
    Status.DEFERRED,
    Status.SKIPPED,
    Status.SENT,
    Status.DRY_RUN,
    Status.FAILED,
    Status.UNKNOWN,
)


def _airflow_bin() -> str:
    return str(Path(sys.executable).with_name("airflow"))


def _print_table(engine) -> None:
    from sqlalchemy import func, select

    from lifecycle.model import schema

    k = schema.kpis
    rows = select(k.c.program, k.c.metric, func.sum(k.c.value)).group_by(k.c.program, k.c.metric)
    figures: dict[str, dict[str, float]] = {}
    with engine.connect() as conn:
        for program, metric, value in conn.execute(rows):
            if not metric.startswith("kpi_"):
                figures.setdefault(program, {})[metric] = value
    header = f"{'program':<16}" + "".join(f"{c:>11}" for c in FUNNEL_COLUMNS)
    print(
        "\nFunnel per program, summed over the simulated days (their messages are simulated and recorded"
        f" as dry_run) and the DAG runs (theirs go through the SDKs to the sandbox: sent)\n{header}\n"
        + "-"
        * len(header)
    )
    for program in sorted(figures):
        row = figures[program]
        print(f"{program:<16}" + "".join(f"{int(row.get(c, 0)):>11}" for c in FUNNEL_COLUMNS))
    _print_reasons(engine)


def _print_reasons(engine) -> None:
    from sqlalchemy import func, select

    from lifecycle.model import schema

    m = schema.messages
    query = (
        select(m.c.status, m.c.reason, func.count())
        .where(m.c.reason.is_not(None))
        .group_by(m.c.status, m.c.reason)
        .order_by(m.c.status, func.count().desc())
    )
    statuses = select(m.c.status, func.count()).group_by(m.c.status).order_by(func.count().desc())
    with engine.connect() as conn:
        print("\nLedger after provider webhooks: " + ", ".join(f"{s} {n}" for s, n in conn.execute(statuses)))
    print("\nWhy messages did not go out (all programs)")
    with engine.connect() as conn:
        for status, reason, n in conn.execute(query):
            print(f"  {status:<10} {reason:<48} {n:>7}")


CHANNEL_TOUR = PROJECT_ROOT / "config" / "examples" / "demo_channels"
CONTENT_SID = "HX" + "d" * 32  # the approved WhatsApp content template demo_channels/thank_you names
CONTENT_TEXT = "Hi {{1}}, thank you for being with {{2}}. A thank-you offer is waiting in your account."
WHATSAPP_OPT_IN_PERCENT = 60
"""The share of the contacts with SMS marketing consent that the demo also opts in to WhatsApp
(the synthetic CRM records no WhatsApp opt-in): the rest get the tour's offer by SMS or email."""
ADS_OPT_IN_PERCENT = 50
"""The share of the contacts with email marketing consent that the demo opts in to the ``ads``
purpose (the synthetic CRM records none), so the tour's ad audience has members."""


def _add_channel_tour(engine) -> None:
    """Add the channel tour's programs and templates to copies of the config and the templates
    (``.demo/config``, ``.demo/templates``) and point the DAGs and the web app at them; opt a share
    of the contacts in to WhatsApp, every contact with email consent in to in-app messages and a
    share of them in to the ``ads`` purpose (the tour's paid audience)."""
    from sqlalchemy import insert, select

    from lifecycle.engine.ad_audiences import ADS_PURPOSE
    from lifecycle.model import schema
    from lifecycle.model.db import bucket_of

    config = WORK / "config"
    if not config.exists():
        shutil.copytree(PROJECT_ROOT / "config", config)
    for program in sorted((CHANNEL_TOUR / "programs").glob("*.yml")):
        shutil.copy(program, config / "programs" / program.name)
    templates = WORK / "templates"
    shutil.copytree(PROJECT_ROOT / "include" / "templates", templates)
    shutil.copytree(CHANNEL_TOUR / "templates", templates, dirs_exist_ok=True)
    local.apply({"LIFECYCLE_CONFIG_DIR": str(config), "LIFECYCLE_TEMPLATES_DIR": str(templates)})
    c = schema.consents
    opted: dict[str, int] = {}
    with engine.begin() as conn:
        for channel, source, share, purpose in (
            ("whatsapp", "sms", WHATSAPP_OPT_IN_PERCENT, "marketing"),
            ("webhook", "email", 100, "marketing"),
            (ADS_PURPOSE, "email", ADS_OPT_IN_PERCENT, ADS_PURPOSE),
        ):
            newest: dict[str, tuple[datetime, str]] = {}
            for contact_id, status, at in conn.execute(
                select(c.c.contact_id, c.c.status, c.c.captured_at)
                .where(c.c.channel == source, c.c.purpose == "marketing")
                .order_by(c.c.captured_at)
            ):
                newest[contact_id] = (at, status)
            rows = [
                {
                    "contact_id": contact_id,
                    "channel": channel,
                    "purpose": purpose,
                    "status": "granted",
                    "source": "demo_opt_in",
                    "captured_at": at,
                }
                for contact_id, (at, status) in sorted(newest.items())
                if status == "granted" and bucket_of(f"demo-opt-in:{channel}:{contact_id}") < share * 100
            ]
            if rows:
                conn.execute(insert(c), rows)
            opted[channel] = len(rows)
    names = ", ".join(sorted(p.stem for p in (CHANNEL_TOUR / "programs").glob("*.yml")))
    print(
        f"[demo] channel tour added from {CHANNEL_TOUR}: {names}; {opted['whatsapp']:,} contacts opted in "
        f"to WhatsApp, {opted['webhook']:,} to in-app messages, {opted[ADS_PURPOSE]:,} to ads"
    )


PLANTED_UPLIFT = {
    "welcome": 0.35,
    "reactivation": 0.25,
    "education": 0.10,
    "winback": 0.10,
    "upsell": 0.08,
    "abandoned_cart": 0.10,
}
REPORT_DAGS = ("data_hygiene", "kpi_digest")
SCORING_DAGS = ("lifecycle_scoring",)


def run_demo(contacts: int, days: int, as_of: datetime, sim_days: int = 6, warehouse: bool = False) -> int:
    """Run the demo; returns a process exit code (non-zero when a DAG run failed).

    1. A simulation of the ``sim_days`` days before ``as_of`` through the same pipeline as the
       DAGs (simulated sends, recorded as ``dry_run``), where simulated contacts respond with a
       planted uplift over the holdout.
    2. ``lifecycle_scoring`` (the predictive scores), then every program DAG through real Airflow
       for ``days`` days from ``as_of``, sending through
       the provider sandbox, whose signed webhooks come back into the ledger.
    3. ``data_hygiene`` and ``kpi_digest`` through Airflow; the digest goes to the sandbox and to
       ``.demo/digest.html``.

    ``warehouse``: after step 1 the CRM is written in the warehouse shape to a DuckDB file, which
    becomes ``crm_default`` (read-only) with the shipped example mapping; the SQLite file stays the
    state (``lifecycle_state``), and every DAG run's ``sync_source`` copies the warehouse into it.
    """
    if WORK.exists():
        shutil.rmtree(WORK)
    crm_db = WORK / "crm.db"
    env = local.airflow_env(WORK, crm_db) | {"AIRFLOW__LOGGING__LOGGING_LEVEL": "WARNING"}
    local.apply(env)
    started = time.perf_counter()
    print(f"[demo] Airflow metadata database in {env['AIRFLOW_HOME']}")
    subprocess.run([_airflow_bin(), "db", "migrate"], check=True, capture_output=True)
    subprocess.run([_airflow_bin(), *pool_set_args()], check=True, capture_output=True)  # the send tasks' pool

    from lifecycle.devtools.simulation import simulate
    from lifecycle.model.db import get_engine

    url = f"sqlite:///{crm_db}"
    print(
        f"[demo] seeding {contacts:,} contacts as of {as_of:%Y-%m-%d %H:%M} and simulating the {sim_days} days "
        "before it with a planted uplift ..."
    )
    report = simulate(url, contacts, sim_days, as_of - timedelta(days=sim_days), PLANTED_UPLIFT, crm_as_of=as_of)
    print(report.render())
    engine = get_engine(url)
    if warehouse:
        _use_warehouse(engine, crm_db)
    _add_channel_tour(engine)

    from lifecycle.sandbox import SandboxServer

    # The web app runs in a process of its own: the DAG tasks run in this one (dag.test).
    web = local.WebApp(process=True)
    sandbox = SandboxServer(
        sendgrid_webhook_url=f"{web.base_url}/webhooks/sendgrid",
        twilio_inbound_url=f"{web.base_url}/webhooks/twilio/inbound",
    ).start()
    local.apply(local.provider_connections(sandbox, web.base_url, link_secret=secrets.token_urlsafe(32)))
    sandbox.approve_content(CONTENT_SID, CONTENT_TEXT)
    web.start()
    print(f"[demo] provider sandbox at {sandbox.url}; webhooks and unsubscribe at {web.base_url}")
    try:
        failures = _run_dags(as_of, days)
        flushed = sandbox.flush()
        print(f"[demo] provider webhooks delivered back into the ledger: {flushed}")
        accepted = sandbox_counts(sandbox)
        print("[demo] sandbox accepted " + ", ".join(f"{n} {what}" for what, n in accepted.items()))
        _print_audiences(engine, sandbox)
    finally:
        sandbox.stop()
        web.stop()
    _print_table(engine)
    _print_channels(engine, as_of + timedelta(days=days))
    _print_scores(engine)
    _write_digest(engine, as_of + timedelta(days=days - 1))
    print(f"\n[demo] done in {time.perf_counter() - started:.0f}s; {len(failures)} failed run(s)")
    return 1 if failures else 0


def sandbox_counts(sandbox) -> dict[str, int]:
    """What the sandbox accepted, per channel: emails, SMS, WhatsApp messages, webhook posts
    (in-app messages) and sales tasks."""
    outbound = [m for m in sandbox.twilio_messages() if m.get("direction") != "inbound"]
    whatsapp = sum(str(m.get("to", "")).startswith("whatsapp:") for m in outbound)
    return {
        "emails": len(sandbox.sendgrid_messages()),
        "SMS": len(outbound) - whatsapp,
        "WhatsApp messages": whatsapp,
        "webhook posts": len(sandbox.webhook_deliveries()),
        "sales tasks": len(sandbox.sales_tasks()),
    }


def _print_audiences(engine, sandbox) -> None:
    """Each program's ad audience: the rows the sandbox's ad platform holds, the rows the state
    records as synced (the two agree), and the last sync's adds and removes."""
    from lifecycle import config
    from lifecycle.engine.ad_audiences import audience_status

    for pid, program in sorted(config.load_all_programs()[0].items()):
        if program.audience_sync is None:
            continue
        held = len(sandbox.audience(program.audience_sync.audience))
        for status in audience_status(engine, pid):
            print(
                f"[demo] ad audience {status.audience} of {pid}: {held:,} rows in the sandbox, {status.size:,} "
                f"recorded as synced; last sync added {status.last_added:,}, removed {status.last_removed:,}"
            )


def _print_channels(engine, end: datetime) -> None:
    """Every program's messages per channel (the channel each went on), summed, and why the
    channel-choosing steps chose as they did."""
    from sqlalchemy import func, select

    from lifecycle import config
    from lifecycle.model import schema
    from lifecycle.reporting import performance

    programs, _errors = config.load_all_programs()
    totals: dict[str, performance.ChannelFigures] = {}
    for rows in performance.channel_figures(engine, dict.fromkeys(programs, (None, end))).values():
        for row in rows:
            total = totals.setdefault(row.channel, performance.ChannelFigures(row.channel))
            for name in performance.CHANNEL_FIGURES:
                setattr(total, name, getattr(total, name) + getattr(row, name))
    header = f"{'channel':<12}" + "".join(f"{name:>11}" for name in performance.CHANNEL_FIGURES)
    print(f"\nMessages per channel, all programs (simulated: the simulation's sends)\n{header}\n" + "-" * len(header))
    for channel in sorted(totals):
        row = totals[channel]
        print(f"{channel:<12}" + "".join(f"{getattr(row, name):>11}" for name in performance.CHANNEL_FIGURES))
    m = schema.messages
    query = (
        select(m.c.channel, m.c.channel_reason, func.count())
        .where(m.c.channel_reason.is_not(None))
        .group_by(m.c.channel, m.c.channel_reason)
        .order_by(func.count().desc())
    )
    with engine.connect() as conn:
        reasons = conn.execute(query).all()
    if reasons:
        print("\nWhy a message went on its channel (steps that choose, and fallbacks)")
        for channel, reason, n in reasons:
            print(f"  {channel:<10} {reason:<88} {n:>7}")


def _use_warehouse(crm, state_db: Path) -> None:
    """Write the CRM as a DuckDB warehouse, make it the read-only source with the example mapping, and
    keep ``state_db`` as the state."""
    from lifecycle.devtools.warehouse import EXAMPLE_MAPPING, write_warehouse

    duck = WORK / "warehouse.duckdb"
    write_warehouse(crm, f"duckdb:///{duck}")
    config = WORK / "config"
    shutil.copytree(PROJECT_ROOT / "config", config)
    (config / "sources.yml").write_text(EXAMPLE_MAPPING.read_text())
    local.apply(
        {
            "LIFECYCLE_CONFIG_DIR": str(config),
            "AIRFLOW_CONN_CRM_DEFAULT": local.connection_json("duckdb", host=str(duck)),
            "AIRFLOW_CONN_LIFECYCLE_STATE": local.connection_json("sqlite", host=str(state_db)),
        }
    )
    print(f"[demo] the CRM is now a warehouse-shaped DuckDB file, {duck}, mapped by {config / 'sources.yml'}")
    print(f"[demo] the engine's state stays in {state_db}; each DAG run starts by copying the warehouse into it")


def _run_dags(as_of: datetime, days: int) -> list[tuple[str, datetime]]:
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(PROJECT_ROOT / "dags"))
    if bag.import_errors:
        raise SystemExit(f"[demo] DAG import errors: {bag.import_errors}")
    programs = sorted(d for d, dag in bag.dags.items() if "program" in dag.tags)
    last = as_of + timedelta(days=days - 1)
    # The scores first (as of the hour before the first program runs), so segments, templates and a
    # next-best-action policy can read them; then the programs day by day; then the reports.
    schedule = [(as_of - timedelta(hours=1), dag_id) for dag_id in SCORING_DAGS if dag_id in bag.dags]
    schedule += [(as_of + timedelta(days=day), dag_id) for day in range(days) for dag_id in programs]
    schedule += [(last + timedelta(hours=1), dag_id) for dag_id in REPORT_DAGS if dag_id in bag.dags]
    failures = []
    for when, dag_id in schedule:
        logical = when.replace(tzinfo=UTC)
        t0 = time.perf_counter()
        run = bag.get_dag(dag_id).test(logical_date=logical)
        state = str(getattr(run, "state", "unknown"))
        print(f"[demo] {dag_id:<16} as of {logical:%Y-%m-%d %H:%M}  {state:<8} {time.perf_counter() - t0:5.1f}s")
        if not state.endswith("success"):
            failures.append((dag_id, logical))
    return failures


def _print_scores(engine) -> None:
    """The scoring DAG's models (validation AUC against the baseline, published or why not) and how
    many contacts each published score covers."""
    from lifecycle.reporting.scores import score_views

    print("\nPredictive scores (lifecycle_scoring; validation on the most recent 30 days)")
    for view in score_views(engine):
        model = view["model"]
        if model is None:
            print(f"  {view['name']:<20} not trained")
            continue
        verdict = "published" if model["published"] else f"not published: {model['reason']}"
        print(
            f"  {view['name']:<20} AUC {model['auc']} vs baseline {model['baseline_auc']}  Brier {model['brier']}  "
            f"{view['scored']:,} contacts scored  {verdict}"
        )


def _write_digest(engine, as_of: datetime) -> None:
    from lifecycle import config
    from lifecycle.reporting import measurement
    from lifecycle.reporting.digest import build_digest, records

    programs, _errors = config.load_all_programs()
    kpis = measurement.program_kpis(engine, programs, as_of)
    print("\nPrimary KPI per program (treatment vs program holdout, 95% CI)")
    for row in records(kpis):
        print(
            f"  {row['program']:<16} treatment {row['treatment_rate']:7.1%} (n={row['treatment_n']:<5}) "
            f"holdout {row['holdout_rate']:7.1%} (n={row['holdout_n']:<4}) "
            f"lift {row['lift_vs_holdout'] * 100:+6.1f} pts "
            f"[{row['lift_vs_holdout_ci_low'] * 100:+.1f}, {row['lift_vs_holdout_ci_high'] * 100:+.1f}]"
        )
    digest = build_digest(engine, programs, config.load_policy(), as_of)
    html = digest.html
    for image in digest.images:
        (WORK / image.filename).write_bytes(image.data)
        html = html.replace(f"cid:{image.content_id}", image.filename)
    (WORK / "digest.html").write_text(html, encoding="utf-8")
    (WORK / "digest.txt").write_text(digest.text, encoding="utf-8")
    print(f"[demo] the stakeholder digest was sent to the sandbox and written to {WORK / 'digest.html'}")
