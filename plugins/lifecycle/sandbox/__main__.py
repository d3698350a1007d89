"""Entry point for ``python -m lifecycle.sandbox``."""

from __future__ import annotations

from lifecycle.sandbox.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
