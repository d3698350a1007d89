"""Engine bugs the scale benchmark found, each pinned by a test that failed before its fix."""

from __future__ import annotations

import pytest

from tests.conftest import AS_OF
from tests.support.journey import messages, messages_already_sent, run_program

pytestmark = pytest.mark.usefixtures("test_config")


def test_higher_priority_entrant_keeps_the_last_slot_when_another_contact_has_a_bad_address(crm):
    # The address rules once read the outer query's contacts table instead of the entrant's row, so
    # one invalid address anywhere in the CRM made every future entrant look unreachable, and a
    # lower-priority program running first took the slot the higher one would want.
    engine, crm_rows = crm
    contested = crm_rows.contact()
    crm_rows.contact(email="not-an-address")
    messages_already_sent(engine, contested)

    run_program(engine, "alpha", AS_OF)
    run_program(engine, "beta", AS_OF)

    outcome = {
        program: {m["contact_id"]: (m["status"], m["reason"]) for m in messages(engine, program)}[contested]
        for program in ("alpha", "beta")
    }
    assert outcome == {"alpha": ("capped", "frequency_cap_email: 3 per 7d"), "beta": ("dry_run", None)}
