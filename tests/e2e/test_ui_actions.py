"""The Campaigns page's actions and sign-in against a real ``airflow api-server`` with real auth:
SimpleAuthManager with an admin and a viewer, the DAGs serialized, the page's forms posted as a
browser posts them (the session cookie, the page's origin).

- No session: the page sends the browser to Airflow's login page, which Chromium renders.
- Pause, resume and the test send go through Airflow's REST API as the signed-in user: the admin's
  change shows in Airflow's own API; the viewer sees Airflow's refusal and nothing changes.
- A cross-site post is refused before Airflow is asked.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from lifecycle.devtools.local import airflow_env
from lifecycle.model import schema
from lifecycle.model.db import get_engine, migrate
from lifecycle.paths import PROJECT_ROOT
from tests.support.chromium import dump_dom, require_chromium
from tests.support.cluster import (
    BIN,
    ClusterError,
    Service,
    airflow_argv,
    free_port,
    metadata_healthy,
    stop_all,
    wait_for,
)

pytestmark = pytest.mark.e2e
PASSWORDS = {"admin": secrets.token_urlsafe(12), "viewer": secrets.token_urlsafe(12)}
COMMAND_TIMEOUT = 240
STARTUP_TIMEOUT = 120
PROGRAM = "welcome"


@dataclass(frozen=True)
class Airflow:
    """A running api-server with real sign-in."""

    url: str
    service: Service

    def token(self, user: str) -> str:
        """A JWT for ``user``, as the login page puts in the session cookie."""
        response = httpx.post(
            f"{self.url}/auth/token", json={"username": user, "password": PASSWORDS[user]}, timeout=30
        )
        response.raise_for_status()
        return response.json()["access_token"]

    def browser(self, user: str | None) -> httpx.Client:
        """A client that behaves as a browser on the page: ``user``'s session cookie (none for
        None), and form posts from the page's own origin."""
        client = httpx.Client(base_url=self.url, timeout=60, headers={"Origin": self.url})
        if user:
            client.cookies.set("_token", self.token(user))
        return client

    def api(self, method: str, path: str, **kwargs) -> dict:
        """Airflow's REST API as the admin."""
        response = httpx.request(
            method,
            f"{self.url}/api/v2{path}",
            headers={"Authorization": f"Bearer {self.token('admin')}"},
            timeout=30,
            **kwargs,
        )
        response.raise_for_status()
        return response.json()

    def paused(self, dag_id: str) -> bool:
        """Whether Airflow says ``dag_id`` is paused."""
        return self.api("GET", f"/dags/{dag_id}")["is_paused"]


def _run(argv: list[str], env: dict[str, str]) -> None:
    done = subprocess.run(
        argv, env=env, cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=COMMAND_TIMEOUT, check=False
    )
    assert done.returncode == 0, f"{' '.join(argv[1:])} failed:\n{done.stdout[-3000:]}{done.stderr[-3000:]}"


@pytest.fixture(scope="module")
def airflow(tmp_path_factory) -> Iterator[Airflow]:
    """``airflow db migrate``, ``airflow dags reserialize`` (every Lifecycle DAG in the metadata
    database, paused at creation), then ``airflow api-server`` with SimpleAuthManager users
    admin (role admin) and viewer (role viewer), over an empty CRM."""
    work = tmp_path_factory.mktemp("actions")
    crm_db = work / "crm.db"
    engine = get_engine(f"sqlite:///{crm_db}")
    schema.crm_metadata.create_all(engine)
    migrate(engine)
    passwords = work / "passwords.json"
    passwords.write_text(json.dumps(PASSWORDS))
    inherited = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "LIFECYCLE_"))}
    env = (
        inherited
        | airflow_env(work, crm_db)
        | {
            "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
            "PYTHONPATH": str(PROJECT_ROOT / "plugins"),
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "admin:admin,viewer:viewer",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(passwords),
            "AIRFLOW__API__WORKERS": "1",
            "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_urlsafe(48),
        }
    )
    _run(airflow_argv("db", "migrate"), env)
    _run(airflow_argv("dags", "reserialize"), env)
    (work / "logs").mkdir()
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server = Service.start(
        "api-server", airflow_argv("api-server", "--host", "127.0.0.1", "--port", str(port)), env, work / "logs"
    )
    try:
        try:
            wait_for("the api-server's health endpoint", lambda: metadata_healthy(url), STARTUP_TIMEOUT, [server])
        except ClusterError as exc:
            pytest.fail(f"{exc}\n{server.tail()}")
        yield Airflow(url, server)
    finally:
        stop_all([server])


def _card(page: str, program_id: str) -> str:
    start = page.index(f'<div class="panel" id="{program_id}">')
    end = page.find('<div class="panel" id=', start + 1)
    return page[start : end if end > 0 else None]


def test_without_a_session_the_page_leads_to_airflows_login_page(airflow):
    with airflow.browser(None) as browser:
        response = browser.get("/lifecycle/campaigns?done=paused")
        assert response.status_code == 303
        login = urlsplit(response.headers["location"])
        assert parse_qs(login.query)["next"] == ["/lifecycle/campaigns?done=paused"]
        page = browser.get(response.headers["location"], follow_redirects=True)
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert login.path == "/auth/login"


def test_the_login_page_renders_in_chromium(airflow):
    require_chromium()
    dom = dump_dom(f"{airflow.url}/lifecycle/campaigns")
    assert "Not authenticated" not in dom
    assert re.search(r'<input[^>]*type="password"', dom), dom[-2000:]


def test_the_admin_pauses_and_resumes_a_program_from_the_page(airflow):
    assert airflow.paused(PROGRAM)  # paused at creation
    with airflow.browser("admin") as browser:
        card = _card(browser.get("/lifecycle/campaigns").text, PROGRAM)
        assert 'data-paused="true"' in card and f'action="campaigns/{PROGRAM}/resume"' in card
        assert f'action="campaigns/{PROGRAM}/pause"' not in card

        response = browser.post(f"/lifecycle/campaigns/{PROGRAM}/resume")
        assert response.status_code == 303
        assert response.headers["location"] == f"/lifecycle/campaigns?done=resume&program={PROGRAM}#{PROGRAM}"
        assert not airflow.paused(PROGRAM)
        page = browser.get(response.headers["location"]).text
        assert 'id="done"' in page and "resumed" in page
        assert 'data-paused="false"' in _card(page, PROGRAM)

        assert browser.post(f"/lifecycle/campaigns/{PROGRAM}/pause").status_code == 303
        assert airflow.paused(PROGRAM)


def test_a_viewer_sees_airflows_refusal_and_nothing_changes(airflow):
    before = airflow.paused(PROGRAM)
    with airflow.browser("viewer") as browser:
        assert 'data-paused="' in _card(browser.get("/lifecycle/campaigns").text, PROGRAM)
        response = browser.post(f"/lifecycle/campaigns/{PROGRAM}/{'resume' if before else 'pause'}")
        test_send = browser.post(
            f"/lifecycle/campaigns/{PROGRAM}/test-send", data={"contact": "c1", "recipients": "qa@example.com"}
        )
    assert response.status_code == 403 and 'id="refused"' in response.text
    assert '<b class="reason">Forbidden</b>' in response.text and "Nothing was changed" in response.text
    assert airflow.paused(PROGRAM) == before
    assert test_send.status_code == 403 and '<b class="reason">Forbidden</b>' in test_send.text
    assert airflow.api("GET", "/dags/lifecycle_test_send/dagRuns")["total_entries"] == 0


def test_a_cross_site_post_is_refused_before_airflow_is_asked(airflow):
    before = airflow.paused(PROGRAM)
    with airflow.browser("admin") as browser:
        forged = browser.post(
            f"/lifecycle/campaigns/{PROGRAM}/{'resume' if before else 'pause'}",
            headers={"Origin": "https://attacker.example"},
        )
        fetched = browser.post(
            f"/lifecycle/campaigns/{PROGRAM}/{'resume' if before else 'pause'}",
            headers={"Sec-Fetch-Site": "cross-site"},
        )
    assert forged.status_code == fetched.status_code == 403
    assert airflow.paused(PROGRAM) == before


def test_the_admin_queues_a_test_send_with_the_program_as_param(airflow):
    with airflow.browser("admin") as browser:
        response = browser.post(
            f"/lifecycle/campaigns/{PROGRAM}/test-send",
            data={"contact": "c-42", "recipients": "qa@example.com, +14155550100", "step": ""},
        )
        assert response.status_code == 303
        run_id = parse_qs(urlsplit(response.headers["location"]).query)["run"][0]
        page = browser.get(response.headers["location"]).text
    run = airflow.api("GET", f"/dags/lifecycle_test_send/dagRuns/{run_id}")
    assert run["conf"] == {
        "program": PROGRAM,
        "contact": "c-42",
        "recipients": ["qa@example.com", "+14155550100"],
        "step": None,
    }
    assert run["run_type"] == "manual" and airflow.paused(PROGRAM)
    notice = page[page.index('id="done"') :]
    assert f"../dags/lifecycle_test_send/runs/{run_id}" in notice
    assert "lifecycle_test_send is paused, so the run waits" in notice


def test_a_test_send_airflow_finds_invalid_shows_its_reason(airflow):
    with airflow.browser("admin") as browser:
        response = browser.post(
            f"/lifecycle/campaigns/{PROGRAM}/test-send", data={"contact": "c-42", "recipients": "not an address"}
        )
    assert response.status_code == 400 and 'id="refused"' in response.text
    assert "recipients" in response.text
