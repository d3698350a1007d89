"""Privacy: texts that may reach a log, the ledger or an alert carry no email address or phone number.

Logs name contact ids, never addresses; a provider's error message (which often quotes the
address it refused) passes through :func:`redact` before it is stored or logged.
"""

from __future__ import annotations

import re

_EMAIL = re.compile(r"[^\s@'\"<>]+@[^\s@'\"<>]+")
_PHONE = re.compile(r"\+?\d[\d\s().-]{5,}\d")


def redact(text: str) -> str:
    """A provider's error message with any email address or phone number blanked out."""
    return _PHONE.sub("<number>", _EMAIL.sub("<email>", text))
