"""Quiet hours in the recipient's own time zone: defer to the window's end, never drop."""

from __future__ import annotations

from datetime import datetime, time

import pytest

from lifecycle.config import QuietHours
from lifecycle.engine.capping import quiet_until

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
