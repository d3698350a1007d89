"""The ``dry_run`` transport: accepts every message and sends nothing."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from lifecycle.channels.base import OutboundEmail, OutboundSms, SendResult
from lifecycle.model.ledger import Status


def _sms_segments(body: str) -> int:
    """Count SMS segments: 160/153 GSM-7 characters, 70/67 for UCS-2 bodies."""
    try:
        body.encode("ascii")
        single, multi = 160, 153
    except UnicodeEncodeError:
        single, multi = 70, 67
    if len(body) <= single:
        return 1
    return -(-len(body) // multi)


class DryRunTransport:
    """Records that each message was rendered; nothing leaves the machine."""

    name = "dry_run"

    def send_email(self, batch: Sequence[OutboundEmail]) -> list[SendResult]:
        return [SendResult(m.message_id, Status.SENT, f"dry-run-{m.idempotency_key}") for m in batch]

    def send_sms(
        self, batch: Sequence[OutboundSms], still_claimed: Callable[[int], bool] | None = None
    ) -> list[SendResult]:
        return [
            SendResult(m.message_id, Status.SENT, f"dry-run-{m.idempotency_key}", segments=_sms_segments(m.body))
            for m in batch
        ]
