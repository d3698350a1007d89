"""Failure alerts for every Lifecycle DAG: a clear error in the logs, and a short email to the
DAG owner's address when ``config/policy.yml`` maps the owner to one (``owners``).

An alert never raises: a failing alert must not hide the failure it reports. Addresses are
never logged; error texts are passed through :func:`lifecycle.model.privacy.redact`.
"""

from __future__ import annotations

import html
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from airflow.sdk import BaseNotifier

from lifecycle.channels.retry import RetryPolicy
from lifecycle.channels.sendgrid import Recipient, SendGridHook
from lifecycle.model.privacy import redact

log = logging.getLogger(__name__)
MAX_ERROR_CHARS = 1000
ALERT_RETRY = RetryPolicy(attempts=3, base_delay=0.5, max_delay=5.0)
ALERT_TIMEOUT_SECONDS = 15.0


@dataclass(frozen=True)
class Failure:
    """What failed, read from an Airflow callback context (task- or DAG-level)."""

    dag_id: str
    task_id: str | None
    run_id: str | None
    try_number: int | None
    owners: tuple[str, ...]
    error: str
    log_url: str | None

    @classmethod
    def from_context(cls, context: Mapping[str, Any]) -> Failure:
        """Pick the failure's facts out of ``context``; anything missing stays None."""
        ti = context.get("ti") or context.get("task_instance")
        task = getattr(ti, "task", None) or context.get("task")
        dag = context.get("dag")
        run = context.get("dag_run")
        owner = getattr(task, "owner", None) or getattr(dag, "owner", None) or ""
        error = context.get("exception") or context.get("reason") or "no error recorded"
        return cls(
            dag_id=getattr(dag, "dag_id", None) or getattr(ti, "dag_id", None) or "unknown DAG",
            task_id=getattr(ti, "task_id", None) or getattr(task, "task_id", None),
            run_id=getattr(ti, "run_id", None) or getattr(run, "run_id", None) or context.get("run_id"),
            try_number=getattr(ti, "try_number", None),
            owners=tuple(o.strip() for o in str(owner).split(",") if o.strip()),
            error=redact(f"{type(error).__name__}: {error}" if isinstance(error, BaseException) else str(error)),
            log_url=getattr(ti, "log_url", None),
        )

    @property
    def where(self) -> str:
        """``dag.task`` (or the DAG alone for a DAG-level failure)."""
        return f"{self.dag_id}.{self.task_id}" if self.task_id else self.dag_id

    def text(self) -> str:
        """The alert's plain-text body."""
        lines = [
            f"{self.where} failed.",
            "",
            f"DAG: {self.dag_id}",
            f"Task: {self.task_id or '(whole run)'}",
            f"Run: {self.run_id or 'unknown'}",
            f"Try: {self.try_number if self.try_number is not None else 'unknown'}",
            f"Owner: {', '.join(self.owners) or 'none'}",
            f"Error: {self.error[:MAX_ERROR_CHARS]}",
        ]
        if self.log_url:
            lines.append(f"Log: {self.log_url}")
        return "\n".join(lines) + "\n"


class OwnerAlert(BaseNotifier):
    """``on_failure_callback`` for Lifecycle DAGs: logs the failure as an error and emails the
    owner's address from the policy's ``owners`` map through SendGrid.

    Usage: ``default_args={"on_failure_callback": OwnerAlert()}``.

    :param sendgrid_conn_id: the SendGrid connection the alert is sent through.
    """

    def __init__(self, *, sendgrid_conn_id: str = SendGridHook.default_conn_name) -> None:
        super().__init__()
        self.sendgrid_conn_id = sendgrid_conn_id

    def notify(self, context: Mapping[str, Any]) -> None:
        """Log the failure, then email the owners that have an address; never raises."""
        try:
            failure = Failure.from_context(context)
            log.error(
                "Lifecycle failure: %s (run %s, try %s, owner %s): %s",
                failure.where,
                failure.run_id,
                failure.try_number,
                ", ".join(failure.owners) or "none",
                failure.error[:MAX_ERROR_CHARS],
            )
            self._email(failure)
        except Exception as exc:  # noqa: BLE001 - an alert must never mask the failure it reports
            log.error("Lifecycle failure alert could not be completed: %s: %s", type(exc).__name__, redact(str(exc)))

    def _email(self, failure: Failure) -> None:
        from lifecycle.config import load_policy

        owners = load_policy().owners
        addressed = [owner for owner in failure.owners if owner in owners]
        if not addressed:
            log.info(
                "No address for owner %s in policy.owners: the alert is only logged",
                ", ".join(failure.owners) or "none",
            )
            return
        addresses = list(dict.fromkeys(owners[owner] for owner in addressed))
        hook = SendGridHook(self.sendgrid_conn_id, timeout=ALERT_TIMEOUT_SECONDS, retry_policy=ALERT_RETRY)
        text = failure.text()
        mail = hook.build_mail(
            subject=f"[Lifecycle] {failure.where} failed",
            html=f'<pre style="font-family:monospace">{html.escape(text)}</pre>',
            text=text,
            recipients=[Recipient(address) for address in addresses],
            categories=["failure_alert"],
        )
        message_id = hook.send(mail)
        log.info(
            "Failure alert for %s emailed to the owner(s) %s: message %s",
            failure.where,
            ", ".join(addressed),
            message_id,
        )
