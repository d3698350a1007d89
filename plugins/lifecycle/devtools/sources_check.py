"""``lifecycle sources check``: what the source gives each canonical entity, read-only, before any run.

Per entity: how it is mapped, how many rows each mapping part reads, the columns that are missing
or of the wrong type (and the values outside a mapped vocabulary) in a sample of rows, the programs
and segments that breaks, and a few mapped rows with addresses masked (``a•••@example.com``, ``+1•••••••00``).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import datetime
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.exc import DBAPIError

from lifecycle import config
from lifecycle.config.sources import (
    ENTITIES,
    SOURCES_FILE,
    Sources,
    entities_needed,
    load_sources,
)
from lifecycle.engine.sync import OPTIONAL, SourceError, _Part, entity_parts
from lifecycle.paths import config_dir
from lifecycle.reporting.timeline import mask

SAMPLE_ROWS = 3
CHECKED_ROWS = 500
ADDRESSES = ("email", "phone")
_EMAIL = re.compile(r"[^\s@'\"<>]+@[^\s@'\"<>]+")
"""An email address inside any other text value (a custom attribute, a property) is masked too."""


def _shown(column: str, value: Any) -> str:
    if value is None:
        return "∅"
    if column in ADDRESSES:
        return mask(str(value))
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_shown(k, v)}" for k, v in value.items()) + "}"
    if isinstance(value, datetime):
        return value.isoformat(sep=" ")
    text = _EMAIL.sub(lambda m: mask(m.group(0)), str(value)) if isinstance(value, str) else str(value)
    return text if len(text) <= 40 else text[:39] + "…"


def _readers() -> dict[str, list[str]]:
    """entity -> the programs that read it, each with where."""
    catalog = config.load_segments()
    try:
        policy: config.Policy | None = config.load_policy()
    except config.ConfigError:
        policy = None
    readers: dict[str, list[str]] = {}
    for path in config.program_files():
        try:
            program = config.load_program(path, catalog)
        except config.ConfigError:
            continue
        for entity, why in entities_needed(program, catalog, policy).items():
            readers.setdefault(entity, []).append(f"{program.id} ({why.removeprefix(f'program {program.id} ')})")
    return readers


def _segments_reading() -> dict[str, list[str]]:
    """entity -> the named segments of config/segments.yml that read it."""
    from lifecycle.config.segments import tables_used

    catalog = config.load_segments()
    reading: dict[str, list[str]] = {}
    for name, definition in catalog.segments.items():
        for entity in sorted(tables_used(definition.definition.parsed, catalog.parsed)):
            reading.setdefault(entity, []).append(name)
    return reading


def check_entity(source: Engine, entity: str, parts: list[_Part]) -> tuple[list[str], list[str]]:
    """(report lines, problems) for one mapped entity."""
    lines: list[str] = []
    problems: list[str] = []
    with source.connect() as conn:
        for part in parts:
            origin = f"table {part.mapping.table}" if part.mapping.table else "query"
            custom = f", custom {sorted(part.custom)}" if part.custom else ""
            lines.append(f"  {part.where}: {origin}, {len(part.mapping.columns)} columns mapped{custom}")
            try:
                part.check_source(conn)
                count = conn.execute(part.count()).scalar_one()
                lines.append(f"    rows: {count:,}")
                sample = []
                for i, (row, _wm) in enumerate(part.rows(conn, limit=CHECKED_ROWS)):
                    if i < SAMPLE_ROWS:
                        sample.append(row)
            except SourceError as exc:
                problems += exc.problems
                continue
            except DBAPIError as exc:
                problems.append(f"{part.where}: the source refused the query ({str(exc.orig).splitlines()[0]})")
                continue
            unread = [name for name in part.unreadable if name not in part.readable]
            partly = [
                f"{name} ({n} unreadable of the first {CHECKED_ROWS})" for name, (n, _e) in part.unreadable.items()
            ]
            if partly and not unread:
                lines.append(f"    values that do not read as their type (NULL in the mirror): {', '.join(partly)}")
            for row in sample:
                shown = {k: v for k, v in row.items() if not k.startswith("__")} | row.get("__custom", {})
                lines.append("    sample: " + ", ".join(f"{k}={_shown(k, v)}" for k, v in shown.items()))
    return lines, problems


def check_sources(source: Engine, sources: Sources | None, out: Callable[[str], None] = print) -> int:
    """Report every entity; 1 when anything a program reads is missing or wrong."""
    readers = _readers()
    segments = _segments_reading()
    file = sources.file.name if sources is not None else f"no {SOURCES_FILE}: the canonical tables"
    broken = 0
    for entity in ENTITIES:
        needed_by = readers.get(entity, [])
        lines: list[str] = []
        problems: list[str] = []
        if sources is None:
            parts = entity_parts(entity, None, config_dir() / file)
        elif entity in sources.errors:
            problems = sources.errors[entity]
            parts = []
        elif entity not in sources.entities:
            status = "not mapped" + (f" — breaks {', '.join(needed_by)}" if needed_by else " (no program reads it)")
            out(f"{entity}: {status}")
            if needed_by and segments.get(entity):
                out(f"  segments reading it: {', '.join(segments[entity])}")
            broken += bool(needed_by)
            continue
        else:
            parts = entity_parts(entity, sources, sources.file)
        if parts:
            lines, problems = check_entity(source, entity, parts)
        out(f"{entity}: {'WRONG' if problems else 'ok'}")
        for line in lines:
            out(line)
        for problem in problems:
            out(f"  problem: {problem}")
        if problems:
            if needed_by:
                out(f"  breaks: {', '.join(needed_by)}")
            if segments.get(entity):
                out(f"  segments reading it: {', '.join(segments[entity])}")
            elif entity in OPTIONAL:
                out("  breaks: the account fields templates read")
            broken += 1
    if sources is not None:
        catalog = config.load_segments()
        for path in config.program_files():
            try:
                program = config.load_program(path, catalog)
            except config.ConfigError:
                continue
            from lifecycle.config.sources import custom_problems

            for problem in custom_problems(program, sources, catalog):
                out(f"custom attribute: {problem}")
                broken += 1
    out(f"{'problems found' if broken else 'the source fits the mapping'} ({file})")
    return 1 if broken else 0


def main(source_url: str | None = None) -> int:
    from lifecycle.model.db import crm_url, source_engine

    try:
        sources = load_sources()
    except config.ConfigError as exc:
        print(f"INVALID {exc}")
        return 1
    return check_sources(source_engine(source_url or crm_url()), sources)
