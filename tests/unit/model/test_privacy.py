"""Texts that reach logs, the ledger or alerts carry no address."""

from __future__ import annotations

from lifecycle.model.privacy import redact


def test_redact_blanks_addresses_and_numbers_but_keeps_error_codes():
    text = "The 'To' number +1 (415) 555-0100 is not valid; bob.smith@example.com rejected (code 21211)"
    redacted = redact(text)
    assert "555" not in redacted and "bob.smith" not in redacted
    assert "21211" in redacted and "<number>" in redacted and "<email>" in redacted
