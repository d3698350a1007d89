"""The weekly KPI digest built from a seeded CRM with three weeks of program runs, and sent
through the real SendGrid hook to the provider sandbox."""

from __future__ import annotations

import re
import shutil
from datetime import timedelta

import pytest
from sqlalchemy import func, insert, select, update

from lifecycle import config, paths
from lifecycle.airflow.digest_operators import digest_mail
from lifecycle.channels.sendgrid import SendGridHook
from lifecycle.devtools.local import connection_json
from lifecycle.model import schema
from lifecycle.model.ledger import WENT_OUT
from lifecycle.reporting import measurement
from lifecycle.reporting.digest import Digest, build_digest
from lifecycle.sandbox import DEFAULT_SENDGRID_KEY, SandboxServer
from tests.conftest import AS_OF
from tests.support.dagrun import run_dag
from tests.support.kpi_crm import seed_with_runs, shown_interval, shown_points, shown_rate

PLANTED = '<script>alert("crm")</script>'
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
MAX_CHART_BYTES = 40_000
DELIVERED, BOUNCED = 20, 3


@pytest.fixture(scope="module")
def crm(tmp_path_factory) -> tuple[str, object]:
    """2,000 seeded contacts, three weekly runs of every shipped program, some welcome emails
    delivered and bounced, and two data-hygiene runs (plus one after the digest's as-of time)."""
    url = f"sqlite:///{tmp_path_factory.mktemp('digest') / 'crm.db'}"
    with pytest.MonkeyPatch.context() as env:
        env.delenv("LIFECYCLE_CONFIG_DIR", raising=False)
        env.delenv("LIFECYCLE_TEMPLATES_DIR", raising=False)
        engine = seed_with_runs(url, AS_OF)
    m, dq = schema.messages, schema.data_quality
    with engine.begin() as conn:
        ids = (
            conn.execute(
                select(m.c.message_id).where(m.c.program == "welcome", m.c.status == "dry_run").order_by(m.c.message_id)
            )
            .scalars()
            .all()[: DELIVERED + BOUNCED]
        )
        conn.execute(update(m).where(m.c.message_id.in_(ids[:DELIVERED])).values(status="delivered"))
        conn.execute(update(m).where(m.c.message_id.in_(ids[DELIVERED:])).values(status="bounced"))
        figures = {
            "older": (AS_OF - timedelta(days=8), 0.015, 1990),
            "newest": (AS_OF - timedelta(days=1), 0.02, 2000),
            "future": (AS_OF + timedelta(days=1), 0.5, 9999),
        }
        conn.execute(
            insert(dq),
            [
                {"run_id": run, "as_of": at, "metric": metric, "value": value}
                for run, (at, duplicate_rate, contacts) in figures.items()
                for metric, value in (
                    ("duplicate_rate", duplicate_rate),
                    ("contacts", contacts),
                    ("consent_coverage_email", 0.83),
                )
            ],
        )
    assert len(ids) == DELIVERED + BOUNCED
    return url, engine


@pytest.fixture
def shipped(monkeypatch):
    """The shipped programs, policy and program-file errors."""
    monkeypatch.delenv("LIFECYCLE_CONFIG_DIR", raising=False)
    monkeypatch.delenv("LIFECYCLE_TEMPLATES_DIR", raising=False)
    programs, errors = config.load_all_programs()
    return programs, config.load_policy(), errors


@pytest.fixture(scope="module")
def digest(crm) -> Digest:
    """The digest of the shipped programs as of AS_OF, built once for the module."""
    with pytest.MonkeyPatch.context() as env:
        env.delenv("LIFECYCLE_CONFIG_DIR", raising=False)
        env.delenv("LIFECYCLE_TEMPLATES_DIR", raising=False)
        programs, errors = config.load_all_programs()
        return build_digest(crm[1], programs, config.load_policy(), AS_OF, errors)


@pytest.fixture(scope="module")
def sandbox():
    with SandboxServer() as server:
        yield server


def _use_sandbox(monkeypatch, sandbox: SandboxServer) -> None:
    monkeypatch.setenv(
        "AIRFLOW_CONN_SENDGRID_DEFAULT",
        connection_json(
            "generic",
            password=DEFAULT_SENDGRID_KEY,
            host=sandbox.url,
            extra={"from_email": "lifecycle@northwind.example", "from_name": "Northwind Lifecycle"},
        ),
    )


def _section(html: str, program_id: str) -> str:
    start = html.index(f'id="program-{program_id}"')
    following = html.find('id="program-', start + 1)
    return html[start : following if following > 0 else len(html)]


def test_every_program_is_listed_with_measurements_figures(crm, shipped, digest):
    programs, _policy, _errors = shipped
    kpis = measurement.program_kpis(crm[1], programs, AS_OF)
    assert set(digest.programs) == set(programs) == set(kpis["program"])
    assert digest.as_of == AS_OF and f"{AS_OF:%d %b %Y}" in digest.subject
    for row in kpis.to_dict("records"):
        card = _section(digest.html, row["program"])
        program = programs[row["program"]]
        assert program.name in card
        groups = [g for g in measurement.GROUPS if not (program.is_service and g == "control")]
        for group in groups:
            assert shown_rate(row[f"{group}_rate"]) in card
            assert f"{row[f'{group}_conversions']:,} of {row[f'{group}_n']:,}" in card
        assert ("Lift vs control" in card) is not program.is_service
        for other in groups[1:]:
            lift = f"lift_vs_{other}"
            assert f"Lift vs {other}: <b" in card
            assert shown_points(row[lift]) in card
            assert f"95% CI {shown_interval(row[f'{lift}_ci_low'], row[f'{lift}_ci_high'])}" in card
        if row["verdict"] == measurement.NO_WINNER:
            assert "no winner yet" in card
        text_block = digest.text.split(f"({row['program']}) ==")[1].split("\n== ")[0]
        assert f"treatment  {shown_rate(row['treatment_rate'])}" in text_block
        assert f"Lift vs holdout: {shown_points(row['lift_vs_holdout'])}" in text_block
    assert "WHAT CHANGED" in digest.text and not re.search(r"</?[a-z]+[ >]", digest.text)


def _week_statuses(engine, program_id: str) -> dict[str, int]:
    m = schema.messages
    with engine.connect() as conn:
        rows = conn.execute(
            select(m.c.status, func.count())
            .where(m.c.program == program_id, m.c.planned_at > AS_OF - timedelta(weeks=1), m.c.planned_at <= AS_OF)
            .group_by(m.c.status)
        ).all()
    return {status: n for status, n in rows}


def test_the_weeks_funnel_partitions_its_planned_messages_and_counts_only_what_went_out(crm, shipped, digest):
    programs, _policy, _errors = shipped
    for program_id in programs:
        card = _section(digest.html, program_id)
        shown = {
            k: int(v.replace(",", ""))
            for k, v in re.findall(r'data-outcome="(\w+)"[^>]*><span[^>]*>[^<]*</span><br><b>([\d,]+)</b>', card)
        }
        statuses = _week_statuses(crm[1], program_id)
        planned = shown.pop("planned")
        assert planned == sum(statuses.values()) == sum(shown.values()), program_id
        went_out = sum(n for status, n in statuses.items() if status in WENT_OUT)
        assert shown["sent"] == went_out and shown.get("dry_run", 0) == statuses.get("dry_run", 0)
        assert f"{planned:,} messages planned, {went_out:,} sent" in card
    welcome = _section(digest.html, "welcome")
    assert "Simulated</span><br><b>" in welcome  # the seeded runs are the simulation's
    assert "Deliverability of 23 messages sent" in welcome


def test_rates_over_nothing_read_as_a_dash_and_untracked_opens_as_not_tracked(digest):
    renewal = _section(digest.html, "renewal")
    assert "Deliverability of 0 messages sent (nothing sent yet)" in renewal
    assert "Bounced <b" in renewal and "0.0%" not in renewal.split("Deliverability")[1].split("<img")[0]
    welcome = digest.text.split("(welcome) ==")[1].split("\n== ")[0]
    assert "Opens (directional) not tracked, Clicks (directional) not tracked" in welcome
    assert "Delivered 87.0%, Bounced 13.0%" in welcome


def test_charts_are_small_inline_pngs_referenced_by_cid(shipped, digest, sandbox, monkeypatch):
    programs, policy, _errors = shipped
    referenced = set(re.findall(r'src="cid:([^"]+)"', digest.html))
    attached = {image.content_id: image for image in digest.images}
    assert referenced == set(attached) == {"overview"} | {f"trend-{pid}" for pid in programs}
    for image in digest.images:
        assert image.data.startswith(PNG_SIGNATURE) and len(image.data) < MAX_CHART_BYTES
    assert "<script" not in digest.html.lower()
    _use_sandbox(monkeypatch, sandbox)
    body = digest_mail(SendGridHook(), digest, policy.stakeholders).get()
    assert {(a["content_id"], a["disposition"], a["type"]) for a in body["attachments"]} == {
        (cid, "inline", "image/png") for cid in attached
    }
    assert [c["type"] for c in body["content"]] == ["text/plain", "text/html"]


def test_what_changed_names_alerts_lifts_ab_tests_and_movers(crm, shipped, digest):
    programs, _policy, _errors = shipped
    changed = digest.text.split("WHAT CHANGED")[1].split("\n== ")[0]
    bounce = BOUNCED / (DELIVERED + BOUNCED) * 100
    assert f"[alert] Welcome / onboarding: bounce rate {bounce:.2f}% is above 2.0%" in changed
    kpis = measurement.program_kpis(crm[1], programs, AS_OF)
    for row in kpis[kpis["verdict"].notna()].to_dict("records"):
        assert f"[ab] A/B test {row['ab_test']} ({programs[row['program']].name}): {row['verdict']}" in changed
    significant = kpis["lift_vs_holdout_significant"].any() or kpis["lift_vs_control_significant"].any()
    assert ("No program shows a significant lift yet" in changed) is not significant
    assert 1 <= changed.count("[mover]") <= 3


def test_data_quality_is_the_newest_hygiene_run_before_the_as_of_time(digest):
    assert "- Duplicate contacts: 2.0% (+0.5 pts)" in digest.text
    assert "- Email marketing consent: 83.0% (+0.0 pts)" in digest.text
    assert "- contacts: 2,000 (+10)" in digest.text
    assert "9,999" not in digest.text and "50.0%" not in digest.text.split("DATA QUALITY")[1]


def test_config_and_crm_strings_are_escaped(crm, shipped, tmp_path, monkeypatch):
    _url, engine = crm
    copy = tmp_path / "config"
    shutil.copytree(paths.PROJECT_ROOT / "config", copy)
    welcome = copy / "programs" / "welcome.yml"
    welcome.write_text(
        welcome.read_text()
        .replace("name: Welcome / onboarding", f"name: 'Welcome {PLANTED}'")
        .replace("label: Activation rate", "label: Activation <img src=x onerror=alert(1)> rate")
        .replace("name: welcome_subject", "name: 'subject_<b>bold</b>'")
    )
    policy_file = copy / "policy.yml"
    policy_file.write_text(policy_file.read_text().replace("name: Northwind Cloud", f"name: 'Northwind {PLANTED}'"))
    monkeypatch.setenv("LIFECYCLE_CONFIG_DIR", str(copy))
    programs, errors = config.load_all_programs()
    digest = build_digest(engine, programs, config.load_policy(), AS_OF, errors)
    assert PLANTED not in digest.html and "<img src=x" not in digest.html and "<b>bold" not in digest.html
    assert "Welcome &lt;script&gt;alert(&#34;crm&#34;)&lt;/script&gt;" in digest.html
    assert "Activation &lt;img src=x onerror=alert(1)&gt; rate" in digest.html
    assert "subject_&lt;b&gt;bold&lt;/b&gt;" in digest.html
    assert f"Welcome {PLANTED} (welcome)" in digest.text


def test_sandbox_accepts_the_digest_for_every_stakeholder(shipped, digest, sandbox, monkeypatch):
    _programs, policy, _errors = shipped
    _use_sandbox(monkeypatch, sandbox)
    sandbox.reset()
    hook = SendGridHook()
    message_id = hook.send(digest_mail(hook, digest, policy.stakeholders))
    received = sandbox.sendgrid_messages()
    assert sorted(e["to"] for e in received) == sorted(s.email for s in policy.stakeholders)
    assert {e["x_message_id"] for e in received} == {message_id}
    for email in received:
        assert email["subject"] == digest.subject and email["categories"] == ["kpi_digest"]
        assert email["html"] == digest.html and email["text"] == digest.text


@pytest.mark.airflow
@pytest.mark.usefixtures("airflow_db")
def test_kpi_digest_dag_sends_as_of_its_data_interval_end(crm, shipped, sandbox, monkeypatch):
    url, _engine = crm
    _programs, policy, _errors = shipped
    _use_sandbox(monkeypatch, sandbox)
    sandbox.reset()
    assert run_dag(monkeypatch, url, "kpi_digest", AS_OF) == "success"
    received = sandbox.sendgrid_messages()
    assert sorted(e["to"] for e in received) == sorted(s.email for s in policy.stakeholders)
    assert {e["subject"] for e in received} == {f"Northwind Cloud lifecycle KPIs: week to {AS_OF:%d %b %Y}"}
    assert f"as of {AS_OF:%Y-%m-%d %H:%M} UTC" in received[0]["html"]


def test_no_stakeholders_means_the_digest_task_is_skipped(tmp_path, monkeypatch, sandbox):
    from airflow.sdk.exceptions import AirflowSkipException

    from lifecycle.airflow.digest_operators import SendKpiDigestOperator

    copy = tmp_path / "config"
    shutil.copytree(paths.PROJECT_ROOT / "config", copy)
    policy_file = copy / "policy.yml"
    policy_file.write_text(re.sub(r"stakeholders:\n(  - .*\n)+", "stakeholders: []\n", policy_file.read_text()))
    monkeypatch.setenv("LIFECYCLE_CONFIG_DIR", str(copy))
    _use_sandbox(monkeypatch, sandbox)
    sandbox.reset()
    with pytest.raises(AirflowSkipException, match="no stakeholders"):
        SendKpiDigestOperator(task_id="send_digest").execute({"data_interval_end": AS_OF, "run_id": "manual"})
    assert sandbox.sendgrid_messages() == []


@pytest.mark.parametrize("width", [375, 600, 1200])
def test_the_digest_reads_on_a_phone_without_sideways_scrolling(crm, digest, tmp_path, width):
    from tests.support.chromium import inline_cid_images, page_width, require_chromium, screenshot

    require_chromium()
    page = tmp_path / "digest.html"
    page.write_text(inline_cid_images(digest.html, {image.content_id: image.data for image in digest.images}))
    scroll_width, dom = page_width(page, width)
    assert scroll_width <= width, f"the digest is {scroll_width} px wide in a {width} px window"
    welcome = _section(dom, "welcome")
    planned = re.search(r'data-outcome="planned"[^>]*><span[^>]*>Planned</span><br><b>([\d,]+)</b>', welcome)
    assert int(planned.group(1).replace(",", "")) == sum(_week_statuses(crm[1], "welcome").values())
    screenshot(page.as_uri(), tmp_path / f"digest-{width}.png", (width, 1600))


def test_what_changed_names_programs_by_name(shipped, digest):
    programs, _policy, _errors = shipped
    changed = digest.text.split("WHAT CHANGED")[1].split("\n== ")[0]
    for line in changed.strip().splitlines():
        if line.startswith(("- [mover]", "- [alert]")):
            assert any(f" {p.name}: " in f" {line[line.index(']') + 2 :]}" for p in programs.values()), line
