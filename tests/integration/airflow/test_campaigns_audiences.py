"""A program's ad audiences on the Campaigns page and in the weekly digest, after real DAG runs
against the sandbox's ad platform: the size shown is the number of rows the sandbox's audience
holds, and the adds and removes shown are those the last sync sent (the digest adds the week's)."""

from __future__ import annotations

import html
import re
from datetime import timedelta

import pytest

from lifecycle import config
from lifecycle.paths import PROJECT_ROOT
from lifecycle.reporting import digest, figures
from lifecycle.web.campaigns import campaigns_page
from tests.conftest import AS_OF
from tests.support.audience import AUDIENCE, use_audience_program
from tests.support.dagrun import run_dag
from tests.support.journey import treatment_contact

pytestmark = [pytest.mark.airflow, pytest.mark.usefixtures("airflow_db")]
ADS = "ads"


def _use_program(tmp_path, monkeypatch) -> None:
    """``retarget`` and its templates, with the page's and the digest's templates beside them."""
    use_audience_program(tmp_path, monkeypatch)
    for folder in ("_web", "_digest"):
        (tmp_path / "templates" / folder).symlink_to(PROJECT_ROOT / "include" / "templates" / folder)


def _member(c, n: int) -> str:
    cid = treatment_contact(c, "retarget", industry="retarget", email=f"m{n}@example.com", phone=f"+1415555040{n}")
    c.consent(cid, ADS, "granted", purpose=ADS)
    return cid


def _figures(markup: str, audience: str) -> dict[str, str]:
    """The cells of the audience's row (``data-figure`` → text) in ``markup``."""
    found = re.search(rf'<tr data-audience="{audience}">(.*?)</tr>', markup, re.S)
    assert found, markup[-3000:]
    return {k: html.unescape(v.strip()) for k, v in re.findall(r'data-figure="([^"]+)"[^>]*>([^<]*)<', found.group(1))}


def test_the_page_and_the_digest_show_the_audience_as_the_sandbox_holds_it(crm, db_url, monkeypatch, sandbox, tmp_path):
    _use_program(tmp_path, monkeypatch)
    engine, c = crm
    members = [_member(c, n) for n in range(4)]

    assert run_dag(monkeypatch, db_url, "retarget", AS_OF) == "success"
    first = len(sandbox.audience(AUDIENCE))
    assert first == 4
    shown = _figures(campaigns_page(engine), AUDIENCE)
    assert (shown["size"], shown["last_added"], shown["last_removed"]) == (str(first), "4", "0")

    # One converts (leaves the audience), two join: the next sync removes 1 and adds 2.
    later = AS_OF + timedelta(hours=1)
    c.event(members[0], "purchase", AS_OF + timedelta(minutes=30))
    _member(c, 5)
    _member(c, 6)
    assert run_dag(monkeypatch, db_url, "retarget", later) == "success"
    size = len(sandbox.audience(AUDIENCE))
    assert size == 5

    # The figures the run stored (log_kpis, after the sync): the page reads them, computing nothing.
    stored = figures.load(engine)["retarget"]
    assert stored.version == figures.VERSION
    assert [(a["audience"], a["size"], a["last_added"], a["last_removed"]) for a in stored.payload["audiences"]] == [
        (AUDIENCE, size, 2, 1)
    ]
    page = campaigns_page(engine)
    shown = _figures(page, AUDIENCE)
    assert (shown["size"], shown["last_added"], shown["last_removed"]) == (str(size), "2", "1")
    assert shown["last_synced"].endswith("UTC")
    assert "Ad audiences" in page

    built = digest.build_digest(engine, config.load_all_programs()[0], config.load_policy(), later)
    mailed = _figures(built.html, AUDIENCE)
    assert (mailed["size"], mailed["last_added"], mailed["last_removed"]) == (str(size), "2", "1")
    assert (mailed["week_added"], mailed["week_removed"]) == ("6", "1")
    assert (
        f"  Ad audience {AUDIENCE} (meta): size {size}, last sync {shown['last_synced']} (added 2, removed 1); "
        "this week added 6, removed 1"
    ) in built.text.splitlines()


def test_a_configured_audience_not_synced_yet_shows_as_never_synced(crm, monkeypatch, tmp_path):
    use_audience_program(tmp_path, monkeypatch)
    program = config.load_all_programs()[0]["retarget"]
    (row,) = digest.audience_view(program, [], {})
    assert row == {
        "audience": AUDIENCE,
        "platform": "meta",
        "size": "0",
        "last_synced": "never",
        "last_added": "0",
        "last_removed": "0",
        "week_added": "0",
        "week_removed": "0",
    }
