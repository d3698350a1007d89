"""The simulated transport of the developer tools (simulation, benchmark): accepts every message
and sends nothing. No DAG uses it."""

from __future__ import annotations

from collections.abc import Sequence

from lifecycle.channels import registry
from lifecycle.channels.base import ClaimCheck, Outbound, SendResult
from lifecycle.model.ledger import Status


class SimulatedTransport:
    """Accepts each message as if a provider had; nothing leaves the machine."""

    name = "simulated"

    def send(
        self, channel: str, batch: Sequence[Outbound], still_claimed: ClaimCheck | None = None
    ) -> list[SendResult]:
        counted = registry.get(channel)
        return [
            SendResult(m.message_id, Status.SENT, f"simulated-{m.idempotency_key}", segments=counted.segments(m))
            for m in batch
        ]
