"""The ``dry_run`` transport: accepts every message and sends nothing."""

from __future__ import annotations

from collections.abc import Sequence

from lifecycle.channels import registry
from lifecycle.channels.base import ClaimCheck, Outbound, SendResult
from lifecycle.model.ledger import Status


class DryRunTransport:
    """Records that each message was rendered; nothing leaves the machine."""

    name = "dry_run"

    def send(
        self, channel: str, batch: Sequence[Outbound], still_claimed: ClaimCheck | None = None
    ) -> list[SendResult]:
        counted = registry.get(channel)
        return [
            SendResult(m.message_id, Status.SENT, f"dry-run-{m.idempotency_key}", segments=counted.segments(m))
            for m in batch
        ]
