"""The Airflow pool every send task runs in: one bound on provider requests across all programs,
their due-steps sweeps and every worker.

Each program's ``send`` is mapped over its batches with ``max_active_tis_per_dag=4``, which bounds
one DAG; eight programs and the sweep could otherwise send 36 batches at once, each with its
sender's requests in flight. :data:`SEND_POOL` bounds them together. Every place that sets up
Airflow's metadata database creates it (``lifecycle demo``, the compose file's ``airflow-init``, the
tests' database and cluster), with :func:`send_pool_slots` slots: ``LIFECYCLE_SEND_POOL_SLOTS``, else
:data:`DEFAULT_SEND_SLOTS`. A task in a pool that does not exist is never scheduled.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

SEND_POOL = "lifecycle_send"
DEFAULT_SEND_SLOTS = 8
SLOTS_VARIABLE = "LIFECYCLE_SEND_POOL_SLOTS"
DESCRIPTION = "Lifecycle send tasks, all programs and sweeps: batches sending to providers at once"


def send_pool_slots(environ: Mapping[str, str] = os.environ) -> int:
    """The send pool's slots: ``LIFECYCLE_SEND_POOL_SLOTS`` when set (a positive whole number), else
    :data:`DEFAULT_SEND_SLOTS`."""
    value = environ.get(SLOTS_VARIABLE, "").strip()
    if not value:
        return DEFAULT_SEND_SLOTS
    if not value.isdigit() or int(value) < 1:
        raise ValueError(f"{SLOTS_VARIABLE} must be a positive whole number, got {value!r}")
    return int(value)


def pool_set_args(slots: int | None = None) -> list[str]:
    """The ``airflow`` arguments that create (or resize) the send pool: ``pools set NAME SLOTS DESC``."""
    return ["pools", "set", SEND_POOL, str(slots if slots is not None else send_pool_slots()), DESCRIPTION]


def ensure_send_pool(slots: int | None = None) -> None:
    """Create (or resize) the send pool in Airflow's metadata database, in this process."""
    from airflow.models.pool import Pool

    Pool.create_or_update_pool(
        SEND_POOL,
        slots if slots is not None else send_pool_slots(),
        DESCRIPTION,
        include_deferred=False,
    )
