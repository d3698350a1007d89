"""Quiet hours in the recipient's own time zone: defer to the window's end, never drop."""

from __future__ import annotations

from datetime import datetime, time

import pytest

from lifecycle.config import QuietHours
from lifecycle.engine.quiet_hours import quiet_until

WINDOW = QuietHours(start=time(21), end=time(8), default_timezone="Europe/London")


@pytest.mark.parametrize(
    ("as_of_utc", "zone", "expected_utc"),
    [
        (datetime(2026, 11, 17, 4, 0), "America/New_York", datetime(2026, 11, 17, 13, 0)),  # 23:00 local
        (datetime(2026, 11, 17, 12, 0), "America/New_York", None),  # 07:00 local, still quiet? no: 07:00
        (datetime(2026, 11, 17, 20, 30), "Europe/Berlin", datetime(2026, 11, 18, 7, 0)),  # 21:30 local
        (datetime(2026, 11, 17, 13, 0), "Asia/Tokyo", None),  # 22:00 local -> quiet
        (datetime(2026, 3, 29, 0, 30), "Europe/London", datetime(2026, 3, 29, 7, 0)),  # DST starts that night
        (datetime(2026, 11, 17, 23, 0), None, datetime(2026, 11, 18, 8, 0)),  # no zone: policy default
        (datetime(2026, 11, 17, 23, 0), "Mars/Olympus", datetime(2026, 11, 18, 8, 0)),  # unknown zone: default
        (datetime(2026, 11, 17, 15, 0), "Europe/London", None),
    ],
)
def test_quiet_until(as_of_utc, zone, expected_utc):
    if zone == "America/New_York" and as_of_utc.hour == 12:
        expected_utc = datetime(2026, 11, 17, 13, 0)  # 07:00 in New York is before the 08:00 end
    if zone == "Asia/Tokyo":
        expected_utc = datetime(2026, 11, 17, 23, 0)  # 22:00 in Tokyo: wait for 08:00 JST
    assert quiet_until(as_of_utc, zone, WINDOW) == expected_utc


def test_daytime_window_that_does_not_wrap():
    lunch = QuietHours(start=time(12), end=time(13))
    assert quiet_until(datetime(2026, 1, 5, 12, 30), "UTC", lunch) == datetime(2026, 1, 5, 13, 0)
    assert quiet_until(datetime(2026, 1, 5, 13, 0), "UTC", lunch) is None


UTC_WINDOW = QuietHours(start=time(21), end=time(8), default_timezone="UTC")


@pytest.mark.parametrize(
    ("as_of_utc", "zone", "phone", "country", "expected_utc"),
    [
        # No readable zone: the phone number's own zone (a San Francisco number: 21:00 there).
        (datetime(2026, 11, 17, 5, 0), "Mars/Olympus", "+14155550199", " us", datetime(2026, 11, 17, 16, 0)),
        (datetime(2026, 11, 17, 5, 0), None, "+14155550199", "US", datetime(2026, 11, 17, 16, 0)),
        # A mobile number whose zone the numbering plan does not say: its country's (the UK: 22:00 there).
        (datetime(2026, 11, 17, 22, 0), "", "+447700900123", None, datetime(2026, 11, 18, 8, 0)),
        # No phone to read: the contact's country (Japan: 07:00 there, until 08:00).
        (datetime(2026, 11, 17, 22, 0), None, None, "jp", datetime(2026, 11, 17, 23, 0)),
        # A toll-free number could ring anywhere in the plan, Guam to American Samoa: the strictest
        # reading waits until it is day in all of them (08:00 in Guam is 22:00 UTC).
        (datetime(2026, 11, 17, 13, 30), None, "+18005550199", "US", datetime(2026, 11, 17, 22, 0)),
        # A readable zone wins over the number (a New Yorker's London phone: 08:00 in New York).
        (datetime(2026, 11, 17, 12, 0), "America/New_York", "+447700900123", "GB", datetime(2026, 11, 17, 13, 0)),
        # Nothing known at all: the policy's default zone.
        (datetime(2026, 11, 17, 23, 0), None, None, None, datetime(2026, 11, 18, 8, 0)),
    ],
)
def test_an_unreadable_zone_falls_back_to_the_phone_number_then_the_country(
    as_of_utc, zone, phone, country, expected_utc
):
    assert quiet_until(as_of_utc, zone, UTC_WINDOW, phone=phone, country=country) == expected_utc


def test_the_strictest_reading_goes_once_every_zone_is_out_of_its_quiet_hours():
    # 22:00 UTC: 08:00 in Guam, 12:00 in Honolulu, 17:00 in New York, 11:00 in Pago Pago: all day.
    assert quiet_until(datetime(2026, 11, 17, 22, 0), None, UTC_WINDOW, phone="+18005550199") is None
