"""Track calls checked without a database: the inbox's widths, event ids, and what a call may hold."""

from __future__ import annotations

from datetime import datetime

from lifecycle.engine import tracking
from lifecycle.engine.tracking import Rejected, TrackedEvent, event_id_for, parse_call
from lifecycle.model import schema

RECEIVED = datetime(2026, 11, 16, 15, 0)


def test_the_limits_are_the_inbox_columns_widths():
    columns = schema.tracked_events.c
    assert columns.event_type.type.length == tracking.MAX_EVENT_NAME
    assert columns.contact_id.type.length == tracking.MAX_USER_ID
    assert columns.message_id.type.length == tracking.MAX_MESSAGE_ID
    assert len(event_id_for("x" * tracking.MAX_MESSAGE_ID)) <= columns.event_id.type.length


def test_an_event_id_depends_on_the_message_id_only():
    assert event_id_for("m-1") == event_id_for("m-1") != event_id_for("m-2")
    assert event_id_for("m-1").startswith("trk_") and len(event_id_for("m-1")) == 44


def test_a_numeric_user_id_is_read_as_text_and_properties_default_to_empty():
    parsed = parse_call({"userId": 42, "event": "purchase", "messageId": "m"}, RECEIVED)
    assert parsed == TrackedEvent("m", "42", "purchase", RECEIVED, {})


def test_the_first_problem_found_is_the_one_named():
    parsed = parse_call({"event": "Signed Up"}, RECEIVED)
    assert isinstance(parsed, Rejected) and parsed.field == "messageId"
