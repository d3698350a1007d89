"""The webhook channel through the engine and the sandbox's receiver: consent, suppression and
caps hold; every delivery is signed (HMAC-SHA256 over a timestamp and the body) and carries the
ledger's idempotency key; 429 (Retry-After) and 5xx answers are retried, a lost answer is retried
and recognised as a replay, a worker dying mid-batch is retried: no payload is delivered twice."""

from __future__ import annotations

import hashlib
import hmac
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import insert

from lifecycle import config
from lifecycle.channels.http_webhook import WebhookHook, signature
from lifecycle.channels.providers import ProviderTransport
from lifecycle.channels.retry import RetryPolicy
from lifecycle.engine import dispatch, pipeline
from lifecycle.messages.links import PublicLinks
from lifecycle.model import schema
from lifecycle.sandbox import SandboxServer
from tests.conftest import AS_OF
from tests.support.invariants import DyingTransport, WorkerDied, stage_run
from tests.support.journey import messages, messages_already_sent
from tests.support.webhook import use_webhook_program, webhook_contact
from tests.unit.channels.test_hooks import FAST, connect_to_sandbox

LINKS = PublicLinks("https://app.test/lifecycle", "test-secret")


@pytest.fixture
def sandbox(monkeypatch) -> Iterator[SandboxServer]:
    with SandboxServer() as server:
        connect_to_sandbox(monkeypatch, server, public_base_url="https://app.test/lifecycle")
        yield server


@pytest.fixture
def signals(tmp_path: Path, monkeypatch) -> Path:
    return use_webhook_program(tmp_path, monkeypatch)


def _links(message_id: int, contact_id: str, channel: str) -> dict[str, str]:
    return {"unsubscribe": LINKS.unsubscribe_url(message_id, contact_id, channel)}


def _run(engine, hook: WebhookHook | None = None) -> None:
    scope, programs = pipeline.load_scope("signals", f"signals__{AS_OF.isoformat()}", AS_OF)
    transport = ProviderTransport(hook or WebhookHook(retry_policy=FAST), links=LINKS)
    pipeline.run_program(engine, scope, programs, transport, links=_links)


def _outcomes(engine) -> dict[str, tuple[str, str | None]]:
    return {m["contact_id"]: (m["status"], m["reason"]) for m in messages(engine, "signals")}


def _delivered(sandbox: SandboxServer) -> Counter[str]:
    return Counter(d["idempotency_key"] for d in sandbox.webhook_deliveries())


def test_payloads_go_signed_with_the_ledger_key_where_consent_lists_and_caps_allow(crm, signals, sandbox):
    engine, c = crm
    posted = webhook_contact(c, first_name="Ada")
    no_consent = webhook_contact(c, consent={"email": "granted"})
    unsubscribed = webhook_contact(c)
    with engine.begin() as conn:
        conn.execute(
            insert(schema.suppressions).values(
                contact_id=unsubscribed, channel="webhook", reason="unsubscribed", source="test", created_at=AS_OF
            )
        )
    capped = webhook_contact(c)
    messages_already_sent(engine, capped, 1, channel="webhook")
    busy = webhook_contact(c)
    messages_already_sent(engine, busy, 3, channel="email")

    _run(engine)

    assert _outcomes(engine) == {
        posted: ("sent", None),
        no_consent: ("suppressed", "no_consent"),
        unsubscribed: ("suppressed", "unsubscribed"),
        capped: ("capped", "frequency_cap_webhook: 1 per 7d"),
        busy: ("capped", "frequency_cap_all: 3 per 7d"),
    }
    [delivery] = sandbox.webhook_deliveries()  # the receiver checked its signature before keeping it
    [message] = [m for m in messages(engine, "signals") if m["status"] == "sent"]
    assert delivery["payload"] == {"type": "high_intent", "contact_id": posted, "name": "Ada", "program": "signals"}
    assert delivery["idempotency_key"] == message["idempotency_key"]
    assert message["provider_message_id"] == delivery["id"]


def test_a_payload_signed_with_another_secret_is_refused_and_fails(crm, signals, sandbox, monkeypatch):
    engine, c = crm
    contact = webhook_contact(c)
    monkeypatch.setenv(
        "AIRFLOW_CONN_WEBHOOK_DEFAULT", f'{{"conn_type": "http", "host": "{sandbox.webhook_url()}", "password": "x"}}'
    )

    _run(engine)

    assert _outcomes(engine) == {contact: ("failed", "webhook 401 Unauthorized")}
    assert sandbox.webhook_deliveries() == []


def test_a_template_that_is_not_json_fails_with_its_reason(crm, sandbox, tmp_path, monkeypatch):
    use_webhook_program(tmp_path, monkeypatch, payload='{"name": {{ contact.first_name }}}')
    engine, c = crm
    contact = webhook_contact(c, first_name="Ada")

    _run(engine)

    [(status, reason)] = _outcomes(engine).values()
    assert (status, list(_outcomes(engine))) == ("failed", [contact])
    assert "the webhook payload is not JSON" in reason and "signal" in reason
    assert sandbox.webhook_deliveries() == []


@pytest.mark.parametrize("fault", ["429", "500", "503", "drop_after_accept"])
def test_retried_deliveries_reach_the_receiver_once(crm, signals, sandbox, fault):
    engine, c = crm
    contacts = [webhook_contact(c) for _ in range(3)]
    sandbox.add_fault("webhook", fault, count=2, retry_after=0)

    _run(engine)

    assert _outcomes(engine) == dict.fromkeys(contacts, ("sent", None))
    assert set(_delivered(sandbox).values()) == {1} and len(_delivered(sandbox)) == 3
    # An answer lost after the receiver kept the delivery: the retry carries the same key, and the
    # receiver recognises it.
    assert sandbox.app.webhook.replays == (2 if fault == "drop_after_accept" else 0)


@dataclass(frozen=True)
class RecordedWaits(RetryPolicy):
    """A retry policy that records its waits instead of sleeping them."""

    waits: list[float] = field(default_factory=list)

    def call(self, fn, sleep=None):
        return super().call(fn, sleep=self.waits.append)


def test_retry_after_is_honoured(sandbox):
    policy = RecordedWaits(attempts=3, base_delay=0.0, max_delay=5.0)
    sandbox.add_fault("webhook", "429", count=1, retry_after=2)

    delivery_id = WebhookHook(retry_policy=policy).deliver('{"a": 1}', "key-1")

    assert policy.waits == [2.0] and delivery_id == sandbox.webhook_deliveries()[0]["id"]


def test_a_worker_dying_mid_batch_then_retried_delivers_no_payload_twice(crm, signals, sandbox, monkeypatch):
    engine, c = crm
    contacts = [webhook_contact(c) for _ in range(3)]
    run_id = "signals__crash"
    (batch,) = stage_run(engine, "signals", run_id, AS_OF)
    brand = config.load_policy().brand.model_dump()
    monkeypatch.setattr(dispatch, "CLAIM_LEASE", timedelta(0))  # the dead worker's requests are long over

    with pytest.raises(WorkerDied):
        dispatch.send_batch(engine, run_id, batch, DyingTransport(survivors=2), links=_links, brand=brand)
    transport = ProviderTransport(WebhookHook(retry_policy=FAST), links=LINKS)
    dispatch.send_batch(engine, run_id, batch, transport, links=_links, brand=brand)

    # The endpoint cannot be asked what it holds: what the dead worker left unsettled stays unknown.
    assert set(_delivered(sandbox).values()) == {1} and len(_delivered(sandbox)) == 2
    assert _outcomes(engine) == dict.fromkeys(contacts, ("unknown", dispatch.OutcomeReason.STALE_CLAIM))


def test_the_signature_is_over_the_timestamp_and_the_body():
    expected = hmac.new(b"secret", b"1700000000.{}", hashlib.sha256).hexdigest()
    assert signature("secret", 1700000000, b"{}") == f"t=1700000000,v1={expected}"
