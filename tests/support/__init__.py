"""Helpers shared by the tests: hand-made CRMs, program runs, DAG runs, the sandbox's clients,
the outbox invariants, headless Chromium and the end-to-end cluster. No tests live here."""
