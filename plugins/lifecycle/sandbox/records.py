"""The sandbox's memory: accepted emails and SMS, opted-out numbers and per-endpoint request stats."""

from __future__ import annotations

import threading
from collections import Counter, defaultdict
from typing import Any


def _email_copy(email: dict[str, Any]) -> dict[str, Any]:
    return {**email, "events": list(email["events"])}


class Recorder:
    """Thread-safe store of everything the sandbox accepted.

    Readers get copies of the records; nested values (headers, custom args) are never changed
    after a record is added, so the copies share them.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._emails: list[dict[str, Any]] = []
        self._emails_by_sg_id: dict[str, dict[str, Any]] = {}
        self._emails_by_x_id: defaultdict[str, list[dict[str, Any]]] = defaultdict(list)
        self._sms: dict[str, dict[str, Any]] = {}
        self._stopped: set[str] = set()
        self._stats: defaultdict[str, Counter[str]] = defaultdict(Counter)

    def add_emails(self, emails: list[dict[str, Any]]) -> None:
        """Record accepted emails (one per recipient), each with an ``events`` list."""
        with self._lock:
            for email in emails:
                self._emails.append(email)
                self._emails_by_sg_id[email["sg_message_id"]] = email
                self._emails_by_x_id[email["x_message_id"]].append(email)

    def emails(self, to: str | None = None) -> list[dict[str, Any]]:
        """Accepted emails in order, optionally only those to one address (case-insensitive)."""
        with self._lock:
            return [_email_copy(email) for email in self._emails if to is None or email["to"].lower() == to.lower()]

    def find_emails(self, sg_message_id: str | None = None, x_message_id: str | None = None) -> list[dict[str, Any]]:
        """The emails with this ``sg_message_id``, or all emails of one request's ``x_message_id``."""
        with self._lock:
            if sg_message_id is not None:
                found = [self._emails_by_sg_id[sg_message_id]] if sg_message_id in self._emails_by_sg_id else []
            else:
                found = list(self._emails_by_x_id.get(x_message_id or "", ()))
            return [_email_copy(email) for email in found]

    def add_email_event(self, sg_message_id: str, event: str) -> None:
        """Note that ``event`` was emitted for one email."""
        with self._lock:
            email = self._emails_by_sg_id.get(sg_message_id)
            if email is not None:
                email["events"].append(event)

    def add_sms(self, message: dict[str, Any]) -> None:
        """Record an accepted SMS, keyed by its ``sid``."""
        with self._lock:
            self._sms[message["sid"]] = message

    def update_sms(self, sid: str, **changes: Any) -> None:
        """Change fields of a recorded SMS (its status as it progresses)."""
        with self._lock:
            self._sms[sid].update(changes)

    def sms(self, sid: str) -> dict[str, Any] | None:
        """One recorded SMS, or None."""
        with self._lock:
            message = self._sms.get(sid)
            return dict(message) if message is not None else None

    def sms_list(self) -> list[dict[str, Any]]:
        """Every recorded SMS, oldest first."""
        with self._lock:
            return [dict(message) for message in self._sms.values()]

    def set_stopped(self, number: str, stopped: bool) -> None:
        """Opt a phone number out of (or back into) SMS."""
        with self._lock:
            if stopped:
                self._stopped.add(number)
            else:
                self._stopped.discard(number)

    def is_stopped(self, number: str) -> bool:
        """Whether the number has opted out with STOP (or a synonym)."""
        with self._lock:
            return number in self._stopped

    def count(self, endpoint: str, key: str) -> None:
        """Add one to an endpoint's counter (``requests``, ``responses.<status>``, ``faults.<kind>``)."""
        with self._lock:
            self._stats[endpoint][key] += 1

    def stats(self) -> dict[str, dict[str, Any]]:
        """Counters per endpoint, with ``responses`` and ``faults`` grouped by status and kind."""
        with self._lock:
            result: dict[str, dict[str, Any]] = {}
            for endpoint, counter in self._stats.items():
                entry: dict[str, Any] = {"requests": counter["requests"], "responses": {}, "faults": {}}
                for key, value in counter.items():
                    group, _, name = key.partition(".")
                    if name:
                        entry[group][name] = value
                result[endpoint] = entry
            return result

    def reset(self) -> None:
        """Forget every record, opt-out and counter."""
        with self._lock:
            self._emails.clear()
            self._emails_by_sg_id.clear()
            self._emails_by_x_id.clear()
            self._sms.clear()
            self._stopped.clear()
            self._stats.clear()
