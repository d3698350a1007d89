"""How many SMS segments a message body occupies, as carriers (and Twilio's ``num_segments``) count.

A body made only of GSM-7 characters fits 160 septets in one segment, or 153 per segment once
concatenated (extension characters such as ``€`` or ``{`` take two septets and are never split).
Any other character switches the whole body to UCS-2: 70 UTF-16 code units in one segment, 67 per
segment when concatenated (a surrogate pair is never split).
"""

from __future__ import annotations

from collections.abc import Sequence

GSM7_BASIC = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
GSM7_EXTENSION = frozenset("\f^{}\\[~]|€")


def _pack(costs: Sequence[int], single: int, multi: int) -> int:
    if sum(costs) <= single:
        return 1
    segments, used = 1, 0
    for cost in costs:
        if used + cost > multi:
            segments, used = segments + 1, 0
        used += cost
    return segments


def is_gsm7(body: str) -> bool:
    """Whether every character of ``body`` is in the GSM-7 default alphabet or its extension table."""
    return all(char in GSM7_BASIC or char in GSM7_EXTENSION for char in body)


def count_segments(body: str) -> int:
    """The number of segments ``body`` is sent as; a message always occupies at least one."""
    if is_gsm7(body):
        return _pack([2 if char in GSM7_EXTENSION else 1 for char in body], 160, 153)
    return _pack([2 if ord(char) > 0xFFFF else 1 for char in body], 70, 67)
