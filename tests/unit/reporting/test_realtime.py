"""The realtime figures in words: a watcher that stopped looking says so, and lags read to the second."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from lifecycle.reporting import display
from lifecycle.reporting.realtime import Backlog

NOW = datetime(2026, 11, 16, 15, 0)


def test_a_watcher_that_stopped_looking_is_behind_whatever_waits():
    backlog = Backlog(NOW - timedelta(minutes=7), None, 0, None, stale=True)
    assert backlog.behind(NOW)
    assert backlog.text(NOW) == "the watcher has stopped looking (last looked 7m 00s ago): is the triggerer running?"


def test_events_waiting_a_little_are_not_behind_and_long_waits_are():
    fresh = Backlog(NOW - timedelta(seconds=3), NOW, 1, NOW - timedelta(seconds=40), stale=False)
    assert not fresh.behind(NOW)
    assert fresh.text(NOW) == "1 event waiting for a run, the oldest for 40s (last looked 3s ago)"
    old = Backlog(NOW - timedelta(seconds=3), NOW, 2, NOW - timedelta(minutes=6), stale=False)
    assert old.behind(NOW)
    assert Backlog(NOW, None, 0, None, stale=False).text(NOW) == "no event waiting for a run (last looked 0s ago)"


@pytest.mark.parametrize(
    ("seconds", "shown"),
    [(0, "0s"), (59, "59s"), (65, "1m 05s"), (3_725, "1h 02m"), (2 * 86_400 + 3 * 3_600, "2d 3h"), (-4, "0s")],
)
def test_a_lag_reads_to_the_second(seconds, shown):
    assert display.lag(timedelta(seconds=seconds)) == shown
