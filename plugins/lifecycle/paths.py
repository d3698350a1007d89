"""Where the project's files are: the one place that knows the project root.

``config/`` and ``include/templates/`` can be moved with ``LIFECYCLE_CONFIG_DIR`` and
``LIFECYCLE_TEMPLATES_DIR`` (tests and deployments that mount their own).
"""

from __future__ import annotations

import os
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
PROJECT_ROOT = PACKAGE_DIR.parents[1]
INCLUDE_DIR = PROJECT_ROOT / "include"


def config_dir() -> Path:
    """The config folder: LIFECYCLE_CONFIG_DIR if set, else the project's ``config/``."""
    return Path(os.environ.get("LIFECYCLE_CONFIG_DIR", PROJECT_ROOT / "config"))


def templates_dir() -> Path:
    """The Jinja2 templates folder: LIFECYCLE_TEMPLATES_DIR if set, else ``include/templates``."""
    return Path(os.environ.get("LIFECYCLE_TEMPLATES_DIR", INCLUDE_DIR / "templates"))
