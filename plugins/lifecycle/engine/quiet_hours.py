"""Quiet hours in the recipient's own time zone: when a message may go, never whether.

A channel's quiet hours (SMS's, say) hold in the recipient's local time. The zone is the contact's
``timezone`` when it names one; else the zones of the phone number (``phonenumbers`` knows them for
most numbers), else those of the number's or the contact's country; else the policy's default zone.
Where several zones are possible (a US number whose area code says nothing, a country across
several zones) the strictest reading holds: a message waits while it is quiet hours in any of them.

Capping applies this when it plans a run (deferring to the window's end), and sending applies it
again when the message goes out, since a run may execute hours after its as-of time.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime, time, timedelta
from functools import lru_cache
from importlib import resources
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from lifecycle.config import QuietHours

UTC_ZONE = ZoneInfo("UTC")
# Enough rounds for the widest country (each round moves past one zone's quiet hours).
_MAX_ROUNDS = 64


@lru_cache(maxsize=4096)
def _named_zone(name: str | None) -> ZoneInfo | None:
    if not name:
        return None
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        return None


@lru_cache(maxsize=1)
def _country_zones() -> Mapping[str, tuple[str, ...]]:
    """ISO country code -> its zones, from the IANA ``zone.tab`` that the tzdata package carries."""
    table = resources.files("tzdata").joinpath("zoneinfo", "zone.tab").read_text(encoding="utf-8")
    zones: dict[str, list[str]] = {}
    for line in table.splitlines():
        if line and not line.startswith("#"):
            country, _coordinates, zone, *_comment = line.split("\t")
            zones.setdefault(country, []).append(zone)
    return {country: tuple(names) for country, names in zones.items()}


@lru_cache(maxsize=4096)
def _phone_zones(phone: str | None, country: str | None) -> tuple[ZoneInfo, ...]:
    """The zones a phone number can be in: its own (area code), else its country's, else the contact's country's."""
    import phonenumbers  # only where numbers are read
    from phonenumbers import timezone as number_zones

    region = (country or "").strip().upper() or None
    if phone:
        try:
            number = phonenumbers.parse(phone, region)
        except phonenumbers.NumberParseException:
            number = None
        if number is not None:
            own = tuple(
                z
                for z in (_named_zone(n) for n in number_zones.time_zones_for_number(number) if n != "Etc/Unknown")
                if z is not None
            )
            if own:
                return own
            region = phonenumbers.region_code_for_number(number) or region
    names = _country_zones().get(region, ()) if region else ()
    return tuple(z for z in (_named_zone(n) for n in names) if z is not None)


def recipient_zones(timezone: str | None, phone: str | None, country: str | None, default: str) -> tuple[ZoneInfo, ...]:
    """The zones whose quiet hours hold for a recipient (see the module's docstring)."""
    named = _named_zone(timezone.strip() if timezone else None)
    if named is not None:
        return (named,)
    return _phone_zones(phone, country) or (_named_zone(default) or UTC_ZONE,)


def _in_window(local: time, start: time, end: time) -> bool:
    if start <= end:
        return start <= local < end
    return local >= start or local < end


def _release(moment: datetime, zone: ZoneInfo, window: QuietHours) -> datetime | None:
    """The end of the quiet hours ``moment`` (naive UTC) falls in, in ``zone``; None outside them."""
    local = moment.replace(tzinfo=UTC_ZONE).astimezone(zone)
    if not _in_window(local.time().replace(tzinfo=None), window.start, window.end):
        return None
    release = local.replace(hour=window.end.hour, minute=window.end.minute, second=0, microsecond=0)
    if release <= local:
        release = (local + timedelta(days=1)).replace(
            hour=window.end.hour, minute=window.end.minute, second=0, microsecond=0
        )
    return release.astimezone(UTC_ZONE).replace(tzinfo=None)


def quiet_until_in(moment: datetime, zones: Sequence[ZoneInfo], window: QuietHours) -> datetime | None:
    """When a message due at ``moment`` (naive UTC) may go in every one of ``zones``, as naive UTC;
    None when it may go now."""
    current = moment
    for _round in range(_MAX_ROUNDS):
        releases = [r for r in (_release(current, zone, window) for zone in zones) if r is not None]
        if not releases:
            return None if current == moment else current
        current = max(releases)
    return current


def quiet_until(
    moment: datetime,
    timezone: str | None,
    window: QuietHours,
    *,
    phone: str | None = None,
    country: str | None = None,
) -> datetime | None:
    """When a message due at ``moment`` (naive UTC) may go out to this recipient, as naive UTC;
    None when it may go now."""
    return quiet_until_in(moment, recipient_zones(timezone, phone, country, window.default_timezone), window)
