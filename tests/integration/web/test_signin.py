"""An expired or missing Airflow session leads a browser to Airflow's login page, back to the page
it asked for; a program presenting a bad token keeps Airflow's JSON answer."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from urllib.parse import parse_qs, urlsplit

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from lifecycle.web import create_app

PAGES = ("/lifecycle/campaigns", "/lifecycle/campaigns/contact?contact_id=ada")

pytestmark = pytest.mark.usefixtures("airflow_db")


@pytest.fixture
def auth_manager(monkeypatch):
    from airflow.api_fastapi.app import create_auth_manager

    monkeypatch.setenv("AIRFLOW__API_AUTH__JWT_SECRET", "lifecycle-signin-test-secret-" + "x" * 40)
    return create_auth_manager()


@pytest.fixture
def client(shipped_crm, sqlite_url, monkeypatch) -> Iterator[TestClient]:
    """The app mounted under /lifecycle, as the api-server mounts it, over an empty CRM."""
    monkeypatch.setenv("LIFECYCLE_STATE_URL", sqlite_url)
    root = FastAPI()
    root.mount("/lifecycle", create_app())
    with TestClient(root) as client:
        yield client


def _token(auth_manager, expiration: timedelta | None = None) -> str:
    from airflow.api_fastapi.auth.managers.simple.user import SimpleAuthManagerUser

    user = SimpleAuthManagerUser(username="ada", role="viewer")
    if expiration is None:
        return auth_manager.generate_jwt(user)
    return auth_manager.generate_jwt(user, expiration_time_in_seconds=int(expiration.total_seconds()))


@pytest.mark.parametrize("page", PAGES)
def test_a_browser_without_a_session_is_sent_to_the_login_page_and_back(client, auth_manager, page):
    response = client.get(page, follow_redirects=False)
    assert response.status_code == 303
    location = urlsplit(response.headers["location"])
    assert location.path == urlsplit(auth_manager.get_url_login()).path
    assert parse_qs(location.query)["next"] == [page]


@pytest.mark.parametrize("page", PAGES)
def test_an_expired_session_is_sent_to_the_login_page(client, auth_manager, page):
    client.cookies.set("_token", _token(auth_manager, timedelta(seconds=-60)))
    response = client.get(page, follow_redirects=False)
    assert response.status_code == 303
    assert parse_qs(urlsplit(response.headers["location"]).query)["next"] == [page]


@pytest.mark.parametrize("page", PAGES)
def test_a_signed_in_user_sees_the_page(client, auth_manager, page):
    client.cookies.set("_token", _token(auth_manager))
    response = client.get(page, follow_redirects=False)
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/html")


def test_a_program_with_a_bad_token_keeps_airflows_json_answer(client, auth_manager):
    response = client.get(PAGES[0], headers={"Authorization": "Bearer not-a-token"}, follow_redirects=False)
    assert response.status_code == 403 and response.json() == {"detail": "Invalid JWT token"}
    expired = _token(auth_manager, timedelta(seconds=-60))
    response = client.get(PAGES[0], headers={"Authorization": f"Bearer {expired}"}, follow_redirects=False)
    assert response.status_code == 401 and response.json() == {"detail": "Token Expired"}


def test_webhooks_stay_json_endpoints(client):
    response = client.post("/lifecycle/webhooks/sendgrid", content=b"[]", follow_redirects=False)
    assert response.status_code == 403 and response.headers["content-type"] == "application/json"
