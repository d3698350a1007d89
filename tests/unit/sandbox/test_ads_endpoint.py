"""The sandbox's ad platform (Meta's Custom Audience users API): the access token, the schema
names, SHA-256 hex values and row shapes checked; adds and removes change a set of rows, a
repeated add or remove is a no-op; the audience is read back through the control API."""

from __future__ import annotations

import hashlib
import json

import pytest
import requests

from lifecycle.sandbox import SandboxServer

SCHEMA = ["EMAIL_SHA256", "PHONE_SHA256"]
A = hashlib.sha256(b"a@example.com").hexdigest()
B = hashlib.sha256(b"b@example.com").hexdigest()
P = hashlib.sha256(b"14155550100").hexdigest()


@pytest.fixture(scope="module")
def sandbox():
    with SandboxServer() as server:
        yield server


def _call(
    sandbox, method: str, data, schema=SCHEMA, token: str | None = None, audience: str = "123"
) -> requests.Response:
    body = json.dumps({"payload": {"schema": schema, "data": data}})
    headers = {"Authorization": f"Bearer {token or sandbox.ads_token}", "Content-Type": "application/json"}
    return requests.request(method, f"{sandbox.ads_url()}/{audience}/users", data=body, headers=headers, timeout=10)


def test_adds_and_removes_change_a_set_of_rows_and_repeats_are_no_ops(sandbox):
    sandbox.reset()
    first = _call(sandbox, "POST", [[A, P], [B, ""]])
    assert first.status_code == 200
    assert first.json() | {"session_id": "x"} == {
        "audience_id": "123",
        "session_id": "x",
        "num_received": 2,
        "num_invalid_entries": 0,
        "invalid_entry_samples": {},
    }
    assert _call(sandbox, "POST", [[A, P]]).status_code == 200  # already held
    assert sandbox.audience("123") == [{"EMAIL_SHA256": A, "PHONE_SHA256": P}, {"EMAIL_SHA256": B}]
    assert _call(sandbox, "DELETE", [[A, P], [A, ""]]).status_code == 200  # the second was never held
    assert sandbox.audience("123") == [{"EMAIL_SHA256": B}]
    listed = requests.get(f"{sandbox.url}/_sandbox/audiences?id=123", timeout=10).json()["audiences"]["123"]
    assert listed["members"] == [{"EMAIL_SHA256": B}]
    assert [(r["action"], r["rows"]) for r in listed["requests"]] == [("add", 2), ("add", 1), ("remove", 2)]


@pytest.mark.parametrize(
    ("data", "schema", "problem"),
    [
        ([["a@example.com", ""]], SCHEMA, "not a SHA-256 hash in lowercase hex"),
        ([[A.upper(), ""]], SCHEMA, "not a SHA-256 hash in lowercase hex"),
        ([[A]], SCHEMA, "must hold 2 values"),
        ([["", ""]], SCHEMA, "payload.data[0] is empty"),
        ([[A, P]], ["EMAIL", "PHONE_SHA256"], "Invalid schema key 'EMAIL'"),
        ([[A, B]], ["EMAIL_SHA256", "EMAIL_SHA256"], "names a key twice"),
        ([], SCHEMA, "non-empty list of rows"),
        ([[A, ""]] * 10_001, SCHEMA, "at most 10000 a request"),
    ],
)
def test_a_malformed_upload_is_refused_and_records_nothing(sandbox, data, schema, problem):
    sandbox.reset()
    answer = _call(sandbox, "POST", data, schema=schema)
    assert answer.status_code == 400
    assert problem in answer.json()["error"]["message"]
    assert sandbox.audience("123") == []


def test_a_wrong_token_is_refused(sandbox):
    sandbox.reset()
    answer = _call(sandbox, "POST", [[A, P]], token="wrong")
    assert answer.status_code == 401 and answer.json()["error"]["code"] == 190
    assert sandbox.audience("123") == []


def test_an_injected_429_carries_retry_after(sandbox):
    sandbox.reset()
    sandbox.add_fault("ads", "429", count=1)
    answer = _call(sandbox, "POST", [[A, P]])
    assert answer.status_code == 429 and answer.headers["Retry-After"] == "1"
    assert sandbox.audience("123") == []
