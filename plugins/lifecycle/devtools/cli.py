"""The ``lifecycle`` command: validate, sources check, migrate, consents import, seed, preview, sandbox,
demo, simulate, bench."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from datetime import UTC, datetime


def _validate(_args: argparse.Namespace) -> int:
    from lifecycle import config, paths

    problems = 0
    policy = None
    try:
        policy = config.load_policy()
        print(f"ok      {paths.config_dir() / 'policy.yml'}")
    except config.ConfigError as exc:
        problems += 1
        print(f"INVALID {exc}")
    try:
        config.load_segments()
        print(f"ok      {paths.config_dir() / 'segments.yml'}")
    except config.ConfigError as exc:
        problems += 1
        print(f"INVALID {exc}")
    problems += _validate_sources()
    programs, errors = config.load_all_programs()
    for pid, program in programs.items():
        print(f"ok      {pid}: {program.name} ({len(program.steps)} steps, priority {program.priority})")
    for pid, error in errors.items():
        problems += 1
        print(f"INVALID {pid}:")
        for problem in error.problems:
            print(f"          {problem}")
    if policy is not None:
        # A value for a program id no file has would silently leave that program worth 1.
        files = sorted({*programs, *errors})
        unknown = sorted(set(policy.decision.value) - set(files))
        if unknown:
            problems += 1
            print(
                f"INVALID {paths.config_dir() / 'policy.yml'}: decision.value names no program: {unknown} — fix: "
                f"use the program ids of config/programs/ ({files})"
            )
    print(f"{len(programs)} programs valid, {problems} file(s) with problems")
    return 1 if problems else 0


def _validate_sources() -> int:
    """Report config/sources.yml: each entity mapped, left out (the programs reading it say so) or wrong."""
    from lifecycle import config
    from lifecycle.config.sources import ENTITIES, load_sources

    try:
        sources = load_sources()
    except config.ConfigError as exc:
        print(f"INVALID {exc}")
        return 1
    if sources is None:
        print("ok      no sources.yml: the source holds the canonical tables")
        return 0
    for entity in ENTITIES:
        if entity in sources.errors:
            print(f"INVALID {sources.file}: {entity}:")
            for problem in sources.errors[entity]:
                print(f"          {problem}")
        elif entity in sources.entities:
            print(f"ok      {sources.file.name}: {entity} ({len(sources.entities[entity])} mapping(s))")
        else:
            print(f"        {sources.file.name}: {entity} not mapped (programs that read it are listed below)")
    return 1 if sources.errors else 0


def _sources_check(args: argparse.Namespace) -> int:
    from lifecycle.devtools.sources_check import main as check_main

    return check_main(args.url)


def _migrate(args: argparse.Namespace) -> int:
    from lifecycle.model.db import get_engine, migrate, state_url

    migrate(get_engine(args.url or state_url()))
    print("engine tables are up to date")
    return 0


def _consents_import(args: argparse.Namespace) -> int:
    """Import a CSV of paper forms: every row checked first; nothing imported while any is wrong."""
    from lifecycle.engine import capture
    from lifecycle.model.db import get_engine, state_url, utc_naive

    try:
        with open(args.file, encoding="utf-8-sig", newline="") as handle:
            rows, problems = capture.read_import(handle, utc_naive(datetime.now(UTC)))
    except (OSError, UnicodeDecodeError) as exc:
        print(f"INVALID {args.file}: cannot be read as UTF-8 CSV ({exc})")
        return 1
    for problem in problems:
        print(f"INVALID {args.file}: {problem}")
    if problems:
        print(f"nothing imported: {len(problems)} problem(s); fix them and run again")
        return 1
    with get_engine(args.url or state_url()).begin() as conn:
        imported, skipped = capture.import_rows(conn, rows)
    print(f"{imported} consent(s) imported, {skipped} already imported before")
    return 0


def _as_of(text: str) -> datetime:
    value = datetime.fromisoformat(text)
    return value.astimezone(UTC).replace(tzinfo=None) if value.tzinfo else value


def _seed(args: argparse.Namespace) -> int:
    from lifecycle.devtools.seed import seed_crm
    from lifecycle.devtools.warehouse import seed_warehouse

    write = seed_warehouse if args.shape == "warehouse" else seed_crm
    report = write(args.url, args.contacts, _as_of(args.as_of), seed=args.seed)
    for key, value in report.to_dict().items():
        print(f"{key}: {value}")
    return 0


def _score(args: argparse.Namespace) -> int:
    from lifecycle.engine import scoring
    from lifecycle.model.db import get_engine, migrate, state_url

    engine = get_engine(args.url or state_url())
    migrate(engine)
    with engine.begin() as conn:
        reports = scoring.run_scoring(conn, _as_of(args.as_of), names=args.score or scoring.SCORE_NAMES, seed=args.seed)
    print(scoring.report_table(reports))
    return 0 if all(r.published for r in reports) else 1


def _preview(args: argparse.Namespace) -> int:
    from lifecycle.messages.preview import preview

    print(preview(args.url, args.program, args.contact, step=args.step, as_of=_as_of(args.as_of)))
    return 0


def _sandbox(args: argparse.Namespace) -> int:
    from lifecycle.sandbox import main as sandbox_main

    return sandbox_main(args.rest) or 0


def _demo(args: argparse.Namespace) -> int:
    from lifecycle.devtools.demo import run_demo

    return run_demo(
        contacts=args.contacts,
        days=args.days,
        as_of=_as_of(args.as_of),
        sim_days=args.sim_days,
        warehouse=args.warehouse,
    )


def _simulate(args: argparse.Namespace) -> int:
    from lifecycle.devtools.simulation import main as simulate_main

    return simulate_main(args.rest) or 0


def _bench(args: argparse.Namespace) -> int:
    from lifecycle.devtools.bench import main as bench_main

    return bench_main(args.rest) or 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lifecycle", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    sub.add_parser("validate", help="check config/programs/*.yml, policy.yml and segments.yml").set_defaults(
        func=_validate
    )
    p = sub.add_parser("sources", help="the source behind crm_default against config/sources.yml")
    checks = p.add_subparsers(dest="sources_command", required=True)
    p = checks.add_parser(
        "check",
        help="per entity: the mapping, row counts, missing or mistyped columns, the programs they break, "
        "a masked sample",
    )
    p.add_argument("--url", help="SQLAlchemy URL of the source (default: LIFECYCLE_CRM_URL, else crm_default)")
    p.set_defaults(func=_sources_check)

    p = sub.add_parser("migrate", help="create or upgrade the lifecycle_* engine tables")
    p.add_argument(
        "--url",
        help="SQLAlchemy URL of the state database (default: LIFECYCLE_STATE_URL, lifecycle_state, else crm_default)",
    )
    p.set_defaults(func=_migrate)

    p = sub.add_parser("consents", help="consent captured outside the app")
    consents = p.add_subparsers(dest="consents_command", required=True)
    p = consents.add_parser(
        "import",
        help="import paper forms from a CSV (email, form_id, form_version, consent_text, captured_at, source=paper; "
        "optional purpose); a re-run imports nothing twice",
    )
    p.add_argument("file")
    p.add_argument("--url", help="state database URL (default: LIFECYCLE_STATE_URL, lifecycle_state, else crm_default)")
    p.set_defaults(func=_consents_import)

    p = sub.add_parser("seed", help="write a synthetic CRM")
    p.add_argument("--url", required=True, help="SQLAlchemy URL of the CRM database to (re)create")
    p.add_argument("--contacts", type=int, default=10_000)
    p.add_argument("--as-of", default=datetime.now(UTC).date().isoformat())
    p.add_argument("--seed", type=int, default=7)
    p.add_argument(
        "--shape",
        choices=("canonical", "warehouse"),
        default="canonical",
        help="canonical tables, or a Segment-style warehouse (users, tracks, orders, billing...; e.g. "
        "--url duckdb:///crm.duckdb) mapped by config/examples/warehouse/sources.yml",
    )
    p.set_defaults(func=_seed)

    from lifecycle.model.schema import SCORE_NAMES

    p = sub.add_parser("score", help="train, validate and publish the predictive scores (as the lifecycle_scoring DAG)")
    p.add_argument("--url", help="state database URL (default: LIFECYCLE_STATE_URL, lifecycle_state, else crm_default)")
    p.add_argument("--as-of", default=datetime.now(UTC).replace(microsecond=0).isoformat())
    p.add_argument("--score", action="append", choices=SCORE_NAMES, help="default: every score")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_score)

    p = sub.add_parser("preview", help="render a program's step for one contact")
    p.add_argument("program")
    p.add_argument("contact")
    p.add_argument("--step", help="step id (default: the first)")
    p.add_argument("--url", help="state database URL (default: LIFECYCLE_STATE_URL, lifecycle_state, else crm_default)")
    p.add_argument("--as-of", default=datetime.now(UTC).isoformat())
    p.set_defaults(func=_preview)

    p = sub.add_parser("demo", help="seed a CRM and run every program DAG through Airflow on SQLite")
    p.add_argument("--contacts", type=int, default=20_000)
    p.add_argument("--days", type=int, default=2)
    p.add_argument("--sim-days", type=int, default=6, help="days simulated before the Airflow runs")
    p.add_argument("--as-of", default="2026-11-16T15:00:00")
    p.add_argument(
        "--warehouse",
        action="store_true",
        help="read the CRM from a warehouse-shaped DuckDB file through config/examples/warehouse/sources.yml "
        "(the engine's state in its own SQLite file)",
    )
    p.set_defaults(func=_demo)

    for name, text in (
        ("sandbox", "run the local SendGrid/Twilio provider sandbox (see: lifecycle sandbox --help)"),
        ("simulate", "play N days with planted uplift and measure it (see: lifecycle simulate --help)"),
        ("bench", "the scale benchmark (see: lifecycle bench --help)"),
    ):
        sub.add_parser(name, help=text, add_help=False)
    return parser


PASS_THROUGH = {"sandbox": _sandbox, "simulate": _simulate, "bench": _bench}


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in PASS_THROUGH:
        return PASS_THROUGH[argv[0]](argparse.Namespace(rest=argv[1:]))
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
