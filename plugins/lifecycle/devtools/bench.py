"""The scale benchmark: every program for one as-of time at N contacts, set against the floors for
the same work and against a naive per-contact baseline.

``lifecycle bench`` (``make bench``) seeds a synthetic CRM of N contacts (default 1,000,000) in
SQLite and PostgreSQL. In a fresh child process, so that seeding's memory does not count, it runs
all eight programs through the stages the DAG tasks call (:mod:`lifecycle.engine.pipeline`), sending
through :class:`~lifecycle.channels.providers.ProviderTransport` to an in-process provider
sandbox, four batches at a time like the send task's ``max_active_tis_per_dag``, the sandbox
answering after ``--latency-ms`` (median, lognormal) as a real provider would. It reports the
time of each stage summed over programs, messages per second and peak memory, and measures in
the same run:

- the floors for the same work: one scan of the CRM tables and columns the compiled segments and
  suppression rules read (database); the same number of Jinja2 renders of the same templates in a
  tight loop (render); as many plain keep-alive HTTP posts as the transport made, at the same
  concurrency, to a minimal server that validates nothing and answers after the same latency
  (dispatch);
- a naive baseline (:class:`NaiveEngine`): the same decisions made contact by contact on a small
  CRM, while the engine runs on an identical copy; both ledgers must hold the same messages. Its
  time per contact is extrapolated linearly to N;
- with ``--scale-check``, the engine again at N/10, for the cost of ten times the contacts;
- how long Airflow takes to parse every DAG file.

Every figure is set against its target and marked PASS or MISS. Exit status 1 means the naive
baseline and the engine disagreed.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import resource
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
import traceback
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import requests
import urllib3
from sqlalchemy import (
    JSON,
    DateTime,
    Engine,
    and_,
    create_engine,
    func,
    insert,
    literal,
    not_,
    select,
    text,
    true,
    update,
)
from sqlalchemy.engine import make_url
from sqlalchemy.sql import visitors
from sqlalchemy.sql.elements import ColumnClause

from lifecycle import config
from lifecycle.channels.sendgrid import DEFAULT_CONCURRENCY
from lifecycle.config import segments
from lifecycle.devtools import bench_page
from lifecycle.devtools.local import provider_connections
from lifecycle.devtools.seed import seed_crm
from lifecycle.engine import capping, dispatch, journeys, pipeline, quiet_hours, suppression
from lifecycle.engine.scope import RunScope
from lifecycle.messages.context import template_context
from lifecycle.messages.rendering import render
from lifecycle.model import schema
from lifecycle.model.addresses import phone_number
from lifecycle.model.db import get_engine, insert_ignore, migrate, utc_naive
from lifecycle.model.ledger import (
    SLOT_HOLDING,
    CapReason,
    EnrollmentState,
    ExitReason,
    HeldOutReason,
    SkipReason,
    Status,
)
from lifecycle.paths import PROJECT_ROOT
from lifecycle.sandbox import DEFAULT_SENDGRID_KEY, DEFAULT_TWILIO_SID, DEFAULT_TWILIO_TOKEN, SandboxServer
from lifecycle.sandbox.latency import Latency
from lifecycle.sandbox.server import HttpServer
from lifecycle.sandbox.wire import Reply, Request, json_reply

STAGES = ("evaluate", "enroll_and_exit", "plan", "suppress", "cap", "prepare", "send", "log_kpis")
DECISIONS = STAGES[:5]
SEND_CONCURRENCY = 4  # the send task's max_active_tis_per_dag
IN_FLIGHT = SEND_CONCURRENCY * DEFAULT_CONCURRENCY  # requests in flight: batches at once x each sender's pool
DEFAULT_CONTACTS = 1_000_000
DEFAULT_NAIVE_SUBSET = 2_000
QUICK_CONTACTS = 400
QUICK_NAIVE_SUBSET = 150
DEFAULT_AS_OF = "2026-11-16T15:00:00"
DEFAULT_POSTGRES = "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres"
RENDER_SAMPLES = 25
MAIL_SEND, CREATE_MESSAGE = "sendgrid.mail_send", "twilio.create_message"
PUBLIC_BASE_URL = "http://127.0.0.1:9/lifecycle"  # nothing listens: links are rendered, never followed
M = schema.messages
E = schema.enrollments
C = schema.contacts
MIB = 1024 * 1024


# --- results -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class RenderGroup:
    """The messages the engine rendered with one template for one channel, and a few of their ids."""

    template: str
    channel: str
    count: int
    sample_ids: tuple[int, ...]


@dataclass
class EngineRun:
    """One engine run at ``contacts`` contacts: stage times summed over programs, what went out
    (ledger statuses, provider requests, renders) and the engine process's peak memory."""

    contacts: int
    stages: dict[str, float]
    programs: dict[str, float]
    statuses: dict[str, int]
    requests: dict[str, int]
    renders: list[RenderGroup]
    peak_rss: int
    migrate_seconds: float
    seed_seconds: float = 0.0
    rows: dict[str, int] = field(default_factory=dict)
    accepted: dict[str, int] = field(default_factory=dict)
    send_workers: int = 0
    send_peak_rss: int = 0
    send_peak_rss_sum: int = 0

    @property
    def total_peak_rss(self) -> int:
        """The engine process's peak plus every send worker's: the most the run can hold at once."""
        return self.peak_rss + self.send_peak_rss_sum

    @property
    def seconds(self) -> float:
        """Engine time: every stage of every program."""
        return sum(self.stages.values())

    @property
    def decision_seconds(self) -> float:
        """The decision stages (evaluate to cap), the work the naive baseline repeats."""
        return sum(self.stages[s] for s in DECISIONS)

    @property
    def sent(self) -> int:
        """Messages the providers accepted."""
        return self.statuses.get(Status.SENT, 0)

    @property
    def provider_sent(self) -> int:
        """Mail Send and Twilio create requests the sandbox accepted: one message each (every email
        carries its own unsubscribe link, so no two share a Mail Send request)."""
        return self.accepted.get(MAIL_SEND, 0) + self.accepted.get(CREATE_MESSAGE, 0)


@dataclass
class Floors:
    """The least the same work can cost: one scan, tight-loop renders, plain keep-alive posts."""

    database: float
    render: float
    dispatch: float
    columns: dict[str, list[str]]
    rows_scanned: int
    renders: int
    requests: int

    @property
    def total(self) -> float:
        """The sum of the three floors."""
        return self.database + self.render + self.dispatch


@dataclass
class SmsPacing:
    """Twilio sends through the real hook and sender at one configured MPS: when each request went
    out (the limiter's slots, seen where the hook's HTTP client is called)."""

    mps: float
    sends: int
    sent: int
    seconds: float  # from the first request to the last

    @property
    def rate(self) -> float:
        """Messages a second: the requests after the first over the time they took."""
        return (self.sends - 1) / max(self.seconds, 1e-9)


@dataclass
class NaiveBaseline:
    """The naive baseline on a small CRM and the engine's decisions on an identical copy."""

    contacts: int
    seconds: float
    engine_seconds: float
    messages: int
    only_naive: list[list[Any]]
    only_engine: list[list[Any]]

    @property
    def equal(self) -> bool:
        """Whether both ledgers hold exactly the same messages."""
        return not self.only_naive and not self.only_engine

    @property
    def per_contact(self) -> float:
        """Seconds per contact."""
        return self.seconds / max(self.contacts, 1)


@dataclass
class DatabaseResult:
    """Everything measured on one database."""

    name: str
    version: str
    run: EngineRun
    floors: Floors
    naive: NaiveBaseline
    small: EngineRun | None = None
    page: bench_page.PageTimes | None = None


@dataclass(frozen=True)
class Target:
    """One figure against its target."""

    database: str
    name: str
    value: float
    limit: float
    shown: str
    goal: str
    at_least: bool = False
    floor: float | None = None

    @property
    def passed(self) -> bool:
        """PASS when the figure is on the right side of the limit (and, given a floor, not under it)."""
        within = self.value >= self.limit if self.at_least else self.value <= self.limit
        return within and (self.floor is None or self.value >= self.floor)


@dataclass
class Report:
    """A benchmark run: settings, machine, results per database and the targets."""

    contacts: int
    naive_subset: int
    as_of: datetime
    seed: int
    machine: dict[str, str]
    dag_parse: dict[str, float]
    databases: list[DatabaseResult]
    skipped: dict[str, str] = field(default_factory=dict)
    latency_ms: float = 0.0
    sms_pacing: list[SmsPacing] = field(default_factory=list)

    def targets(self) -> list[Target]:
        """Every target with its figure, per database, then the DAG parse time."""
        found = []
        for db in self.databases:
            run, floors = db.run, db.floors
            ratio = run.seconds / max(floors.total, 1e-9)
            speedup = db.naive.per_contact * run.contacts / max(run.decision_seconds, 1e-9)
            found += [
                Target(db.name, "engine time / sum of floors", ratio, 2.0, f"{ratio:.2f}x", "<= 2x"),
                Target(
                    db.name,
                    "naive (extrapolated) / engine decisions",
                    speedup,
                    50.0,
                    f"{speedup:,.0f}x",
                    ">= 50x",
                    at_least=True,
                ),
                Target(
                    db.name,
                    "peak memory, engine + send processes",
                    run.total_peak_rss / MIB,
                    1024.0,
                    f"{run.total_peak_rss / MIB:,.0f} MiB",
                    "< 1 GiB",
                ),
                Target(
                    db.name,
                    "messages sent / provider requests",
                    float(run.sent == run.provider_sent),
                    1.0,
                    f"{run.sent:,}/{run.provider_sent:,}",
                    "equal",
                    at_least=True,
                ),
            ]
            send = run.stages["send"] / max(floors.dispatch, 1e-9)
            found.append(Target(db.name, "send stage / dispatch floor", send, 1.3, f"{send:.2f}x", "<= 1.3x"))
            if self.latency_ms:
                rate = run.sent / max(run.stages["send"], 1e-9)
                found.append(
                    Target(
                        db.name,
                        f"messages/s sent at {self.latency_ms:.0f} ms",
                        rate,
                        500.0,
                        f"{rate:,.0f}/s",
                        ">= 500/s",
                        at_least=True,
                    )
                )
            if db.small is not None:
                growth = run.seconds / max(db.small.seconds, 1e-9)
                found.append(Target(db.name, "time(N) / time(N/10)", growth, 11.0, f"{growth:.2f}x", "<= 11x"))
            if db.page is not None:
                found.append(bench_page.target(db.name, db.page))
        for pacing in self.sms_pacing:
            ratio = pacing.rate / pacing.mps
            found.append(
                Target(
                    "-",
                    f"SMS rate / configured {pacing.mps:g} MPS",
                    ratio,
                    1.0,
                    f"{pacing.rate:.3f}/s",
                    "0.95-1x",
                    floor=0.95,
                )
            )
        seconds = self.dag_parse["seconds"]
        found.append(Target("-", "all DAG files parse", seconds, 0.5, f"{seconds:.2f} s", "< 0.5 s"))
        return found

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready copy with the targets and derived figures."""
        data = asdict(self)
        data["as_of"] = self.as_of.isoformat()
        for db, entry in zip(self.databases, data["databases"], strict=True):
            entry["engine_seconds"] = db.run.seconds
            entry["decision_seconds"] = db.run.decision_seconds
            entry["messages_per_second"] = db.run.sent / max(db.run.seconds, 1e-9)
            entry["floors"]["total"] = db.floors.total
            entry["naive"]["equal"] = db.naive.equal
            entry["naive"]["extrapolated_seconds"] = db.naive.per_contact * db.run.contacts
        for pacing, entry in zip(self.sms_pacing, data["sms_pacing"], strict=True):
            entry["rate"] = pacing.rate
        data["targets"] = [asdict(t) | {"passed": t.passed} for t in self.targets()]
        return data

    def render(self) -> str:
        """The report as text: per database the stages, floors, naive baseline; then the targets."""
        lines = [
            f"Lifecycle benchmark: {self.contacts:,} contacts, all programs as of {self.as_of:%Y-%m-%d %H:%M} UTC, "
            f"seed {self.seed}",
            f"Provider latency: {Latency(self.latency_ms).describe()}; up to {IN_FLIGHT} requests in flight "
            f"({SEND_CONCURRENCY} batches x {DEFAULT_CONCURRENCY} per sender)",
            "Machine: " + ", ".join(f"{k} {v}" for k, v in self.machine.items()),
        ]
        for db in self.databases:
            lines += ["", *_render_database(db)]
        for name, why in self.skipped.items():
            lines += ["", f"== {name}: skipped ({why})"]
        if self.sms_pacing:
            lines += ["", "SMS pacing: Twilio sends through the real hook and sender (16 in flight) to the sandbox"]
            lines += [
                f"        {p.mps:g} MPS configured: {p.sends} sends, {p.sent} sent, first to last request "
                f"{p.seconds:.2f} s: {p.rate:.3f} messages/s ({p.rate / p.mps:.1%} of the MPS)"
                for p in self.sms_pacing
            ]
        lines += [
            "",
            f"DAG files: {self.dag_parse['dags']:.0f} DAGs parsed by Airflow's DagBag in "
            f"{self.dag_parse['seconds']:.2f} s ({self.dag_parse['errors']:.0f} import errors)",
            "",
            f"{'database':<12}{'target':<42}{'value':>14}{'goal':>10}  result",
        ]
        for t in self.targets():
            lines.append(f"{t.database:<12}{t.name:<42}{t.shown:>14}{t.goal:>10}  {'PASS' if t.passed else 'MISS'}")
        return "\n".join(lines)


def _render_database(db: DatabaseResult) -> list[str]:
    run, floors, naive = db.run, db.floors, db.naive
    rows = ", ".join(f"{name} {count:,}" for name, count in run.rows.items())
    lines = [
        f"== {db.name} {db.version}",
        f"seed: {rows} in {run.seed_seconds:.1f} s (not engine time); migrate {run.migrate_seconds:.2f} s",
        "",
        f"{'stage':<18}{'seconds':>10}{'share':>8}",
    ]
    lines += [f"{s:<18}{run.stages[s]:>10.2f}{run.stages[s] / max(run.seconds, 1e-9):>8.1%}" for s in STAGES]
    lines += [
        f"{'engine total':<18}{run.seconds:>10.2f}",
        f"{'  decisions':<18}{run.decision_seconds:>10.2f}  (evaluate .. cap)",
        "per program: " + ", ".join(f"{p} {s:.1f} s" for p, s in run.programs.items()),
        "ledger: " + ", ".join(f"{s} {n:,}" for s, n in sorted(run.statuses.items())),
        f"sent {run.sent:,} messages in {run.seconds:.1f} s: {run.sent / max(run.seconds, 1e-9):,.0f} messages/s; "
        f"provider requests: " + ", ".join(f"{k} {v:,}" for k, v in sorted(run.requests.items())),
        f"send stage: {run.sent:,} messages in {run.stages['send']:.1f} s: "
        f"{run.sent / max(run.stages['send'], 1e-9):,.0f} messages/s; dispatch floor {floors.dispatch:.1f} s "
        f"({floors.requests / max(floors.dispatch, 1e-9):,.0f} requests/s)",
        f"peak memory: engine process {run.peak_rss / MIB:,.0f} MiB; {run.send_workers} send processes "
        f"{run.send_peak_rss / MIB:,.0f} MiB each at most, {run.send_peak_rss_sum / MIB:,.0f} MiB together; "
        f"all at once at most {run.total_peak_rss / MIB:,.0f} MiB",
        "",
        f"floors: database {floors.database:.2f} s (one scan of {floors.rows_scanned:,} rows: "
        + "; ".join(f"{t}({', '.join(c)})" for t, c in floors.columns.items())
        + ")",
        f"        render {floors.render:.2f} s ({floors.renders:,} renders of the same templates, tight loop)",
        f"        dispatch {floors.dispatch:.2f} s ({floors.requests:,} keep-alive posts, {IN_FLIGHT} at once, "
        "to a server that validates nothing, at the same latency)",
        f"        sum {floors.total:.2f} s; engine / floors = {run.seconds / max(floors.total, 1e-9):.2f}x",
        "",
        f"naive baseline: {naive.contacts:,} contacts in {naive.seconds:.2f} s ({naive.per_contact * 1000:.2f} ms per "
        f"contact); the engine's decisions on an identical copy took {naive.engine_seconds:.2f} s",
        f"        extrapolated to {run.contacts:,} contacts, assuming the naive cost is linear in contacts (its "
        f"lookups slow down as tables grow, so this favours the naive): {naive.per_contact * run.contacts:,.0f} s vs "
        f"the engine's {run.decision_seconds:.1f} s of decisions",
        f"        same messages on the subset: {'yes' if naive.equal else 'NO'} ({naive.messages:,} ledger rows)",
    ]
    for label, extra in (("only naive", naive.only_naive), ("only engine", naive.only_engine)):
        lines += [f"        {label}: {row}" for row in extra]
    if db.page is not None:
        lines.append(bench_page.describe(db.page))
    if db.small is not None:
        lines.append(
            f"scale: {db.small.contacts:,} contacts: engine {db.small.seconds:.2f} s; {run.contacts:,}: "
            f"{run.seconds:.2f} s; ratio {run.seconds / max(db.small.seconds, 1e-9):.2f}"
        )
    return lines


# --- processes, environment, databases ----------------------------------------------------------


def usable_databases(kinds: Sequence[str], work: Path, postgres_url: str, report: Any) -> Iterator[Databases]:
    """The benchmark's databases of ``kinds`` that can run here; one that cannot is recorded in
    ``report.skipped``, or stops the benchmark when it was the only one asked for."""
    for kind in kinds:
        databases = Databases(kind, work, postgres_url)
        problem = databases.unavailable()
        if problem and len(kinds) == 1:
            raise SystemExit(problem)
        if problem:
            report.skipped[databases.name] = problem
            continue
        if kind == "postgres":
            report.machine["PostgreSQL"] = databases.version()
        yield databases


def _progress(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def _peak_rss() -> int:
    """This process's peak resident memory in bytes. On Linux that is VmHWM: a spawned child's
    ``ru_maxrss`` also counts the parent's memory at the time of the spawn."""
    status = Path("/proc/self/status")
    if status.exists():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


def _child_entry(pipe, fn: Callable[..., Any], args: tuple) -> None:
    try:
        pipe.send(("ok", fn(*args)))
    except BaseException:  # noqa: BLE001 - everything goes back to the parent, with its traceback
        pipe.send(("error", traceback.format_exc()))
    finally:
        pipe.close()


def in_child(fn: Callable[..., Any], *args: Any) -> Any:
    """``fn(*args)`` in a freshly spawned interpreter; returns its result or raises with its traceback."""
    context = multiprocessing.get_context("spawn")
    receiver, sender = context.Pipe(duplex=False)
    process = context.Process(target=_child_entry, args=(sender, fn, args))
    process.start()
    sender.close()
    try:
        status, payload = receiver.recv()
    except EOFError:
        process.join()
        raise RuntimeError(f"the benchmark child process died (exit code {process.exitcode})") from None
    process.join()
    if status == "error":
        raise RuntimeError(f"the benchmark child process failed:\n{payload}")
    return payload


@contextmanager
def _environment(values: Mapping[str, str]) -> Iterator[None]:
    """Set environment variables (children inherit them), restoring the old values afterwards."""
    saved = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _airflow_env(work: Path) -> dict[str, str]:
    return {
        "AIRFLOW_HOME": str(work / "airflow"),
        "AIRFLOW__CORE__DAGS_FOLDER": str(PROJECT_ROOT / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(PROJECT_ROOT / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__LOGGING__LOGGING_LEVEL": "WARNING",
    }


class Databases:
    """Fresh, empty databases of one kind for the measurements, removed when done."""

    def __init__(self, kind: str, work: Path, postgres_url: str) -> None:
        self.kind = kind
        self.work = work
        self.postgres_url = postgres_url

    @property
    def name(self) -> str:
        """How the report names the database."""
        return "SQLite" if self.kind == "sqlite" else "PostgreSQL"

    def version(self) -> str:
        """The database server or library version."""
        if self.kind == "sqlite":
            return sqlite3.sqlite_version
        engine = create_engine(self.postgres_url)
        try:
            with engine.connect() as conn:
                return str(conn.execute(text("SHOW server_version")).scalar())
        finally:
            engine.dispose()

    def unavailable(self) -> str | None:
        """Why the database cannot be used, or None."""
        if self.kind == "sqlite":
            return None
        try:
            self.version()
        except Exception as exc:  # noqa: BLE001 - any failure means "not reachable"
            where = make_url(self.postgres_url).render_as_string()
            return f"PostgreSQL is not reachable at {where}: {str(exc).splitlines()[0]}"
        return None

    @contextmanager
    def fresh(self, label: str) -> Iterator[str]:
        """The URL of a new empty database, dropped (or deleted) afterwards."""
        name = f"lifecycle_bench_{label}_{uuid.uuid4().hex[:8]}"
        if self.kind == "sqlite":
            path = self.work / f"{name}.db"
            url = f"sqlite:///{path}"
        else:
            url = make_url(self.postgres_url).set(database=name).render_as_string(hide_password=False)
            self._admin(f'CREATE DATABASE "{name}"')
        try:
            yield url
        finally:
            get_engine(url).dispose()
            if self.kind == "sqlite":
                for suffix in ("", "-wal", "-shm"):
                    Path(f"{path}{suffix}").unlink(missing_ok=True)
            else:
                self._admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def _admin(self, statement: str) -> None:
        admin = create_engine(self.postgres_url, isolation_level="AUTOCOMMIT")
        try:
            with admin.connect() as conn:
                conn.execute(text(statement))
        finally:
            admin.dispose()


# --- the engine ---------------------------------------------------------------------------------


def run_id_for(program_id: str, as_of: datetime) -> str:
    """The benchmark's run id of one program (one id per program, as each DAG has its own runs)."""
    return f"bench__{program_id}__{as_of:%Y-%m-%dT%H:%M}"


def scopes_for(as_of: datetime) -> dict[str, tuple[RunScope, dict[str, config.Program]]]:
    """Every program's run scope (and the valid programs) in the order the benchmark runs them."""
    programs, errors = config.load_all_programs()
    if errors:
        raise SystemExit(f"fix the program files first: {'; '.join(str(e) for e in errors.values())}")
    return {pid: pipeline.load_scope(pid, run_id_for(pid, as_of), as_of) for pid in programs}


def _send_batch(engine: Engine, scope: RunScope, batch: int) -> dict[str, int]:
    """What the send task does for one batch: the run's transport, then the pipeline's send."""
    from lifecycle.channels.selection import provider_transport

    transport, links = provider_transport()
    return pipeline.send(engine, scope, batch, transport, links=links)


# The send worker's state, made once per worker process by :func:`_send_worker_start`.
_worker: dict[str, Any] = {}


def _send_worker_start(url: str, as_of: datetime) -> None:
    """A send worker's start: the SDKs and Airflow imported, its own engine and the run scopes, as a
    task process has them before its first message (not counted in the send stage)."""
    import lifecycle.channels.sendgrid  # noqa: F401 - Airflow and the SDKs, loaded before the clock starts as in a task
    import lifecycle.channels.twilio  # noqa: F401
    from lifecycle.channels.selection import provider_transport

    provider_transport()  # reads a connection: Airflow's settings and secrets are set up, as when a task starts
    _worker["engine"] = get_engine(url)
    _worker["scopes"] = {pid: scope for pid, (scope, _programs) in scopes_for(as_of).items()}


def _send_worker_ready(wait: float) -> int:
    """A started worker's process id (after ``wait`` seconds, so that every worker takes one)."""
    time.sleep(wait)
    return os.getpid()


def _send_in_worker(program_id: str, batch: int) -> tuple[int, int, dict[str, int]]:
    """One batch sent in a worker process: (its process id, its peak memory, the counts)."""
    counts = _send_batch(_worker["engine"], _worker["scopes"][program_id], batch)
    return os.getpid(), _peak_rss(), counts


class SendWorkers:
    """The send stage as Airflow runs it: every batch in a worker process of its own interpreter
    (no lock shared with the engine or the other batches), at most :data:`SEND_CONCURRENCY` at once
    like the send task's ``max_active_tis_per_dag``. Each worker makes its own engine from the URL.
    The workers live for the whole run (a task process is started once per batch; that start-up is
    Airflow's, not the engine's, and is left out); each reports its peak memory with every batch."""

    def __init__(self, url: str, as_of: datetime, workers: int = SEND_CONCURRENCY) -> None:
        self.workers = workers
        self.peaks: dict[int, int] = {}
        self.pool = ProcessPoolExecutor(
            workers,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_send_worker_start,
            initargs=(url, as_of),
        )

    def __enter__(self) -> SendWorkers:
        seen: set[int] = set()
        while len(seen) < self.workers:  # every worker started and ready before any clock starts
            seen.update(self.pool.map(_send_worker_ready, [0.2] * self.workers))
        return self

    def __exit__(self, *exc: object) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)

    def send(self, program_id: str, batches: Sequence[int]) -> list[dict[str, int]]:
        """Send ``batches`` of the program, each in a worker; their counts in batch order."""
        done = []
        for pid, peak, counts in self.pool.map(_send_in_worker, [program_id] * len(batches), batches):
            self.peaks[pid] = max(self.peaks.get(pid, 0), peak)
            done.append(counts)
        return done

    @property
    def peak_rss(self) -> int:
        """The highest peak memory of one worker."""
        return max(self.peaks.values(), default=0)

    @property
    def peak_rss_sum(self) -> int:
        """The workers' peaks added up: the most they can hold at once."""
        return sum(self.peaks.values())


def run_stages(
    engine: Engine,
    scope: RunScope,
    programs: Mapping[str, config.Program],
    times: dict[str, float],
    workers: SendWorkers | None = None,
) -> None:
    """One program's stages in DAG order, each timed into ``times``; without send workers, only
    the decisions (evaluate to cap)."""

    def timed(stage: str, fn: Callable[..., Any], *args: Any) -> Any:
        started = time.perf_counter()
        result = fn(*args)
        times[stage] = times.get(stage, 0.0) + time.perf_counter() - started
        return result

    timed("evaluate", pipeline.evaluate, engine, scope)
    timed("enroll_and_exit", pipeline.enroll_and_exit, engine, scope)
    timed("plan", pipeline.plan, engine, scope)
    timed("suppress", pipeline.suppress, engine, scope)
    timed("cap", pipeline.cap, engine, scope, programs)
    if workers is None:
        return
    batches = timed("prepare", pipeline.prepare, engine, scope)
    timed("send", workers.send, scope.program.id, batches)
    timed("log_kpis", pipeline.log_kpis, engine, scope)


def _drain_sandbox(session: requests.Session, sandbox_url: str) -> tuple[Counter, Counter]:
    """The provider requests the sandbox counted, and those it accepted (answered 2xx), per
    endpoint; then clear it so its records do not pile up."""
    stats = session.get(f"{sandbox_url}/_sandbox/stats", timeout=60).json()["endpoints"]
    session.post(f"{sandbox_url}/_sandbox/reset", timeout=60).raise_for_status()
    requests_made = Counter({endpoint: entry["requests"] for endpoint, entry in stats.items()})
    accepted = Counter(
        {
            endpoint: sum(n for status, n in entry["responses"].items() if status.startswith("2"))
            for endpoint, entry in stats.items()
        }
    )
    return requests_made, accepted


def _render_groups(engine: Engine) -> list[RenderGroup]:
    claimed = and_(M.c.attempts > 0, M.c.send_run_id.is_not(None))
    with engine.connect() as conn:
        groups = conn.execute(
            select(M.c.template, M.c.channel, func.count()).where(claimed).group_by(M.c.template, M.c.channel)
        ).all()
        return [
            RenderGroup(
                template,
                channel,
                count,
                tuple(
                    conn.execute(
                        select(M.c.message_id)
                        .where(claimed, M.c.status == Status.SENT, M.c.template == template, M.c.channel == channel)
                        .order_by(M.c.message_id)
                        .limit(RENDER_SAMPLES)
                    ).scalars()
                ),
            )
            for template, channel, count in groups
        ]


def run_engine(url: str, contacts: int, as_of: datetime, sandbox_url: str) -> EngineRun:
    """Every program's stages for ``as_of`` on a seeded CRM, sending to the sandbox (run this in a
    child process: its peak memory is the engine's)."""
    import lifecycle.channels.sendgrid  # noqa: F401 - Airflow and the SDKs, loaded before the clock starts as in a task
    import lifecycle.channels.twilio  # noqa: F401

    engine = get_engine(url)
    started = time.perf_counter()
    migrate(engine)
    migrate_seconds = time.perf_counter() - started
    times = dict.fromkeys(STAGES, 0.0)
    per_program: dict[str, float] = {}
    sent_requests: Counter = Counter()
    accepted_requests: Counter = Counter()
    with SendWorkers(url, as_of) as workers, requests.Session() as session:
        for program_id, (scope, programs) in scopes_for(as_of).items():
            before = sum(times.values())
            run_stages(engine, scope, programs, times, workers)
            per_program[program_id] = sum(times.values()) - before
            made, accepted = _drain_sandbox(session, sandbox_url)
            sent_requests.update(made)
            accepted_requests.update(accepted)
    with engine.connect() as conn:
        statuses: dict[str, int] = dict(conn.execute(select(M.c.status, func.count()).group_by(M.c.status)).all())
    return EngineRun(
        contacts=contacts,
        stages=times,
        programs=per_program,
        statuses=statuses,
        requests=dict(sent_requests),
        renders=_render_groups(engine),
        peak_rss=_peak_rss(),
        migrate_seconds=migrate_seconds,
        accepted=dict(accepted_requests),
        send_workers=workers.workers,
        send_peak_rss=workers.peak_rss,
        send_peak_rss_sum=workers.peak_rss_sum,
    )


# --- SMS pacing ------------------------------------------------------------------------------------

PACING_MPS = (1.0, 3.0, 10.0)
DEFAULT_PACING_SENDS = 50
QUICK_PACING_SENDS = 6


def measure_sms_pacing(rates: Sequence[float], sends: int) -> list[SmsPacing]:
    """``sends`` SMS at each configured MPS through :class:`~lifecycle.channels.twilio.TwilioHook` and
    the SMS channel's sender (its thread pool, its rate limiter) to the sandbox the ``twilio_default``
    connection names; the time of every request is taken where the hook's HTTP client sends it (run
    this in a child process: it wraps that client's class)."""
    from lifecycle.channels.base import OutboundSms
    from lifecycle.channels.providers import ProviderTransport
    from lifecycle.channels.twilio import BaseUrlHttpClient, TwilioHook

    starts: list[float] = []
    request = BaseUrlHttpClient.request

    def timed(self: BaseUrlHttpClient, method: str, url: str, *args: Any, **kwargs: Any) -> Any:
        if method == "POST":
            starts.append(time.monotonic())
        return request(self, method, url, *args, **kwargs)

    BaseUrlHttpClient.request = timed  # type: ignore[method-assign]
    found = []
    try:
        for mps in rates:
            starts.clear()
            batch = [
                OutboundSms(i + 1, f"pacing-{mps:g}-{i}", f"pacing-{i}", f"+1415555{100 + i % 100:04d}", "Pacing check")
                for i in range(sends)
            ]
            results = list(ProviderTransport(TwilioHook(mps=mps)).send("sms", batch))
            sent = sum(1 for result in results if result.status == Status.SENT)
            found.append(SmsPacing(mps, len(starts), sent, max(starts) - min(starts) if starts else 0.0))
    finally:
        BaseUrlHttpClient.request = request  # type: ignore[method-assign]
    return found


# --- floors -----------------------------------------------------------------------------------


def segment_clauses(as_of: datetime) -> list[Any]:
    """Every CRM-reading expression the engine evaluates: each program's entry segment, exit goal
    and rules, step conditions, and its suppression rules for both channels."""
    clauses: list[Any] = []
    for scope, _programs in scopes_for(as_of).values():
        program = scope.program
        clauses.append(segments.audience_query(program.audience.segment.parsed, as_of, scope.catalog))
        journey = scope.segment_context(E.c.contact_id, journey=True)
        nodes = [r.segment for r in program.exit.rules] + [s.when for s in program.steps if s.when is not None]
        if program.exit.goal is not None:
            nodes.append(program.exit.goal)
        clauses += [segments.compile_segment(node.parsed, journey) for node in nodes]
        rules = suppression.contact_reasons(scope)
        rules += [r for channel in ("email", "sms") for r in suppression.channel_reasons(channel, scope)]
        clauses += [rule.predicate(M.c.contact_id) for rule in rules]
    return clauses


def crm_columns(clauses: Sequence[Any]) -> dict[str, list[str]]:
    """The CRM tables and columns ``clauses`` read, found by walking the compiled expressions."""
    found: dict[str, set[str]] = {}
    for clause in clauses:
        for element in visitors.iterate(clause):
            if isinstance(element, ColumnClause) and element.table is not None:
                name = getattr(getattr(element.table, "original", element.table), "name", None)
                if name in schema.CRM_TABLES:
                    found.setdefault(name, set()).add(element.name)
    return {name: sorted(columns) for name, columns in sorted(found.items())}


def _scan(table_name: str, columns: Sequence[str]):
    table = schema.CRM_TABLES[table_name]
    parts: list[Any] = [func.count()]
    for name in columns:
        column = table.c[name]
        parts += [func.count(column)] if isinstance(column.type, JSON) else [func.min(column), func.max(column)]
    return select(*parts).select_from(table)


def database_floor(engine: Engine, columns: Mapping[str, Sequence[str]]) -> tuple[float, int]:
    """One pass over each table reading each column once; returns (seconds, rows scanned)."""
    rows = 0
    started = time.perf_counter()
    with engine.connect() as conn:
        for table_name, names in columns.items():
            rows += conn.execute(_scan(table_name, names)).one()[0]
    return time.perf_counter() - started, rows


def render_floor(engine: Engine, groups: Sequence[RenderGroup], brand: Mapping[str, Any]) -> tuple[float, int]:
    """The engine's renders again, same templates and counts, with contexts of real messages built
    beforehand; returns (seconds, renders)."""
    from lifecycle.channels.providers import links_from_connection

    links = links_from_connection()
    work = []
    with engine.connect() as conn:
        for group in groups:
            if not group.sample_ids:
                continue
            items = dispatch.load_messages(conn, M.c.message_id.in_(group.sample_ids))
            contexts = [
                template_context(item, links(item.message_id, item.contact["contact_id"], item.channel), brand)
                for item in items
            ]
            work.append((group, contexts))
    count = 0
    started = time.perf_counter()
    for group, contexts in work:
        for i in range(group.count):
            render(group.template, group.channel, contexts[i % len(contexts)], reload=False)
        count += group.count
    return time.perf_counter() - started, count


def floor_answer(request: Request) -> Reply:
    """The minimal provider: reads nothing but the path and answers at once, as the APIs would
    to an accepted request (the dispatch floor's server)."""
    if request.path.endswith("/mail/send"):
        return Reply(202, b"", {"X-Message-Id": "floor"})
    return json_reply(201, {"sid": "SM" + "0" * 32, "status": "queued"})


def _floor_requests(floor_url: str, provider_requests: Mapping[str, int]) -> list[tuple[str, bytes, dict[str, str]]]:
    mail = json.dumps(
        {
            "personalizations": [{"to": [{"email": "floor@example.com"}]}],
            "from": {"email": "hello@northwind.example"},
            "subject": "Floor",
            "content": [{"type": "text/plain", "value": "Floor"}],
        }
    ).encode()
    mail_headers = {"Authorization": f"Bearer {DEFAULT_SENDGRID_KEY}", "Content-Type": "application/json"}
    sms = b"To=%2B14155550123&From=%2B15005550006&Body=Floor"
    sms_headers = urllib3.make_headers(basic_auth=f"{DEFAULT_TWILIO_SID}:{DEFAULT_TWILIO_TOKEN}") | {
        "Content-Type": "application/x-www-form-urlencoded"
    }
    sms_url = f"{floor_url}/2010-04-01/Accounts/{DEFAULT_TWILIO_SID}/Messages.json"
    return [(f"{floor_url}/v3/mail/send", mail, mail_headers)] * provider_requests.get(MAIL_SEND, 0) + [
        (sms_url, sms, sms_headers)
    ] * provider_requests.get(CREATE_MESSAGE, 0)


def dispatch_floor(floor_url: str, provider_requests: Mapping[str, int]) -> tuple[float, int]:
    """As many plain posts as the transport made, per endpoint, to the minimal server (which
    answers after the sandbox's latency), ``IN_FLIGHT`` at once over kept-alive connections;
    returns (seconds, requests)."""
    calls = _floor_requests(floor_url, provider_requests)
    pool = urllib3.PoolManager(maxsize=IN_FLIGHT)

    def post(call: tuple[str, bytes, dict[str, str]]) -> int:
        url, body, headers = call
        return pool.request("POST", url, body=body, headers=headers, timeout=30, retries=False).status

    started = time.perf_counter()
    with ThreadPoolExecutor(IN_FLIGHT) as threads:
        refused = sum(1 for status in threads.map(post, calls) if status >= 300)
    seconds = time.perf_counter() - started
    if refused:
        raise RuntimeError(f"the floor server refused {refused} of the dispatch floor's requests")
    return seconds, len(calls)


def measure_floors(url: str, as_of: datetime, floor_url: str, run: EngineRun) -> Floors:
    """The three floors for the work ``run`` did (run this in a child process, like the engine)."""
    engine = get_engine(url)
    columns = crm_columns(segment_clauses(as_of))
    database, rows = database_floor(engine, columns)
    brand = config.load_policy().brand.model_dump()
    rendered, renders = render_floor(engine, run.renders, brand)
    posted, count = dispatch_floor(floor_url, run.requests)
    return Floors(database, rendered, posted, columns, rows, renders, count)


# --- the naive baseline ---------------------------------------------------------------------------


class NaiveEngine:
    """The baseline: the engine's decisions made one contact at a time.

    For each contact, for each program in the engine's order, it asks the database one small
    question at a time — is the contact in the entry segment, may it enroll, which group, has it
    met an exit rule, is a step due and its condition met, does a suppression rule stop this
    message, how many cap slots are taken, what do higher-priority programs want — evaluating the
    engine's own segment and rule expressions for that one contact or message, with the journey
    flow, the cap counts and quiet hours in Python. It writes the same enrollments and ledger rows
    (rendering and sending aside), so the engine's ledger on an identical CRM must match it.
    """

    def __init__(self, engine: Engine, scopes: Mapping[str, RunScope]) -> None:
        self.engine = engine
        self.scopes = scopes
        first = next(iter(scopes.values()))
        self.policy, self.as_of = first.policy, first.as_of

    def run(self) -> int:
        """Decide for every contact; returns how many contacts."""
        with self.engine.connect() as conn:
            contact_ids = conn.execute(select(C.c.contact_id).distinct().order_by(C.c.contact_id)).scalars().all()
        for contact_id in contact_ids:
            with self.engine.begin() as conn:
                for run in self.scopes.values():
                    self._decide(conn, run, contact_id)
        return len(contact_ids)

    def _decide(self, conn, run: RunScope, cid: str) -> None:
        member = self._in_segment(conn, run.program, cid)
        self._exit(conn, run, cid, member)
        if member:
            self._enroll(conn, run, cid)
        self._plan(conn, run, cid)
        self._suppress(conn, run, cid)
        self._cap(conn, run, cid)

    # questions about one contact

    @staticmethod
    def _holds(conn, clause) -> bool:
        return bool(conn.execute(select(clause)).scalar())

    def _in_segment(self, conn, program: config.Program, cid: str) -> bool:
        query = segments.audience_query(program.audience.segment.parsed, self.as_of, self.scopes[program.id].catalog)
        return conn.execute(query.where(C.c.contact_id == cid)).first() is not None

    def _journey(self, run: RunScope, node: segments.Segment, cid: str, enrollment) -> Any:
        ctx = segments.Context(
            as_of=self.as_of,
            contact_id=literal(cid),
            contacts_in_scope=False,
            catalog=run.catalog,
            enrolled_at=literal(enrollment.enrolled_at, DateTime()),
            anchor_at=literal(enrollment.anchor_at, DateTime()),
        )
        return segments.compile_segment(node, ctx)

    @staticmethod
    def _enrollments(conn, program_id: str, cid: str) -> list:
        return conn.execute(select(E).where(E.c.program == program_id, E.c.contact_id == cid).order_by(E.c.entry)).all()

    @staticmethod
    def _messages(conn, program_id: str, cid: str, status: str) -> list:
        return conn.execute(
            select(M)
            .where(M.c.program == program_id, M.c.contact_id == cid, M.c.status == status)
            .order_by(M.c.message_id)
        ).all()

    @staticmethod
    def _base(program: config.Program, enrollment, step: config.Step) -> datetime | None:
        trigger_timed = program.audience.trigger_timed and enrollment.triggered_at is not None
        entered = enrollment.triggered_at if trigger_timed else enrollment.enrolled_at
        return {
            "enrollment": entered,
            "previous": enrollment.last_step_at or entered,
            "anchor": enrollment.anchor_at,
        }[step.relative_to]

    def _due(self, program: config.Program, enrollment, step: config.Step) -> bool:
        base = self._base(program, enrollment, step)
        return (
            base is not None
            and base <= self.as_of - step.delay
            and (enrollment.last_planned_at is None or enrollment.last_planned_at < self.as_of)
        )

    def _late(self, program: config.Program, enrollment, step: config.Step) -> bool:
        base = self._base(program, enrollment, step)
        return base is not None and base < self.as_of - step.delay - program.late_after_for(step)

    # journeys

    def _exit(self, conn, run: RunScope, cid: str, member: bool) -> None:
        program = run.program
        rules: list[tuple[str, segments.Segment]] = (
            [(ExitReason.CONVERTED, program.exit.goal.parsed)] if program.exit.goal else []
        )
        rules += [(r.reason, r.segment.parsed) for r in program.exit.rules]
        for enrollment in self._enrollments(conn, program.id, cid):
            if enrollment.state != EnrollmentState.ACTIVE or enrollment.enrolled_at > self.as_of:
                continue
            reason = next(
                (name for name, node in rules if self._holds(conn, self._journey(run, node, cid, enrollment))), None
            )
            if reason is None and program.exit.on_segment_leave and not member:
                reason = ExitReason.LEFT_SEGMENT
            if reason is not None:
                conn.execute(
                    update(E)
                    .where(E.c.enrollment_id == enrollment.enrollment_id)
                    .values(state=EnrollmentState.EXITED, exit_reason=reason, exited_at=self.as_of)
                )

    def _anchor(self, conn, program: config.Program, cid: str) -> datetime | None:
        anchor = program.audience.anchor
        if anchor is None:
            return None
        table = schema.CRM_TABLES[anchor.table]
        column = table.c[anchor.column]
        chosen, bound = (
            (func.min(column), column >= self.as_of)
            if anchor.pick == "next"
            else (func.max(column), column <= self.as_of)
        )
        return conn.execute(select(chosen).where(table.c.contact_id == cid, bound)).scalar()

    def _trigger(self, conn, program: config.Program, cid: str) -> Any:
        """The latest trigger event's (properties, occurred_at), or (None, None)."""
        if not program.audience.trigger_event:
            return None, None
        types = program.audience.trigger_event
        ev = schema.all_events(
            "trigger_ev", lambda t: (t.c.contact_id == cid, t.c.event_type.in_(types), t.c.occurred_at <= self.as_of)
        )
        row = conn.execute(
            select(ev.c.properties, ev.c.occurred_at).order_by(ev.c.occurred_at.desc(), ev.c.event_id.desc()).limit(1)
        ).first()
        return (row.properties, row.occurred_at) if row is not None else (None, None)

    def _enroll(self, conn, run: RunScope, cid: str) -> None:
        program, contact = run.program, literal(cid)
        if not self._holds(conn, journeys.entry_eligible(program, contact, self.as_of)):
            return
        anchor = self._anchor(conn, program, cid)
        if program.audience.anchor is not None and anchor is None:
            return
        entry = max((e.entry for e in self._enrollments(conn, program.id, cid)), default=0) + 1
        group, variant = conn.execute(
            select(
                journeys.group_expr(program, run.policy, contact),
                journeys.variant_expr(program, contact, literal(entry)),
            )
        ).one()
        trigger, triggered_at = self._trigger(conn, program, cid)
        conn.execute(
            insert(E).values(
                program=program.id,
                contact_id=cid,
                entry=entry,
                state=EnrollmentState.ACTIVE,
                enrolled_at=self.as_of,
                next_step=0,
                anchor_at=anchor,
                group=group,
                variant=variant,
                trigger=trigger,
                triggered_at=triggered_at,
                run_id=run.run_id,
            )
        )

    def _plan(self, conn, run: RunScope, cid: str) -> None:
        program = run.program
        last = len(program.steps) - 1
        for enrollment in self._enrollments(conn, program.id, cid):
            # A skipped step leaves the run's one message free for the next step.
            while enrollment.state == EnrollmentState.ACTIVE and enrollment.next_step <= last:
                if not self._plan_step(conn, run, cid, enrollment):
                    break
                enrollment = conn.execute(select(E).where(E.c.enrollment_id == enrollment.enrollment_id)).one()

    def _plan_step(self, conn, run: RunScope, cid: str, enrollment) -> bool:
        """Plan the enrollment's next step if due; True when it was skipped (the next may follow)."""
        program = run.program
        last = len(program.steps) - 1
        index = enrollment.next_step
        step = program.steps[index]
        if not self._due(program, enrollment, step):
            return False
        reason: str | None
        if self._late(program, enrollment, step):
            status, reason = Status.SKIPPED, SkipReason.STEP_LATE
        elif step.holdout and enrollment.group in ("control", "holdout"):
            status = Status.HELD_OUT
            reason = HeldOutReason.GLOBAL_CONTROL if enrollment.group == "control" else HeldOutReason.PROGRAM_HOLDOUT
        elif step.when is not None and self._holds(conn, not_(self._journey(run, step.when.parsed, cid, enrollment))):
            status, reason = Status.SKIPPED, SkipReason.STEP_CONDITION_NOT_MET
        else:
            status, reason = Status.PLANNED, None
        conn.execute(
            insert_ignore(conn, M).values(
                idempotency_key=f"{program.id}:{cid}:{enrollment.entry}:{step.id}",
                program=program.id,
                priority=program.priority,
                enrollment_id=enrollment.enrollment_id,
                entry=enrollment.entry,
                step=step.id,
                step_index=index,
                contact_id=cid,
                channel=step.channel,
                fallback_channel=step.fallback,
                planned_channel=step.channel,
                template=step.template,
                variant=enrollment.variant,
                group=enrollment.group,
                status=status,
                reason=reason,
                due_at=self.as_of,
                run_id=run.run_id,
                planned_at=self.as_of,
            )
        )
        values: dict[str, Any] = {"next_step": index + 1, "last_step_at": self.as_of}
        if status != Status.SKIPPED:
            values["last_planned_at"] = self.as_of
        if index == last:
            values |= {
                "state": EnrollmentState.COMPLETED,
                "exit_reason": ExitReason.COMPLETED,
                "exited_at": self.as_of,
            }
        conn.execute(update(E).where(E.c.enrollment_id == enrollment.enrollment_id).values(**values))
        return status == Status.SKIPPED

    # suppression and caps

    def _suppress(self, conn, run: RunScope, cid: str) -> None:
        program = run.program
        conn.execute(
            update(M)
            .where(
                M.c.program == program.id,
                M.c.contact_id == cid,
                M.c.status == Status.DEFERRED,
                M.c.send_after <= self.as_of,
            )
            .values(status=Status.PLANNED, reason=None)
        )
        contact = literal(cid)
        for message in self._messages(conn, program.id, cid, Status.PLANNED):
            channel, fallback = message.channel, message.fallback_channel
            if fallback and self._holds(
                conn,
                and_(
                    suppression.channel_blocked(channel, run, contact),
                    not_(suppression.channel_blocked(fallback, run, contact)),
                ),
            ):
                channel = fallback
                conn.execute(update(M).where(M.c.message_id == message.message_id).values(channel=channel))
            rules = [*suppression.contact_reasons(run), *suppression.channel_reasons(channel, run)]
            this = M.c.message_id == message.message_id
            reason = next(
                (r.name for r in rules if conn.execute(select(r.predicate(M.c.contact_id)).where(this)).scalar()), None
            )
            if reason is not None:
                conn.execute(update(M).where(this).values(status=Status.SUPPRESSED, reason=reason))

    def _demand(self, conn, run: RunScope, cid: str) -> Counter:
        wanted: Counter = Counter()
        contact = literal(cid)
        for other_run in self.scopes.values():
            other = other_run.program
            if other.priority <= run.program.priority or other.id == run.program.id:
                continue
            if other.is_service != run.program.is_service:
                continue
            channels = [m.channel for m in self._messages(conn, other.id, cid, Status.PLANNED)]
            for enrollment in self._enrollments(conn, other.id, cid):
                if enrollment.state != EnrollmentState.ACTIVE or enrollment.next_step >= len(other.steps):
                    continue
                step = other.steps[enrollment.next_step]
                if step.holdout and enrollment.group != "treatment":
                    continue
                if not self._due(other, enrollment, step):
                    continue
                wants = not_(suppression.channel_blocked(step.channel, other_run, contact))
                if step.when is not None:
                    wants = and_(wants, self._journey(other_run, step.when.parsed, cid, enrollment))
                if self._holds(conn, wants):
                    channels.append(step.channel)
            first = other.steps[0]
            if (
                first.relative_to != "anchor"
                and not first.delay
                and first.when is None
                and self._in_segment(conn, other, cid)
                and self._holds(
                    conn,
                    and_(
                        journeys.entry_eligible(other, contact, self.as_of),
                        journeys.group_expr(other, run.policy, contact) == "treatment" if first.holdout else true(),
                        not_(suppression.channel_blocked(first.channel, other_run, contact)),
                    ),
                )
            ):
                channels.append(first.channel)
            for channel in channels:
                wanted[channel] += 1
                wanted["all"] += 1
        return wanted

    def _cap(self, conn, run: RunScope, cid: str) -> None:
        program, caps = run.program, run.policy.caps_for(run.program)
        pending = self._messages(conn, program.id, cid, Status.PLANNED)
        if pending:
            service = [p.program.id for p in self.scopes.values() if p.program.is_service]
            same_caps = M.c.program.in_(service) if program.is_service else M.c.program.not_in(service)
            held = conn.execute(
                select(M.c.message_id, M.c.channel, M.c.due_at).where(
                    M.c.contact_id == cid, M.c.status.in_(SLOT_HOLDING), M.c.due_at <= self.as_of, same_caps
                )
            ).all()
            wanted = self._demand(conn, run, cid)
            for message in pending:
                reason = None
                for scope in (message.channel, "all"):
                    if scope not in caps:
                        continue
                    used = sum(
                        1
                        for h in held
                        if h.message_id != message.message_id
                        and scope in ("all", h.channel)
                        and h.due_at > self.as_of - caps[scope].per
                    )
                    if used + wanted[scope] >= caps[scope].max:
                        reason = capping.cap_reason(scope, caps[scope], service=program.is_service)
                        break
                conn.execute(
                    update(M)
                    .where(M.c.message_id == message.message_id)
                    .values(status=Status.CAPPED if reason else Status.READY, reason=reason)
                )
        for channel, window in run.policy.quiet_hours.items():
            ready = conn.execute(
                select(M.c.message_id, C.c.timezone, phone_number(C), C.c.country)
                .join(C, C.c.contact_id == M.c.contact_id, isouter=True)
                .where(
                    M.c.program == program.id,
                    M.c.contact_id == cid,
                    M.c.status == Status.READY,
                    M.c.channel == channel,
                    M.c.send_run_id.is_(None),
                )
            ).all()
            for message_id, timezone, phone, country in ready:
                until = quiet_hours.quiet_until(self.as_of, timezone, window, phone=phone, country=country)
                if until is not None:
                    conn.execute(
                        update(M)
                        .where(M.c.message_id == message_id)
                        .values(status=Status.DEFERRED, send_after=until, reason=CapReason.QUIET_HOURS)
                    )


def _ledger(engine: Engine) -> Counter:
    with engine.connect() as conn:
        return Counter(
            tuple(row)
            for row in conn.execute(
                select(M.c.contact_id, M.c.program, M.c.step, M.c.channel, M.c.status, M.c.reason, M.c.variant)
            )
        )


def compare_naive(databases: Databases, contacts: int, as_of: datetime, seed: int) -> NaiveBaseline:
    """The naive baseline on a seeded CRM of ``contacts`` and the engine's decisions on an identical
    copy; the two ledgers are compared message by message."""
    scopes = scopes_for(as_of)
    with databases.fresh("naive") as naive_url, databases.fresh("twin") as twin_url:
        for url in (naive_url, twin_url):
            seed_crm(url, contacts, as_of, seed=seed)
            migrate(get_engine(url))
        twin = get_engine(twin_url)
        times: dict[str, float] = {}
        for scope, programs in scopes.values():
            run_stages(twin, scope, programs, times)
        naive = get_engine(naive_url)
        started = time.perf_counter()
        NaiveEngine(naive, {pid: scope for pid, (scope, _programs) in scopes.items()}).run()
        seconds = time.perf_counter() - started
        by_naive, by_engine = _ledger(naive), _ledger(twin)
    return NaiveBaseline(
        contacts=contacts,
        seconds=seconds,
        engine_seconds=sum(times.values()),
        messages=sum(by_engine.values()),
        only_naive=[list(row) for row in sorted((by_naive - by_engine).elements(), key=str)[:20]],
        only_engine=[list(row) for row in sorted((by_engine - by_naive).elements(), key=str)[:20]],
    )


# --- DAG parsing, machine --------------------------------------------------------------------------

_PARSE = """
import json, time
from airflow.dag_processing.dagbag import DagBag
started = time.perf_counter()
bag = DagBag(dag_folder={folder!r})
seconds = time.perf_counter() - started
print(json.dumps({{"seconds": seconds, "dags": len(bag.dags), "errors": len(bag.import_errors)}}))
"""


def dag_parse_time() -> dict[str, float]:
    """How long Airflow's DagBag takes to parse every file in dags/ (Airflow itself imported
    first, as in the DAG processor), in a separate interpreter."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(PROJECT_ROOT / "plugins"), env.get("PYTHONPATH")]))
    script = _PARSE.format(folder=str(PROJECT_ROOT / "dags"))
    done = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=600, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"parsing the DAG folder failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def machine() -> dict[str, str]:
    """What the figures were measured on."""
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1024**3
    return {
        "CPUs": str(os.cpu_count()),
        "memory": f"{memory:.1f} GiB",
        "system": platform.platform(terse=True),
        "Python": platform.python_version(),
        "SQLite": sqlite3.sqlite_version,
    }


# --- orchestration ----------------------------------------------------------------------------------


@contextmanager
def seeded_run(
    databases: Databases, label: str, contacts: int, args: argparse.Namespace, sandbox_url: str
) -> Iterator[tuple[str, EngineRun]]:
    """Seed a fresh database and run the engine on it in a child process; yields (url, run) while
    the database exists."""
    with databases.fresh(label) as url:
        _progress(f"{databases.name}: seeding {contacts:,} contacts")
        report = seed_crm(url, contacts, args.as_of, seed=args.seed)
        _progress(f"{databases.name}: seeded in {report.elapsed_seconds:.1f} s; running the engine")
        run = in_child(run_engine, url, contacts, args.as_of, sandbox_url)
        run.seed_seconds, run.rows = report.elapsed_seconds, dict(report.rows)
        _progress(f"{databases.name}: engine {run.seconds:.1f} s, {run.sent:,} sent")
        yield url, run


def bench_database(databases: Databases, args: argparse.Namespace, sandbox_url: str, floor_url: str) -> DatabaseResult:
    """Engine, floors, naive baseline and (optionally) the N/10 run on one kind of database."""
    with seeded_run(databases, "main", args.contacts, args, sandbox_url) as (url, run):
        _progress(f"{databases.name}: measuring the floors")
        floors = in_child(measure_floors, url, args.as_of, floor_url, run)
        page = in_child(bench_page.measure_page, url)
    small = None
    if args.scale_check:
        with seeded_run(databases, "tenth", max(args.contacts // 10, 1), args, sandbox_url) as (_url, small):
            pass
    _progress(f"{databases.name}: naive baseline on {args.naive_subset:,} contacts")
    naive = compare_naive(databases, args.naive_subset, args.as_of, args.seed)
    return DatabaseResult(databases.name, databases.version(), run, floors, naive, small, page)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lifecycle bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--contacts", type=int, help=f"contacts to seed (default {DEFAULT_CONTACTS:,})")
    parser.add_argument("--db", choices=("sqlite", "postgres", "both"), default="both")
    parser.add_argument(
        "--source",
        choices=("canonical", "warehouse"),
        default="canonical",
        help="canonical: the CRM in the state database (default); warehouse: the mapped path, a warehouse-shaped "
        "DuckDB source copied into the state (decisions and data movement, no sending)",
    )
    parser.add_argument(
        "--postgres-url",
        default=os.environ.get("LIFECYCLE_BENCH_PG_URL", DEFAULT_POSTGRES),
        help="PostgreSQL server to create (and drop) fresh benchmark databases on",
    )
    parser.add_argument(
        "--naive-subset", type=int, help=f"contacts for the naive baseline (default {DEFAULT_NAIVE_SUBSET:,})"
    )
    parser.add_argument("--scale-check", action="store_true", help="also run the engine at contacts/10")
    parser.add_argument("--as-of", default=DEFAULT_AS_OF, help=f"as-of time, UTC (default {DEFAULT_AS_OF})")
    parser.add_argument("--seed", type=int, default=7, help="random seed of the synthetic CRM")
    parser.add_argument(
        "--latency-ms",
        type=float,
        default=0.0,
        help="median provider round trip in milliseconds, lognormal (default: none, loopback speed)",
    )
    parser.add_argument(
        "--sms-pacing",
        type=int,
        help=f"Twilio sends per configured MPS ({', '.join(f'{r:g}' for r in PACING_MPS)}) for the SMS pacing "
        f"figure (default {DEFAULT_PACING_SENDS}, {QUICK_PACING_SENDS} with --quick; 0: not measured)",
    )
    parser.add_argument(
        "--quick", action="store_true", help=f"smoke run: {QUICK_CONTACTS} contacts, naive on {QUICK_NAIVE_SUBSET}"
    )
    parser.add_argument("--work-dir", help="folder for SQLite files and the Airflow home (default: a temp dir)")
    parser.add_argument("--json", help="also write the report as JSON to this file")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """``lifecycle bench``: run the benchmark, print the report; 1 if naive and engine disagreed.
    ``lifecycle bench --next-best-action [--contacts N --days D --seed S]`` prints the long
    next-best-action comparison instead (:mod:`lifecycle.devtools.nba_simulation`: fixed priority
    against next-best-action on one CRM, 20,000 contacts over 28 days unless told)."""
    argv = list(argv) if argv is not None else sys.argv[1:]
    if "--next-best-action" in argv:
        from lifecycle.devtools import nba_simulation

        rest = [a for a in argv if a != "--next-best-action"]
        defaults = {"--contacts": "20000", "--days": "28", "--cohort": "1200"}
        for flag, value in defaults.items():
            if not any(a == flag or a.startswith(flag + "=") for a in rest):
                rest += [flag, value]
        return nba_simulation.main(rest)
    args = _parser().parse_args(argv)
    args.contacts = args.contacts or (QUICK_CONTACTS if args.quick else DEFAULT_CONTACTS)
    args.naive_subset = args.naive_subset or (QUICK_NAIVE_SUBSET if args.quick else DEFAULT_NAIVE_SUBSET)
    if args.sms_pacing is None:
        args.sms_pacing = QUICK_PACING_SENDS if args.quick else DEFAULT_PACING_SENDS
    args.as_of = utc_naive(datetime.fromisoformat(args.as_of))
    kinds = ("sqlite", "postgres") if args.db == "both" else (args.db,)
    work = Path(args.work_dir or tempfile.mkdtemp(prefix="lifecycle-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    if args.source == "warehouse":
        return _bench_source(args, kinds, work)
    report = Report(
        args.contacts, args.naive_subset, args.as_of, args.seed, machine(), {}, [], latency_ms=args.latency_ms
    )
    latency = Latency(args.latency_ms)
    floor = HttpServer(floor_answer, latency=latency, threads=2).start()
    try:
        with SandboxServer(latency=latency) as sandbox:
            env = _airflow_env(work) | provider_connections(sandbox, PUBLIC_BASE_URL, uuid.uuid4().hex)
            with _environment(env):
                for databases in usable_databases(kinds, work, args.postgres_url, report):
                    floor_url = f"http://{floor.host}:{floor.port}"
                    report.databases.append(bench_database(databases, args, sandbox.url, floor_url))
                if args.sms_pacing:
                    _progress(f"SMS pacing: {args.sms_pacing} Twilio sends at each of {PACING_MPS} MPS")
                    report.sms_pacing = in_child(measure_sms_pacing, PACING_MPS, args.sms_pacing)
                _progress("parsing the DAG folder")
                report.dag_parse = dag_parse_time()
    finally:
        floor.stop()
        if not args.work_dir:
            shutil.rmtree(work, ignore_errors=True)
    print(report.render())
    if args.json:
        Path(args.json).write_text(json.dumps(report.to_dict(), indent=2, default=str))
    return 0 if all(db.naive.equal for db in report.databases) else 1


def _bench_source(args: argparse.Namespace, kinds: Sequence[str], work: Path) -> int:
    """``--source warehouse``: the mapped path (:mod:`lifecycle.devtools.bench_source`)."""
    from lifecycle.devtools import bench_source

    try:
        with _environment(_airflow_env(work)):
            report = bench_source.run(args, kinds, work)
    finally:
        if not args.work_dir:
            shutil.rmtree(work, ignore_errors=True)
    print(report.render())
    if args.json:
        Path(args.json).write_text(json.dumps(report.to_dict(), indent=2, default=str))
    return 0 if all(bench_source.same_ledger(db) for db in report.databases) else 1


if __name__ == "__main__":
    raise SystemExit(main())
