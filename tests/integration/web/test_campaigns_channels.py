"""Per-channel figures on the Campaigns page and in the weekly digest equal the counts computed
here, independently, from the ledger rows: sent, delivered, opened (or read), clicked, failed,
simulated and converted per channel and program, on the channel each message went on."""

from __future__ import annotations

import html
import re
from collections import Counter, defaultdict
from datetime import datetime, timedelta

import pytest
from sqlalchemy import insert, select, update

from lifecycle import config
from lifecycle.model import schema
from lifecycle.reporting import digest, figures
from lifecycle.web.campaigns import campaigns_page
from tests.conftest import AS_OF
from tests.support.kpi_crm import seed_with_runs

M, E = schema.messages, schema.enrollments
# Spelled out here, not taken from the ledger's groups: the test's own reading of each figure.
SENT = {"sent", "delivered", "opened", "clicked", "bounced"}
FIGURES = {
    "sent": SENT,
    "delivered": {"delivered", "opened", "clicked"},
    "opened": {"opened", "clicked"},
    "clicked": {"clicked"},
    "failed": {"failed"},
    "simulated": {"dry_run"},
}
# What the provider feedback does to simulated email sends below, per channel they are put on: (status, how many).
FEEDBACK = {
    "email": [("delivered", 5), ("opened", 4), ("clicked", 3), ("bounced", 2), ("failed", 1)],
    "sms": [("delivered", 1), ("failed", 1)],
}


@pytest.fixture(scope="module")
def crm(tmp_path_factory):
    """300 seeded contacts, two weekly runs of every shipped program; then provider feedback on
    some of the simulated sends (some moved to SMS), and a few WhatsApp and webhook messages of
    winback (one read, one failed, one on a converted enrollment)."""
    url = f"sqlite:///{tmp_path_factory.mktemp('channels') / 'crm.db'}"
    with pytest.MonkeyPatch.context() as env:
        env.delenv("LIFECYCLE_CONFIG_DIR", raising=False)
        env.delenv("LIFECYCLE_TEMPLATES_DIR", raising=False)
        engine = seed_with_runs(url, AS_OF, contacts=300, weeks=2)
        programs = config.load_all_programs()[0]
    with engine.begin() as conn:
        ids = (
            conn.execute(
                select(M.c.message_id)
                .where(M.c.channel == "email", M.c.status == "dry_run")
                .order_by(M.c.program.desc(), M.c.message_id)
            )
            .scalars()
            .all()
        )
        needed = sum(n for changes in FEEDBACK.values() for _status, n in changes)
        assert len(ids) >= needed, "the seeded runs sent too few emails"
        for channel, changes in FEEDBACK.items():
            for status, n in changes:
                # SMS ones: as if the step's fallback had moved them (the seeded contacts' SMS are few).
                chosen, ids = ids[:n], ids[n:]
                conn.execute(update(M).where(M.c.message_id.in_(chosen)).values(status=status, channel=channel))
        converted = conn.execute(
            select(E.c.enrollment_id, E.c.contact_id, E.c.exited_at).where(
                E.c.program == "winback", E.c.exit_reason == "converted"
            )
        ).first()
        enrollment = conn.execute(select(E.c.enrollment_id, E.c.contact_id).where(E.c.program == "winback")).first()
        assert enrollment is not None, "the seeded runs enrolled nobody in winback"
        rows = [
            ("whatsapp", "opened", enrollment, AS_OF - timedelta(days=2)),
            ("whatsapp", "failed", enrollment, AS_OF - timedelta(days=1)),
            ("webhook", "delivered", enrollment, AS_OF - timedelta(days=9)),
        ]
        if converted is not None:
            rows.append(("whatsapp", "delivered", converted, converted.exited_at - timedelta(hours=1)))
        for n, (channel, status, (enrollment_id, contact_id, *_), at) in enumerate(rows):
            conn.execute(
                insert(M).values(
                    idempotency_key=f"channels-test:{n}",
                    program="winback",
                    priority=0,
                    enrollment_id=enrollment_id,
                    entry=1,
                    step=f"extra_{n}",
                    step_index=9,
                    contact_id=contact_id,
                    channel=channel,
                    planned_channel="email",
                    template="t",
                    group="treatment",
                    status=status,
                    due_at=at,
                    run_id="channels-test",
                    planned_at=at,
                )
            )
    with pytest.MonkeyPatch.context() as env:
        env.delenv("LIFECYCLE_CONFIG_DIR", raising=False)
        figures.refresh(engine, programs)
    return engine


def expected(engine, start: datetime | None, end: datetime) -> dict[str, dict[str, dict[str, int]]]:
    """Per program and channel, each figure counted in Python from every ledger row."""
    with engine.connect() as conn:
        messages = conn.execute(select(M.c.program, M.c.channel, M.c.status, M.c.planned_at, M.c.enrollment_id)).all()
        exits = {r.enrollment_id: r for r in conn.execute(select(E.c.enrollment_id, E.c.exit_reason, E.c.exited_at))}
    counts: dict[str, dict[str, Counter]] = defaultdict(lambda: defaultdict(Counter))
    converted: dict[tuple[str, str], set[int]] = defaultdict(set)
    for m in messages:
        if m.planned_at > end or (start is not None and m.planned_at <= start):
            continue
        row = counts[m.program][m.channel]
        row["planned"] += 1
        for name, statuses in FIGURES.items():
            row[name] += m.status in statuses
        left = exits.get(m.enrollment_id)
        went = m.status in SENT or m.status == "dry_run"
        if (
            went
            and left
            and left.exit_reason == "converted"
            and left.exited_at <= end
            and m.planned_at < left.exited_at
        ):
            converted[m.program, m.channel].add(m.enrollment_id)
    return {
        program: {
            channel: {**{k: row[k] for k in ("planned", *FIGURES)}, "converted": len(converted[program, channel])}
            for channel, row in per.items()
        }
        for program, per in counts.items()
    }


def _stored(engine) -> dict[str, figures.Stored]:
    with pytest.MonkeyPatch.context() as env:
        env.delenv("LIFECYCLE_CONFIG_DIR", raising=False)
        return figures.current(engine, config.load_all_programs()[0])


def test_stored_figures_per_channel_equal_the_ledger_counted_independently(crm):
    stored = _stored(crm)
    assert {s.as_of for s in stored.values()} == {AS_OF}
    want = expected(crm, None, AS_OF)
    got = {
        pid: {c["channel"]: {k: v for k, v in c.items() if k != "channel"} for c in s.payload["channels"]}
        for pid, s in stored.items()
    }
    assert got == {pid: want.get(pid, {}) for pid in stored}
    # The feedback and the extra rows reached the figures: not a table of zeros.
    assert got["winback"]["whatsapp"]["opened"] == 1 and got["winback"]["webhook"]["delivered"] == 1
    channels = {channel for per in got.values() for channel in per}
    assert {"email", "sms", "whatsapp", "webhook"} <= channels
    assert sum(per.get("email", {}).get("clicked", 0) for per in got.values()) == 3


def _page_rows(page: str, program: str) -> dict[str, dict[str, str]]:
    table = re.search(rf'<table class="steps small channels" data-program="{program}">(.*?)</table>', page, re.S)
    assert table, f"no per-channel table for {program}"
    rows = {}
    for channel, cells in re.findall(r'<tr data-channel="([^"]+)">(.*?)</tr>', table.group(1), re.S):
        rows[channel] = {k: html.unescape(v) for k, v in re.findall(r'data-figure="([^"]+)">([^<]*)<', cells)}
    return rows


def test_the_page_shows_each_programs_figures_per_channel(crm, monkeypatch):
    monkeypatch.delenv("LIFECYCLE_CONFIG_DIR", raising=False)
    monkeypatch.delenv("LIFECYCLE_TEMPLATES_DIR", raising=False)
    page = campaigns_page(crm)
    want = expected(crm, None, AS_OF)
    for program, per in want.items():
        shown = _page_rows(page, program)
        simulated = any(row["simulated"] for row in per.values())  # shown only when there are some
        assert shown == {
            channel: {k: digest.count(v) for k, v in row.items() if k != "simulated" or simulated}
            for channel, row in per.items()
        }, program


def test_the_digest_shows_the_weeks_figures_per_channel(crm, monkeypatch):
    monkeypatch.delenv("LIFECYCLE_CONFIG_DIR", raising=False)
    monkeypatch.delenv("LIFECYCLE_TEMPLATES_DIR", raising=False)
    programs = config.load_all_programs()[0]
    built = digest.build_digest(crm, programs, config.load_policy(), AS_OF)
    want = expected(crm, AS_OF - timedelta(days=7), AS_OF)
    assert want["winback"]["whatsapp"]["failed"] == 1 and "webhook" not in want["winback"]  # 9 days ago
    for program, per in want.items():
        simulated = any(row["simulated"] for row in per.values())
        for channel, row in per.items():
            shown = {k: v for k, v in row.items() if k != "simulated" or simulated}
            line = f"  {channel} this week: " + ", ".join(f"{k} {digest.count(v)}" for k, v in shown.items())
            assert line in built.text.splitlines(), (program, line)
    rows = re.findall(r'<tr data-channel="([^"]+)">', built.html)
    assert len(rows) == sum(len(per) for per in want.values())
