"""How program settings read to a person: durations as program files write them, step timing,
segments in the files' own YAML, reason counts. The Campaigns page, the digest and the DAG docs
all say it the same way."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta
from typing import Any

import yaml

from lifecycle.config import Step

RELATIVE_TO = {"enrollment": "enrollment", "previous": "the previous step", "anchor": "the anchor date"}


def duration(value: timedelta) -> str:
    """A length of time as program files write it: ``2d``, ``1d 12h``, ``30m``; ``0m`` for none."""
    minutes = abs(int(value.total_seconds() // 60))
    days, rest = divmod(minutes, 24 * 60)
    hours, minutes = divmod(rest, 60)
    return " ".join(f"{n}{unit}" for n, unit in ((days, "d"), (hours, "h"), (minutes, "m")) if n) or "0m"


def lag(value: timedelta) -> str:
    """A short wait to the second: ``42s``, ``3m 05s``, ``1h 02m``, ``2d 3h``."""
    seconds = max(int(value.total_seconds()), 0)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m {seconds % 60:02d}s"
    if seconds < 86400:
        return f"{seconds // 3600}h {seconds % 3600 // 60:02d}m"
    return f"{seconds // 86400}d {seconds % 86400 // 3600}h"


def step_timing(step: Step) -> str:
    """When a step is due: ``2d after enrollment``, ``30d before the anchor date``, ``at enrollment``."""
    anchor = RELATIVE_TO[step.relative_to]
    if not step.delay:
        return f"at {anchor}"
    return f"{duration(step.delay)} {'before' if step.delay < timedelta(0) else 'after'} {anchor}"


def segment(raw: Mapping[str, Any] | None) -> str:
    """A segment as the program file writes it, on one line of YAML flow style:
    ``{related: subscriptions, where: {status: active}}``; ``none`` when there is none."""
    if not raw:
        return "none"
    text = yaml.safe_dump(dict(raw), default_flow_style=True, sort_keys=False, width=1_000_000, allow_unicode=True)
    return " ".join(text.split())


def reasons(counts: Mapping[str, int]) -> str:
    """Reason counts, largest first: ``no_consent 12 · unsubscribed 3``; empty when there are none."""
    ranked = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
    return " · ".join(f"{reason} {n:,}" for reason, n in ranked if n)
