"""Dry runs: a program's whole run at an as-of time, inside one transaction that is rolled back.

A dry run evaluates the segment, enrolls and exits, plans, suppresses and caps exactly as the
program's run would (:func:`lifecycle.engine.pipeline.decide`), reads back the funnel that run
would log and renders what it would send, with inert links; then it rolls everything back. No
provider is called and nothing real changes: no ledger row, enrollment, audience snapshot, funnel
or cap slot survives it, so it can be run at any time, whatever the program DAG's state.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, func, select

from lifecycle import config
from lifecycle.engine import dispatch, funnel, pipeline
from lifecycle.engine.scope import RunScope
from lifecycle.model import schema

RENDER_BOUND = 1_000
"""How many of the messages a dry run would send it renders at most."""
WOULD_SEND = "would_send"
WOULD_FAIL = "would_fail"
_INERT_LINKS = {"unsubscribe": "https://unsubscribe.invalid/dry-run"}

M = schema.messages


@dataclass(frozen=True)
class RenderFailure:
    """A message the run would plan but could not send: its template failed or its CRM row is bad."""

    message_id: int
    contact_id: str | None
    step: str
    error: str


@dataclass
class Rehearsal:
    """What a program's run at ``as_of`` would do.

    ``figures`` is the funnel its ``log_kpis`` would write, ``{(metric, dimension): count}``, with
    what it would send and fail to send per channel as ``would_send`` and ``would_fail``.
    """

    program: str
    as_of: datetime
    figures: dict[tuple[str, str], float]
    rendered: int = 0
    not_rendered: int = 0
    failures: list[RenderFailure] = field(default_factory=list)

    def funnel(self) -> dict[str, Any]:
        """The figures by metric: a count, or counts by dimension (reason, channel)."""
        nested: dict[str, Any] = {}
        for (metric, dimension), value in sorted(self.figures.items()):
            if not dimension:
                nested[metric] = int(value)
            else:
                nested.setdefault(metric, {})[dimension] = int(value)
        return nested

    def summary(self, failures_shown: int = 20) -> dict[str, Any]:
        """A small dict for XCom: the funnel, how many messages were rendered, the first failures."""
        return {
            "program": self.program,
            "as_of": self.as_of.isoformat(),
            "funnel": self.funnel(),
            "rendered": self.rendered,
            "not_rendered": self.not_rendered,
            "render_failures": [vars(f) for f in self.failures[:failures_shown]],
        }

    def table(self) -> str:
        """The funnel and the failures as a readable table, for the task's log."""
        lines = [f"Dry run of {self.program} as of {self.as_of.isoformat()} (nothing was kept)", ""]
        lines += [f"{'metric':<14}{'dimension':<40}{'count':>8}", "-" * 62]
        for (metric, dimension), value in sorted(self.figures.items()):
            lines.append(f"{metric:<14}{dimension:<40}{int(value):>8}")
        lines.append("")
        if self.not_rendered:
            lines.append(f"Rendered the first {self.rendered} messages; {self.not_rendered} more were not rendered.")
        else:
            lines.append(f"Rendered {self.rendered} message(s).")
        if self.failures:
            lines.append(f"{len(self.failures)} would fail:")
            lines += [
                f"  message {f.message_id} contact {f.contact_id} step {f.step}: {f.error}" for f in self.failures
            ]
        return "\n".join(lines)


def rehearse(
    engine: Engine,
    run: RunScope,
    programs: Mapping[str, config.Program],
    *,
    render: bool = True,
    bound: int = RENDER_BOUND,
) -> Rehearsal:
    """The program's run at ``run.as_of`` (every stage but the provider call), rolled back."""
    brand = run.policy.brand.model_dump()
    pending = dispatch.unassigned(run.program.id)
    with engine.connect() as conn:
        outer = conn.begin()
        try:
            pipeline.decide(conn, run, programs)
            figures = {
                key: value for key, value in funnel.run_funnel(conn, run).items() if not key[0].startswith("kpi_")
            }
            would_send: dict[str, int] = dict(
                conn.execute(select(M.c.channel, func.count()).where(pending).group_by(M.c.channel)).tuples().all()
            )
            report = Rehearsal(run.program.id, run.as_of, figures)
            if render:
                rendered = dispatch.load_messages(conn, M.c.message_id.in_(_first(pending, bound)))
                for item in rendered:
                    out = dispatch.outbound_or_problem(item, lambda m: dispatch.render_outbound(m, _INERT_LINKS, brand))
                    if isinstance(out, str):
                        report.failures.append(
                            RenderFailure(item.message_id, item.contact["contact_id"], item.step, out)
                        )
                        would_send[item.channel] -= 1
                        figures[(WOULD_FAIL, item.channel)] = figures.get((WOULD_FAIL, item.channel), 0) + 1
                report.rendered = len(rendered)
                report.not_rendered = sum(would_send.values()) + len(report.failures) - len(rendered)
            figures.update({(WOULD_SEND, channel): n for channel, n in would_send.items() if n})
            return report
        finally:
            outer.rollback()


def _first(pending: Any, bound: int) -> Any:
    """The ids of the first ``bound`` pending messages, in the order sending takes them."""
    return select(M.c.message_id).where(pending).order_by(M.c.priority.desc(), M.c.message_id).limit(bound)
