"""``lifecycle preview`` and test copies render what the send task renders: one CRM reading and
one template context serve both."""

from __future__ import annotations

from datetime import timedelta

import pytest

from lifecycle import config, paths
from lifecycle.messages.preview import render_step
from tests.conftest import AS_OF
from tests.support.journey import messages, run_program, treatment_contact
from tests.support.programs import UNSUBSCRIBE, render_message

HOUR = timedelta(hours=1)


def _program(program_id: str) -> config.Program:
    return config.load_program(paths.config_dir() / "programs" / f"{program_id}.yml")


@pytest.mark.slow
@pytest.mark.parametrize(
    "fields",
    [
        {},
        {"first_name": None, "role": None},
        {"first_name": "Zoë", "last_name": "O'Brien", "industry": "Retail"},
        {"email": "  Ada.Lovelace@Example.COM ", "first_name": "Ada"},
    ],
)
def test_a_preview_is_the_message_the_send_task_renders(shipped_crm, fields):
    engine, crm = shipped_crm
    cid = treatment_contact(crm, "abandoned_cart", **fields)
    crm.event(cid, "cart_abandoned", AS_OF - HOUR / 2, cart_id="cart-1", product="Template Pack", value=87.0)
    crm.event(cid, "cart_abandoned", AS_OF + 3 * HOUR, cart_id="cart-2", product="Later cart", value=5.0)
    run_program(engine, "abandoned_cart", AS_OF)
    run_program(engine, "abandoned_cart", AS_OF + HOUR)
    (message,) = messages(engine, "abandoned_cart")
    sent = render_message(engine, message)

    program = _program("abandoned_cart")
    step = next(s for s in program.steps if s.id == message["step"])
    brand = config.load_policy().brand.model_dump()
    # Later than the run: the enrollment's trigger (cart-1), not the newer cart, is what was sent.
    previewed = render_step(
        engine, program, step, cid, as_of=AS_OF + 4 * HOUR, brand=brand, links={"unsubscribe": UNSUBSCRIBE}
    )
    assert previewed == sent
    assert "Template Pack" in previewed.html and "Later cart" not in previewed.html
    assert "example.com" not in previewed.html.lower() and "example.com" not in previewed.text.lower()


def test_a_preview_before_enrollment_uses_the_newest_trigger_event(shipped_crm):
    engine, crm = shipped_crm
    cid = treatment_contact(crm, "abandoned_cart")
    crm.event(cid, "cart_abandoned", AS_OF - 2 * HOUR, cart_id="cart-1", product="Old cart", value=1.0)
    crm.event(cid, "cart_abandoned", AS_OF - HOUR, cart_id="cart-2", product="Newest cart", value=2.0)
    program = _program("abandoned_cart")
    brand = config.load_policy().brand.model_dump()
    previewed = render_step(
        engine, program, program.steps[0], cid, as_of=AS_OF, brand=brand, links={"unsubscribe": UNSUBSCRIBE}
    )
    assert "Newest cart" in previewed.html and "Old cart" not in previewed.html


def test_a_preview_names_a_contact_it_cannot_read(shipped_crm):
    engine, crm = shipped_crm
    program = _program("welcome")
    brand = config.load_policy().brand.model_dump()
    with pytest.raises(LookupError, match="'nobody' is not in the CRM"):
        render_step(engine, program, program.steps[0], "nobody", as_of=AS_OF, brand=brand, links={})
