"""The track endpoint: the write key, what a call must hold, idempotency on messageId, batches and
body limits, through the web app on SQLite and PostgreSQL."""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from lifecycle.devtools.local import connection_json
from lifecycle.engine.tracking import event_id_for
from lifecycle.model import schema
from lifecycle.web import create_app
from lifecycle.web.track import BATCH_MAX_BODY, BATCH_MAX_CALLS, TRACK_CONN_ID, TRACK_MAX_BODY

WRITE_KEY = "wk_test_3f9a1c"
BEARER = {"Authorization": f"Bearer {WRITE_KEY}"}


@pytest.fixture
def inbox(crm, db_url, monkeypatch):
    """The state database the endpoint writes into, with the write key's connection configured."""
    monkeypatch.setenv("LIFECYCLE_CRM_URL", db_url)
    monkeypatch.setenv(f"AIRFLOW_CONN_{TRACK_CONN_ID.upper()}", connection_json("generic", password=WRITE_KEY))
    return crm[0]


@pytest.fixture
def client() -> Iterator[TestClient]:
    with TestClient(create_app()) as test_client:
        yield test_client


def call(message_id: str = "m-1", **fields) -> dict:
    return {
        "type": "track",
        "userId": "c-1",
        "event": "signed_up",
        "messageId": message_id,
        "timestamp": "2026-11-16T14:00:00Z",
        "properties": {"plan": "pro"},
    } | fields


def tracked(engine) -> list[dict]:
    t = schema.tracked_events
    with engine.connect() as conn:
        return [dict(r) for r in conn.execute(select(t).order_by(t.c.message_id)).mappings()]


def basic(user: str, password: str = "") -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


# --- the write key --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "headers", [BEARER, basic(WRITE_KEY), basic("", WRITE_KEY)], ids=["bearer", "basic", "basic-pw"]
)
def test_a_call_with_the_write_key_is_taken_once_with_its_fields(inbox, client, headers):
    response = client.post("/track", json=call(), headers=headers)

    assert response.status_code == 202
    assert response.json() == {"status": "accepted", "messageId": "m-1"}
    [row] = tracked(inbox)
    assert row["event_id"] == event_id_for("m-1") and row["event_id"].startswith("trk_") and len(row["event_id"]) == 44
    assert (row["contact_id"], row["event_type"], row["properties"]) == ("c-1", "signed_up", {"plan": "pro"})
    assert row["occurred_at"] == datetime(2026, 11, 16, 14, 0)
    assert abs(row["received_at"] - datetime.now(UTC).replace(tzinfo=None)) < timedelta(minutes=1)


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer wrong"},
        basic("wrong"),
        {"Authorization": "Basic !!notbase64"},
        {"Authorization": WRITE_KEY},
    ],
    ids=["missing", "wrong-bearer", "wrong-basic", "malformed", "no-scheme"],
)
@pytest.mark.parametrize("path", ["/track", "/batch"])
def test_a_call_without_the_write_key_gets_401_and_writes_nothing(inbox, client, headers, path):
    body = call() if path == "/track" else {"batch": [call()]}
    response = client.post(path, json=body, headers=headers)

    assert response.status_code == 401
    assert "write key" in response.json()["detail"]
    assert response.headers["WWW-Authenticate"].startswith("Basic")
    assert tracked(inbox) == []


def test_without_the_connection_the_endpoint_answers_503_naming_it(inbox, client, monkeypatch, caplog):
    monkeypatch.delenv(f"AIRFLOW_CONN_{TRACK_CONN_ID.upper()}")
    with caplog.at_level(logging.ERROR):
        response = client.post("/track", json=call(), headers=BEARER)

    assert response.status_code == 503
    detail = response.json()["detail"]
    assert f"connection {TRACK_CONN_ID} is not configured" in detail and "--conn-password" in detail
    assert f"connection {TRACK_CONN_ID} is not configured" in caplog.text
    assert tracked(inbox) == []


# --- what a call must hold ------------------------------------------------------------------

AHEAD = (datetime.now(UTC) + timedelta(hours=1)).isoformat()


@pytest.mark.parametrize(
    ("change", "field", "says"),
    [
        ({"messageId": None}, "messageId", "messageId is required"),
        ({"userId": None}, "userId", "userId is required"),
        ({"userId": "x" * 65}, "userId", "at most 64"),
        ({"userId": "c-1\n"}, "userId", "control characters"),
        ({"event": "Signed Up"}, "event", "such as signed_up"),
        ({"event": "a" * 51}, "event", "at most 50"),
        ({"event": ["signed_up"]}, "event", "must be a string"),
        ({"timestamp": "yesterday"}, "timestamp", "not ISO 8601"),
        ({"timestamp": AHEAD}, "timestamp", "ahead of the time received"),
        ({"properties": ["plan"]}, "properties", "must be a JSON object"),
        ({"properties": {"blob": "x" * 20_000}}, "properties", "at most 16384"),
        ({"type": "identify"}, "type", "only track calls"),
    ],
)
def test_a_call_that_cannot_be_taken_gets_400_naming_the_field_and_the_fix(inbox, client, change, field, says, caplog):
    body = {k: v for k, v in (call() | change).items() if v is not None}
    with caplog.at_level(logging.INFO):
        response = client.post("/track", json=body, headers=BEARER)

    assert response.status_code == 400
    assert response.json()["field"] == field
    assert says in response.json()["detail"]
    assert tracked(inbox) == []
    assert "c-1" not in caplog.text  # counts and field names only, never a call's values


def test_a_call_without_a_timestamp_happened_when_received_and_every_time_is_kept_in_utc(inbox, client):
    client.post("/track", json={k: v for k, v in call("m-now").items() if k != "timestamp"}, headers=BEARER)
    client.post("/track", json=call("m-offset", timestamp="2026-11-16T09:30:00+02:00"), headers=BEARER)
    client.post("/track", json=call("m-plain", timestamp="2026-11-16T09:30:00"), headers=BEARER)

    now, offset, plain = tracked(inbox)
    assert abs(now["occurred_at"] - now["received_at"]) < timedelta(seconds=1)
    assert offset["occurred_at"] == datetime(2026, 11, 16, 7, 30)
    assert plain["occurred_at"] == datetime(2026, 11, 16, 9, 30)


def test_a_body_that_is_not_json_gets_400(inbox, client):
    response = client.post("/track", content=b"{not json", headers=BEARER | {"Content-Type": "application/json"})
    assert response.status_code == 400 and response.json()["field"] == "body"


# --- idempotency ----------------------------------------------------------------------------


def test_the_same_message_id_twice_is_one_row_and_the_first_call_stays(inbox, client):
    first = client.post("/track", json=call("m-dup"), headers=BEARER)
    again = client.post("/track", json=call("m-dup", event="activated", properties={"x": 1}), headers=BEARER)

    assert (first.status_code, first.json()["status"]) == (202, "accepted")
    assert (again.status_code, again.json()["status"]) == (202, "duplicate")
    [row] = tracked(inbox)
    assert (row["event_type"], row["properties"]) == ("signed_up", {"plan": "pro"})


def test_concurrent_calls_with_one_message_id_write_one_row(inbox, client):
    def post(i: int) -> str:
        return client.post("/track", json=call("m-race", properties={"i": i}), headers=BEARER).json()["status"]

    with ThreadPoolExecutor(8) as pool:
        statuses = list(pool.map(post, range(16)))

    assert sorted(statuses).count("accepted") == 1 and statuses.count("duplicate") == 15
    assert len(tracked(inbox)) == 1


# --- batches and limits ---------------------------------------------------------------------


def test_a_batch_takes_the_good_calls_and_says_why_for_the_others(inbox, client):
    client.post("/track", json=call("m-old"), headers=BEARER)
    batch = [call("m-a"), call("m-old"), call("m-b", event="Cart Abandoned"), call("m-a"), "not a call", call("m-c")]
    response = client.post("/batch", json={"batch": batch}, headers=basic(WRITE_KEY))

    assert response.status_code == 202
    body = response.json()
    assert (body["accepted"], body["duplicate"], body["rejected"]) == (2, 2, 2)
    assert [r["status"] for r in body["results"]] == [
        "accepted",
        "duplicate",
        "rejected",
        "duplicate",
        "rejected",
        "accepted",
    ]
    assert body["results"][2]["field"] == "event" and "cart_abandoned" in body["results"][2]["error"]
    assert body["results"][4]["field"] == "body"
    assert [r["message_id"] for r in tracked(inbox)] == ["m-a", "m-c", "m-old"]


@pytest.mark.parametrize("body", [{"events": []}, [call()], {"batch": call()}])
def test_a_batch_that_is_not_a_list_of_calls_gets_400(inbox, client, body):
    response = client.post("/batch", json=body, headers=BEARER)
    assert response.status_code == 400 and response.json()["field"] == "batch"


def test_a_batch_of_too_many_calls_gets_413_and_writes_nothing(inbox, client):
    calls = [{"userId": "c", "event": "e", "messageId": str(i)} for i in range(BATCH_MAX_CALLS + 1)]
    response = client.post("/batch", json={"batch": calls}, headers=BEARER)

    assert response.status_code == 413 and f"at most {BATCH_MAX_CALLS}" in response.json()["detail"]
    assert tracked(inbox) == []


@pytest.mark.parametrize(("path", "limit"), [("/track", TRACK_MAX_BODY), ("/batch", BATCH_MAX_BODY)])
@pytest.mark.parametrize("streamed", [False, True], ids=["declared", "streamed"])
def test_a_body_over_the_limit_gets_413_unread(inbox, client, path, limit, streamed):
    body = json.dumps(call(properties={"blob": "x" * limit})).encode()
    content = iter([body[i : i + 4096] for i in range(0, len(body), 4096)]) if streamed else body
    response = client.post(path, content=content, headers=BEARER | {"Content-Type": "application/json"})

    assert response.status_code == 413
    assert tracked(inbox) == []


def test_a_body_over_the_limit_without_the_write_key_gets_401(inbox, client):
    body = json.dumps(call(properties={"blob": "x" * TRACK_MAX_BODY})).encode()
    assert client.post("/track", content=body).status_code == 401
