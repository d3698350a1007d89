"""The events queue (the policy's ``events_queue``) on a real Redis: the track endpoint publishes a
wake-up per realtime program once the events it took are committed, Airflow's own message-queue
trigger (as the DAG's watcher serializes it) receives it, and a queue that is down costs the caller
nothing."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
import yaml
from fastapi.testclient import TestClient

from lifecycle import config
from lifecycle.airflow.factory import build_program_dag
from lifecycle.devtools.local import connection_json
from lifecycle.engine import event_queue
from lifecycle.paths import PROJECT_ROOT
from lifecycle.web import create_app
from lifecycle.web.track import TRACK_CONN_ID
from tests.conftest import REDIS_URL, require_redis
from tests.integration.web.test_track import BEARER, WRITE_KEY, call, tracked

QUEUE_CONN_ID = "lifecycle_events_queue"


def _redis_up() -> redis.Redis:
    require_redis()
    return redis.Redis.from_url(REDIS_URL, socket_connect_timeout=3)


@pytest.fixture
def prefix() -> str:
    """A channel prefix of this test's own (pub/sub channels are shared by every Redis database)."""
    return f"lifecycle.test.{uuid.uuid4().hex[:10]}."


@pytest.fixture
def queued_config(tmp_path: Path, monkeypatch, prefix: str) -> Path:
    """The shipped programs (welcome is realtime on ``signed_up``) with an events queue in the policy."""
    directory = tmp_path / "config"
    shutil.copytree(PROJECT_ROOT / "config", directory)
    policy = yaml.safe_load((directory / "policy.yml").read_text())
    policy["events_queue"] = {"conn_id": QUEUE_CONN_ID, "channel_prefix": prefix, "poll_seconds": 30}
    (directory / "policy.yml").write_text(yaml.safe_dump(policy, allow_unicode=True))
    monkeypatch.setenv("LIFECYCLE_CONFIG_DIR", str(directory))
    monkeypatch.delenv("LIFECYCLE_TEMPLATES_DIR", raising=False)
    return directory


@pytest.fixture
def endpoint(crm, db_url, monkeypatch, queued_config) -> Iterator[tuple[TestClient, object]]:
    monkeypatch.setenv("LIFECYCLE_CRM_URL", db_url)
    monkeypatch.setenv(f"AIRFLOW_CONN_{TRACK_CONN_ID.upper()}", connection_json("generic", password=WRITE_KEY))
    monkeypatch.setenv(f"AIRFLOW_CONN_{QUEUE_CONN_ID.upper()}", f"{REDIS_URL}/0")
    with TestClient(create_app()) as client:
        yield client, crm[0]


@pytest.fixture
def subscribed(prefix: str) -> Iterator[redis.client.PubSub]:
    """A subscription to every channel under the test's prefix."""
    pubsub = _redis_up().pubsub(ignore_subscribe_messages=True)
    pubsub.psubscribe(prefix + "*")
    assert pubsub.get_message(timeout=2) is None  # the subscription is in place (its confirmation is ignored)
    yield pubsub
    pubsub.close()


def _wakeups(pubsub: redis.client.PubSub, wait: float = 1.0) -> list[tuple[str, dict]]:
    found = []
    while (message := pubsub.get_message(timeout=wait)) is not None:
        found.append((message["channel"].decode(), json.loads(message["data"])))
        wait = 0.2
    return found


def test_a_tracked_sign_up_wakes_welcome_once_and_its_replay_wakes_nothing(endpoint, subscribed, prefix):
    client, engine = endpoint
    response = client.post("/track", json=call("m-1", event="signed_up"), headers=BEARER)
    assert response.status_code == 202 and response.json()["status"] == "accepted"
    assert _wakeups(subscribed) == [(prefix + "welcome", {"program": "welcome", "events": 1})]
    # A client retrying: a duplicate, nothing new to take, so no wake-up.
    assert client.post("/track", json=call("m-1", event="signed_up"), headers=BEARER).json()["status"] == ("duplicate")
    assert _wakeups(subscribed, wait=0.5) == []
    assert [row["message_id"] for row in tracked(engine)] == ["m-1"]


def test_a_batch_wakes_each_program_once_with_its_count_and_other_events_wake_nothing(endpoint, subscribed, prefix):
    client, _engine = endpoint
    calls = [call(f"s-{i}", event="signed_up", userId=f"c-{i}") for i in range(3)]
    calls += [call("v-1", event="page_viewed"), call("bad", event="")]
    body = client.post("/batch", json={"batch": calls}, headers=BEARER).json()
    assert (body["accepted"], body["rejected"]) == (4, 1)
    # page_viewed triggers only programs that are not realtime: it is read by their scheduled runs.
    assert _wakeups(subscribed) == [(prefix + "welcome", {"program": "welcome", "events": 3})]


def test_airflows_message_queue_trigger_as_the_dag_stores_it_receives_the_wake_up(endpoint, prefix):
    # The watcher the DAG serializes (common-messaging's MessageQueueTrigger resolves to the Redis
    # provider's trigger), run as the triggerer runs it, subscribed before the sign-up is tracked.
    client, _engine = endpoint
    _redis_up()
    policy = config.load_policy()
    programs, _errors = config.load_all_programs()
    asset = build_program_dag(programs["welcome"], queue=policy.events_queue).timetable.asset_condition
    classpath, kwargs = asset.watchers[1].trigger.serialize()
    module, _, name = classpath.rpartition(".")
    trigger = getattr(__import__(module, fromlist=[name]), name)(**kwargs)

    async def first_event():
        stream = trigger.run().__aiter__()
        pending = asyncio.ensure_future(stream.__anext__())
        await asyncio.sleep(1.0)  # subscribed (the trigger subscribes before its first look)
        await asyncio.to_thread(client.post, "/track", json=call("m-9", event="signed_up"), headers=BEARER)
        return await asyncio.wait_for(pending, timeout=10)

    event = asyncio.run(first_event())
    assert event.payload["channel"] == prefix + "welcome"
    assert json.loads(event.payload["data"]) == {"program": "welcome", "events": 1}


def test_a_queue_that_is_down_costs_the_caller_nothing(endpoint, monkeypatch, caplog):
    client, engine = endpoint
    monkeypatch.setenv(f"AIRFLOW_CONN_{QUEUE_CONN_ID.upper()}", "redis://127.0.0.1:1/0")
    with caplog.at_level(logging.WARNING, logger="lifecycle"):
        response = client.post("/track", json=call("m-2", event="signed_up"), headers=BEARER)
    assert response.status_code == 202 and response.json()["status"] == "accepted"
    assert [row["message_id"] for row in tracked(engine)] == ["m-2"]
    warning = " ".join(r.getMessage() for r in caplog.records)
    assert f"Could not publish wake-ups on the events queue (connection {QUEUE_CONN_ID}" in warning
    assert "within 30 s" in warning


def test_without_an_events_queue_nothing_is_published(crm, db_url, monkeypatch, subscribed, shipped_config):
    monkeypatch.setenv("LIFECYCLE_CRM_URL", db_url)
    monkeypatch.setenv(f"AIRFLOW_CONN_{TRACK_CONN_ID.upper()}", connection_json("generic", password=WRITE_KEY))
    assert event_queue.wiring().queue is None
    with TestClient(create_app()) as client:
        assert client.post("/track", json=call("m-3", event="signed_up"), headers=BEARER).status_code == 202
    assert _wakeups(subscribed, wait=0.5) == []


def test_the_wiring_follows_the_policy_and_program_files_as_they_change(queued_config, prefix):
    wiring = event_queue.wiring()
    assert wiring.queue is not None and wiring.queue.channel_prefix == prefix
    assert wiring.programs(["signed_up", "page_viewed"]) == ["welcome"]
    assert event_queue.wiring() is wiring  # unchanged files: not read again
    policy = yaml.safe_load((queued_config / "policy.yml").read_text())
    del policy["events_queue"]
    path = queued_config / "policy.yml"
    path.write_text(yaml.safe_dump(policy))
    os.utime(path, (path.stat().st_atime, path.stat().st_mtime + 5))
    assert event_queue.wiring().queue is None
