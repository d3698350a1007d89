"""The cap decision on its own: slots used, higher-priority demand and the policy caps, no SQL."""

from __future__ import annotations

from datetime import timedelta

from lifecycle.config import Cap
from lifecycle.engine.capping import accepted_demand, cap_decision

WEEK = timedelta(days=7)
CAPS = {"email": Cap(max=3, per=WEEK), "sms": Cap(max=2, per=WEEK), "all": Cap(max=5, per=WEEK)}
EMAIL_FULL = "frequency_cap_email: 3 per 7d"
ALL_FULL = "frequency_cap_all: 5 per 7d"


def test_below_the_cap_the_message_goes():
    assert cap_decision("email", {"email": 2, "all": 2}, {}, CAPS) is None


def test_exactly_at_the_cap_the_message_is_capped():
    assert cap_decision("email", {"email": 3, "all": 3}, {}, CAPS) == EMAIL_FULL


def test_demand_that_fills_the_last_slot_caps_the_lower_priority_message():
    assert cap_decision("email", {"email": 2, "all": 2}, {"email": 1, "all": 1}, CAPS) == EMAIL_FULL


def test_demand_on_another_channel_leaves_the_channel_cap_alone():
    assert cap_decision("email", {"email": 2, "all": 2}, {"sms": 1, "all": 1}, CAPS) is None


def test_the_all_channels_cap_counts_every_channel():
    used = {"email": 2, "sms": 2, "all": 4}
    assert cap_decision("email", used, {}, CAPS) is None
    assert cap_decision("email", used, {"sms": 1, "all": 1}, CAPS) == ALL_FULL


def test_the_channel_cap_is_reported_before_the_all_channels_cap():
    assert cap_decision("email", {"email": 3, "all": 5}, {}, CAPS) == EMAIL_FULL


def test_a_channel_without_its_own_cap_meets_only_the_all_channels_cap():
    caps = {"email": CAPS["email"], "all": CAPS["all"]}
    assert cap_decision("push", {"push": 40, "all": 4}, {}, caps) is None
    assert cap_decision("push", {"push": 40, "all": 5}, {}, caps) == ALL_FULL
    assert cap_decision("email", {"email": 2, "all": 2}, {}, {}) is None


def test_a_zero_cap_stops_everything():
    assert cap_decision("sms", {}, {}, {"sms": Cap(max=0, per=WEEK)}) == "frequency_cap_sms: 0 per 7d"


def test_missing_scopes_count_as_nothing_used():
    assert cap_decision("email", {}, {}, CAPS) is None


def test_accepted_demand_counts_what_the_higher_programs_can_send():
    assert accepted_demand(["email", "sms"], {"email": 0, "sms": 0, "all": 0}, CAPS) == {"email": 1, "sms": 1, "all": 2}


def test_accepted_demand_leaves_out_messages_their_own_cap_stops():
    # Two higher-priority emails want one free slot: the first takes it, the second is capped itself.
    assert accepted_demand(["email", "email"], {"email": 2, "all": 2}, CAPS) == {"email": 1, "all": 1}
    # An SMS whose own cap is full takes no slot of the all-channels cap.
    assert accepted_demand(["sms"], {"sms": 2, "all": 4}, CAPS) == {}
    assert (
        cap_decision(
            "email", {"email": 0, "sms": 2, "all": 4}, accepted_demand(["sms"], {"sms": 2, "all": 4}, CAPS), CAPS
        )
        is None
    )
