"""What operators and stakeholders see: a real ``airflow api-server`` serving the Lifecycle plugin
(Campaigns page, nav entry) over a seeded CRM with program runs, and the KPI digest, both rendered
by headless Chromium.

Screenshots go to ``$LIFECYCLE_TEST_ARTIFACTS`` when set (for a person to look at), else to a
temporary folder.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from PIL import Image
from sqlalchemy import Engine

from lifecycle import config
from lifecycle.devtools.local import airflow_env
from lifecycle.paths import PROJECT_ROOT
from lifecycle.reporting import measurement
from lifecycle.reporting.digest import build_digest
from tests.conftest import AS_OF
from tests.support.chromium import dump_dom, inline_cid_images, require_chromium, screenshot
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
from tests.support.kpi_crm import seed_with_runs, shown_points, shown_rate

pytestmark = pytest.mark.e2e
SEED_CONTACTS = 1000
RUN_WEEKS = 2
MIGRATE_TIMEOUT = 240
STARTUP_TIMEOUT = 120
PAGE_TIMEOUT = 120


@dataclass(frozen=True)
class UiServer:
    """A running api-server with the Lifecycle plugin, and the CRM it reads."""

    url: str
    engine: Engine
    service: Service


def _shipped_config() -> tuple[dict, config.Policy, dict]:
    programs, errors = config.load_all_programs()
    return programs, config.load_policy(), errors


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory) -> Path:
    folder = Path(os.environ.get("LIFECYCLE_TEST_ARTIFACTS") or tmp_path_factory.mktemp("screenshots"))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture(scope="module")
def ui(tmp_path_factory) -> Iterator[UiServer]:
    """``airflow api-server`` on a free port: its own AIRFLOW_HOME and SQLite metadata database,
    the project's dags/ and plugins/, auth open to all (simple_auth_manager_all_admins), and
    ``crm_default`` on a seeded CRM with two weeks of runs of every shipped program."""
    work = tmp_path_factory.mktemp("ui")
    crm_db = work / "crm.db"
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv("LIFECYCLE_CONFIG_DIR", raising=False)
        patch.delenv("LIFECYCLE_TEMPLATES_DIR", raising=False)
        engine = seed_with_runs(f"sqlite:///{crm_db}", AS_OF, SEED_CONTACTS, RUN_WEEKS)
    inherited = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "LIFECYCLE_"))}
    env = (
        inherited
        | airflow_env(work, crm_db)
        | {
            "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
            "PYTHONPATH": str(PROJECT_ROOT / "plugins"),
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
            "AIRFLOW__API__WORKERS": "1",
            "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_urlsafe(32),
        }
    )
    logs = work / "logs"
    logs.mkdir()
    migrated = subprocess.run(
        airflow_argv("db", "migrate"),
        env=env,
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=MIGRATE_TIMEOUT,
        stdin=subprocess.DEVNULL,
        check=False,
    )
    assert migrated.returncode == 0, f"airflow db migrate failed:\n{migrated.stdout[-3000:]}{migrated.stderr[-3000:]}"
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server = Service.start(
        "api-server", airflow_argv("api-server", "--host", "127.0.0.1", "--port", str(port)), env, logs
    )
    try:
        try:
            wait_for("the api-server's health endpoint", lambda: metadata_healthy(url), STARTUP_TIMEOUT, [server])
        except ClusterError as exc:
            pytest.fail(f"{exc}\n{server.tail()}")
        yield UiServer(url, engine, server)
    finally:
        stop_all([server])


def _block(page: str, prefix: str, key: str) -> str:
    """The part of ``page`` from the element whose id attribute is ``prefix + key`` to the next
    element whose id starts with ``prefix``."""
    start = page.index(f'{prefix}{key}"')
    following = page.find(prefix, start + len(prefix))
    return page[start : following if following > 0 else len(page)]


def _mostly_blank(png: Path) -> bool:
    """Whether nearly every pixel of a screenshot has one color (a page that did not render)."""
    image = Image.open(png).convert("L")
    histogram = image.histogram()
    return max(histogram) > 0.97 * image.width * image.height


def test_plugin_serves_the_lifecycle_app_and_a_campaigns_nav_entry(ui):
    plugins = httpx.get(f"{ui.url}/api/v2/plugins", timeout=30).json()["plugins"]
    [plugin] = [p for p in plugins if p["name"] == "lifecycle"]
    assert [(a["name"], a["url_prefix"]) for a in plugin["fastapi_apps"]] == [("Lifecycle", "/lifecycle")]
    [view] = plugin["external_views"]
    assert (view["name"], view["href"], view["url_route"], view["destination"], view["category"]) == (
        "Campaigns",
        "/lifecycle/campaigns",
        "campaigns",
        "nav",
        "browse",
    )
    errors = httpx.get(f"{ui.url}/api/v2/plugins/importErrors", timeout=30).json()["import_errors"]
    assert errors == []


def test_campaigns_page_shows_the_catalog_and_measurements_kpis(ui):
    response = httpx.get(f"{ui.url}/lifecycle/campaigns", timeout=PAGE_TIMEOUT)
    assert response.status_code == 200, response.text[:2000]
    assert response.headers["content-type"].startswith("text/html")
    page = response.text
    programs, policy, _errors = _shipped_config()
    kpis = measurement.program_kpis(ui.engine, programs, AS_OF)
    assert f'Figures as of its newest run, <b class="as-of">{AS_OF:%Y-%m-%d %H:%M} UTC</b>' in page
    for row in kpis.to_dict("records"):
        program = programs[row["program"]]
        card = _block(page, 'class="panel" id="', program.id)
        for text in (
            program.name,
            program.owner,
            program.schedule,
            f"{program.holdout_percent:g}%",
            shown_rate(row["treatment_rate"]),
            shown_points(row["lift_vs_holdout"]),
            *(step.template for step in program.steps),
        ):
            assert text in card, f"{program.id}: {text!r} missing"
    assert "email 3 per 7d" in page and f"{policy.control_group.percent:g}%" in page
    assert "<script" not in page.lower() and not re.search(r'(src|href)="(https?:)?//', page)


def test_campaigns_page_renders_in_chromium(ui, artifacts):
    require_chromium()
    url = f"{ui.url}/lifecycle/campaigns"
    png = screenshot(url, artifacts / "campaigns.png")
    assert not _mostly_blank(png)
    dom = dump_dom(url)
    programs, _policy, _errors = _shipped_config()
    for program in programs.values():
        assert f"<h2>{program.name} " in dom.replace("&amp;", "&")
    assert len(re.findall(r'<img class="chart" src="data:image/png;base64,', dom)) == len(programs)


def test_campaigns_nav_entry_opens_the_page_inside_airflow(ui, artifacts):
    require_chromium()
    url = f"{ui.url}/plugin/campaigns"
    screenshot(url, artifacts / "airflow_campaigns.png", (1400, 1000))
    dom = dump_dom(url)
    assert re.search(r'<iframe[^>]* src="/lifecycle/campaigns" title="Campaigns"', dom), dom[-3000:]


def test_digest_renders_in_chromium(ui, artifacts):
    require_chromium()
    programs, policy, errors = _shipped_config()
    digest = build_digest(ui.engine, programs, policy, AS_OF, errors)
    page = artifacts / "digest.html"
    page.write_text(inline_cid_images(digest.html, {image.content_id: image.data for image in digest.images}))
    png = screenshot(page.as_uri(), artifacts / "digest.png", (1200, 2000))
    assert not _mostly_blank(png)
    dom = dump_dom(page.as_uri())
    assert len(re.findall(r'<img src="data:image/png;base64,', dom)) == len(digest.images) == len(programs) + 1
    kpis = measurement.program_kpis(ui.engine, programs, AS_OF)
    for row in kpis.to_dict("records"):
        card = _block(dom, 'id="program-', row["program"])
        assert programs[row["program"]].name.replace("&", "&amp;") in card
        assert shown_rate(row["treatment_rate"]) in card
        assert shown_points(row["lift_vs_holdout"]) in card
    assert "What changed" in dom and "Data quality" in dom


def test_campaigns_page_sends_anonymous_browsers_to_sign_in():
    from fastapi.testclient import TestClient

    from lifecycle.web import create_app

    with TestClient(create_app()) as client:
        response = client.get("/campaigns", follow_redirects=False)
    assert response.status_code == 303 and response.headers["location"].endswith("?next=%2Fcampaigns")


def test_campaigns_page_escapes_config_strings(ui, tmp_path, monkeypatch):
    from lifecycle.web.campaigns import campaigns_page

    planted = '<script>alert("crm")</script>'
    copy = tmp_path / "config"
    shutil.copytree(PROJECT_ROOT / "config", copy)
    welcome = copy / "programs" / "welcome.yml"
    welcome.write_text(
        welcome.read_text()
        .replace("name: Welcome / onboarding", f"name: 'Welcome {planted}'")
        .replace("owner: growth", "owner: '<img src=x onerror=alert(1)>'")
    )
    monkeypatch.setenv("LIFECYCLE_CONFIG_DIR", str(copy))
    page = campaigns_page(ui.engine)
    assert planted not in page and "<img src=x" not in page
    assert "Welcome &lt;script&gt;alert(&#34;crm&#34;)&lt;/script&gt;" in page
    assert "&lt;img src=x onerror=alert(1)&gt;" in page
