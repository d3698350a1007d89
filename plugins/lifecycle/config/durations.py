"""Durations in program files: ``"48h"``, ``"-7d"``, ``"30m"`` or ``{days: 2, hours: 4}``."""

from __future__ import annotations

import re
from datetime import timedelta

_PATTERN = re.compile(r"^\s*(-?\d+)\s*([dhm])\s*$")
_UNITS = {"d": "days", "h": "hours", "m": "minutes"}


def parse_duration(value: object) -> timedelta:
    """Parse a duration; raises ValueError with the accepted forms on anything else."""
    if isinstance(value, timedelta):
        return value
    parts = None
    if isinstance(value, str) and (match := _PATTERN.match(value)):
        parts = {_UNITS[match.group(2)]: int(match.group(1))}
    elif (
        isinstance(value, dict)
        and value
        and set(value) <= {"days", "hours", "minutes"}
        and all(isinstance(v, int) and not isinstance(v, bool) for v in value.values())
    ):
        parts = value
    if parts is not None:
        try:
            return timedelta(**parts)
        except OverflowError:
            raise ValueError(f"{value!r} is not a duration: keep it under 999,999,999 days") from None
    raise ValueError(f"{value!r} is not a duration; write it like '48h', '7d', '30m', '-7d' or {{days: 2, hours: 4}}")
