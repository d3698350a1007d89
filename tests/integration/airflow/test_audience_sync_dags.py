"""Paid-audience sync through real DAG runs against the sandbox's ad platform (Meta's Custom
Audience users API): after every run the audience holds exactly the eligible members' hashed rows
— treatment members with a granted ``ads`` consent, never the holdout, the global control group,
a contact without or with a withdrawn ads consent, or one who opted out of everything — in batches
of the configured size; a conversion or a withdrawn consent removes the member on the next run; a
re-run sends nothing; 5xx, 429 and a lost answer mid-batch still converge, and an unreachable
platform fails the run and the next run catches up."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import insert, select

from lifecycle.engine.ad_audiences import audience_status
from lifecycle.model import schema
from lifecycle.model.ledger import SuppressionReason as R
from tests.conftest import AS_OF
from tests.support.audience import AUDIENCE, control_contact, row, rows, use_audience_program
from tests.support.dagrun import run_dag
from tests.support.journey import holdout_contact, treatment_contact
from tests.support.task_log import task_log_file

pytestmark = [pytest.mark.airflow, pytest.mark.usefixtures("airflow_db")]
ADS = "ads"


def _member(c, *, ads: str | None = "granted", phone: str | None = "+14155550100", **fields) -> str:
    cid = treatment_contact(c, "retarget", industry="retarget", phone=phone, **fields)
    if ads is not None:
        c.consent(cid, ADS, ads, purpose=ADS)
    return cid


def _recorded(engine) -> list[dict[str, str]]:
    """The rows the state says the platform holds, as the sandbox lists them."""
    a = schema.ad_audience_members
    with engine.connect() as conn:
        found = conn.execute(select(a.c.email_sha256, a.c.phone_sha256).where(a.c.audience == AUDIENCE)).all()
    return rows(*(_present(e, p) for e, p in found))


def _present(email_hash: str, phone_hash: str) -> dict[str, str]:
    return {k: v for k, v in (("EMAIL_SHA256", email_hash), ("PHONE_SHA256", phone_hash)) if v}


def test_the_audience_is_the_eligible_members_after_every_run_with_removals(
    crm, db_url, monkeypatch, sandbox, tmp_path
):
    use_audience_program(tmp_path, monkeypatch)
    engine, c = crm
    # Eligible: treatment, ads consent granted. Emails as the CRM wrote them (spaces, capitals), a
    # phone in national form read with the contact's country, one without a phone, one whose
    # number cannot be read (sent with its email only).
    a = _member(c, email="  Ada.One@Example.COM ", phone="(415) 555-0101")
    b = _member(c, email="b@example.com", phone="+44 20 7946 0958", country="GB")
    d = _member(c, email="d@example.com", phone=None)
    e = _member(c, email="e@example.com", phone="12")
    f = _member(c, email="f@example.com", phone="+14155550105")
    expected = {
        a: row("ada.one@example.com", "14155550101"),
        b: row("b@example.com", "442079460958"),
        d: row("d@example.com", None),
        e: row("e@example.com", None),
        f: row("f@example.com", "14155550105"),
    }
    # Never in it: no ads consent, ads consent withdrawn after it was granted, denied, a marketing
    # consent only, the holdout, the global control group, opted out of everything.
    _member(c, ads=None)
    withdrawn = _member(c)
    c.consent(withdrawn, ADS, "withdrawn", purpose=ADS, at=AS_OF - timedelta(days=1))
    _member(c, ads="denied")
    held = holdout_contact(c, "retarget", industry="retarget")
    c.consent(held, ADS, "granted", purpose=ADS)
    control = control_contact(c, industry="retarget")
    c.consent(control, ADS, "granted", purpose=ADS)
    everywhere = _member(c)
    with engine.begin() as conn:
        conn.execute(
            insert(schema.suppressions),
            [
                {
                    "contact_id": everywhere,
                    "channel": ch,
                    "reason": R.UNSUBSCRIBED,
                    "source": "test",
                    "created_at": AS_OF,
                }
                for ch in ("email", "sms", "whatsapp")
            ],
        )

    assert run_dag(monkeypatch, db_url, "retarget", AS_OF) == "success"
    assert sandbox.audience(AUDIENCE) == rows(*expected.values()) == _recorded(engine)
    # Five rows in batches of two: three add requests, each with both keys in the schema.
    assert [(r["action"], r["rows"]) for r in sandbox.audience_requests(AUDIENCE)] == [
        ("add", 2),
        ("add", 2),
        ("add", 1),
    ]
    assert {tuple(r["schema"]) for r in sandbox.audience_requests(AUDIENCE)} == {("EMAIL_SHA256", "PHONE_SHA256")}

    # The same logical date again: nothing to send.
    assert run_dag(monkeypatch, db_url, "retarget", AS_OF) == "success"
    assert len(sandbox.audience_requests(AUDIENCE)) == 3
    assert sandbox.audience(AUDIENCE) == rows(*expected.values())

    # a converts (purchase since enrollment: exits), b withdraws its ads consent, a new member joins.
    later = AS_OF + timedelta(hours=1)
    c.event(a, "purchase", AS_OF + timedelta(minutes=30))
    c.consent(b, ADS, "withdrawn", purpose=ADS, at=AS_OF + timedelta(minutes=30))
    g = _member(c, email="g@example.com", phone="+14155550107")
    assert run_dag(monkeypatch, db_url, "retarget", later) == "success"
    del expected[a], expected[b]
    expected[g] = row("g@example.com", "14155550107")
    assert sandbox.audience(AUDIENCE) == rows(*expected.values()) == _recorded(engine)
    assert [(r["action"], r["rows"]) for r in sandbox.audience_requests(AUDIENCE)[3:]] == [("remove", 2), ("add", 1)]

    # b grants again: back in on the next run.
    c.consent(b, ADS, "granted", purpose=ADS, at=later + timedelta(minutes=5))
    assert run_dag(monkeypatch, db_url, "retarget", later + timedelta(hours=1)) == "success"
    expected[b] = row("b@example.com", "442079460958")
    assert sandbox.audience(AUDIENCE) == rows(*expected.values()) == _recorded(engine)

    (status,) = audience_status(engine, "retarget")
    assert (status.audience, status.size, status.last_added, status.last_removed) == (AUDIENCE, 5, 1, 0)
    assert status.last_synced_at is not None


def test_5xx_429_and_a_lost_answer_mid_sync_converge_without_duplicates(crm, db_url, monkeypatch, sandbox, tmp_path):
    use_audience_program(tmp_path, monkeypatch)
    engine, c = crm
    members = [_member(c, email=f"m{i}@example.com", phone=f"+1415555020{i}") for i in range(5)]
    sandbox.add_fault("ads", "503", count=1)
    sandbox.add_fault("ads", "429", count=1)
    sandbox.add_fault("ads", "drop_after_accept", count=1)  # taken, answer lost: sent again, a no-op

    assert run_dag(monkeypatch, db_url, "retarget", AS_OF) == "success"
    expected = rows(*(row(f"m{i}@example.com", f"1415555020{i}") for i in range(len(members))))
    assert sandbox.audience(AUDIENCE) == expected == _recorded(engine)
    stats = sandbox.stats()["endpoints"]["ads.audience_users"]
    assert stats["faults"] == {"503": 1, "429": 1, "drop_after_accept": 1}
    # Three batches; the lost answer's batch was taken twice (a no-op the second time).
    assert [r["rows"] for r in sandbox.audience_requests(AUDIENCE)] == [2, 2, 2, 1]
    assert run_dag(monkeypatch, db_url, "retarget", AS_OF) == "success"
    assert len(sandbox.audience_requests(AUDIENCE)) == 4


def test_an_unreachable_platform_fails_the_run_and_the_next_run_catches_up(crm, db_url, monkeypatch, sandbox, tmp_path):
    from lifecycle.devtools.local import connection_json

    use_audience_program(tmp_path, monkeypatch)
    engine, c = crm
    member = _member(c, email="x@example.com", phone="+14155550300")
    monkeypatch.setenv(
        "AIRFLOW_CONN_ADS_DEFAULT",
        connection_json("http", host="http://127.0.0.1:9/v21.0", password=sandbox.ads_token, extra={"attempts": 2}),
    )
    assert run_dag(monkeypatch, db_url, "retarget", AS_OF) == "failed"
    assert _recorded(engine) == [] and sandbox.audience(AUDIENCE) == []
    with engine.connect() as conn:  # the sends went out all the same
        sent = conn.execute(select(schema.messages.c.status).where(schema.messages.c.contact_id == member)).scalars()
        assert list(sent) == ["sent"]

    monkeypatch.setenv(
        "AIRFLOW_CONN_ADS_DEFAULT", connection_json("http", host=sandbox.ads_url(), password=sandbox.ads_token)
    )
    assert run_dag(monkeypatch, db_url, "retarget", AS_OF + timedelta(hours=1)) == "success"
    assert sandbox.audience(AUDIENCE) == [row("x@example.com", "14155550300")] == _recorded(engine)


def test_a_wrong_token_fails_the_run_naming_the_connection(crm, db_url, monkeypatch, sandbox, tmp_path):
    from lifecycle.devtools.local import connection_json

    use_audience_program(tmp_path, monkeypatch)
    engine, c = crm
    _member(c, email="y@example.com")
    monkeypatch.setenv(
        "AIRFLOW_CONN_ADS_DEFAULT", connection_json("http", host=sandbox.ads_url(), password="not-the-token")
    )
    assert run_dag(monkeypatch, db_url, "retarget", AS_OF) == "failed"
    assert sandbox.audience(AUDIENCE) == [] and _recorded(engine) == []
    assert sandbox.stats()["endpoints"]["ads.audience_users"]["responses"] == {"401": 1}


def test_segment_members_leave_when_they_leave_the_segment_and_the_holdout_never_joins(
    crm, db_url, monkeypatch, sandbox, tmp_path
):
    from sqlalchemy import update

    use_audience_program(tmp_path, monkeypatch, members="segment", identifiers=["email"])
    engine, c = crm
    _member(c, email="stays@example.com")
    leaves = _member(c, email="leaves@example.com")
    held = holdout_contact(c, "retarget", industry="retarget")
    c.consent(held, ADS, "granted", purpose=ADS)
    control = control_contact(c, industry="retarget")
    c.consent(control, ADS, "granted", purpose=ADS)

    assert run_dag(monkeypatch, db_url, "retarget", AS_OF) == "success"
    assert sandbox.audience(AUDIENCE) == rows(row("stays@example.com", None), row("leaves@example.com", None))
    assert {tuple(r["schema"]) for r in sandbox.audience_requests(AUDIENCE)} == {("EMAIL_SHA256",)}

    with engine.begin() as conn:  # no longer in the entry segment
        conn.execute(update(schema.contacts).where(schema.contacts.c.contact_id == leaves).values(industry="other"))
    assert run_dag(monkeypatch, db_url, "retarget", AS_OF + timedelta(hours=1)) == "success"
    assert sandbox.audience(AUDIENCE) == [row("stays@example.com", None)] == _recorded(engine)


@pytest.fixture
def task_log(monkeypatch):
    """Airflow's task-log pipeline writing to a file, as for every task the supervisor runs."""
    with task_log_file("retarget", "audience") as path:
        yield path


def test_the_sync_logs_no_address_no_hash_and_no_token(db_url, crm, monkeypatch, sandbox, tmp_path, task_log):
    use_audience_program(tmp_path, monkeypatch)
    engine, c = crm
    _member(c, email="Secret.Person@Example.com", phone="+14155550999")
    assert run_dag(monkeypatch, db_url, "retarget", AS_OF) == "success"
    members = sandbox.audience(AUDIENCE)
    assert len(members) == 1
    text = task_log.read_text(errors="replace").lower()
    assert "sync_audience retarget" in text and "1 added, 0 removed in 1 requests" in text
    for secret in ("secret.person@example.com", "4155550999", sandbox.ads_token, *members[0].values()):
        assert secret.lower() not in text, secret
