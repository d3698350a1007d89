"""A test config with subscription topics and consent regions, for the topic, region and preference-centre tests."""

from __future__ import annotations

import shutil
from pathlib import Path

TOPICS_AND_REGIONS = """
topics:
  offers: {label: Offers and discounts, description: Deals on plans and add-ons., sendgrid_group: 101}
  education: {label: Tips and guides, sendgrid_group: 102, translations: {de: {label: Tipps und Anleitungen}}}
  account_billing: {label: Account and billing, optional: false}
regions:
  eu: {countries: [DE, FR, IE], legal_basis: {email: {marketing: explicit}, sms: {marketing: explicit}}}
  us: {countries: [US], legal_basis: {email: {marketing: implied}, sms: {marketing: explicit}}}
"""


def write_consent_config(fixtures: Path, folder: Path) -> Path:
    """``fixtures`` (the test config) copied to ``folder``, with topics and regions in the policy;
    promo is about offers, guide about education."""
    shutil.copytree(fixtures, folder)
    with (folder / "policy.yml").open("a", encoding="utf-8") as policy:
        policy.write(TOPICS_AND_REGIONS)
    for program, topic in (("promo", "offers"), ("guide", "education")):
        path = folder / "programs" / f"{program}.yml"
        path.write_text(path.read_text(encoding="utf-8") + f"topic: {topic}\n", encoding="utf-8")
    return folder
