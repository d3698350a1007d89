"""The KPI digest's Airflow side: build the digest for the run's as-of time and send it once to
every stakeholder in the policy, through the SendGrid hook.

One Mail Send request carries the digest, one personalization per stakeholder, with its charts
as inline attachments (``Content-ID``) the HTML shows through ``cid:`` sources.
"""

from __future__ import annotations

import base64
import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from lifecycle.airflow.base import LifecycleOperator, TaskRun
from lifecycle.channels.sendgrid import Recipient, SendGridHook

if TYPE_CHECKING:
    from sendgrid.helpers.mail import Mail

    from lifecycle.config import Stakeholder
    from lifecycle.reporting.digest import Digest

log = logging.getLogger(__name__)
CATEGORY = "kpi_digest"


def digest_mail(hook: SendGridHook, digest: Digest, stakeholders: Sequence[Stakeholder]) -> Mail:
    """The Mail Send request for ``digest``: text and HTML parts, one personalization per
    stakeholder, each chart attached inline under its content id."""
    from sendgrid.helpers.mail import Attachment, ContentId, Disposition, FileContent, FileName, FileType

    mail = hook.build_mail(
        subject=digest.subject,
        html=digest.html,
        text=digest.text,
        recipients=[Recipient(s.email, s.name) for s in stakeholders],
        categories=[CATEGORY],
    )
    for image in digest.images:
        mail.add_attachment(
            Attachment(
                FileContent(base64.b64encode(image.data).decode("ascii")),
                FileName(image.filename),
                FileType("image/png"),
                Disposition("inline"),
                ContentId(image.content_id),
            )
        )
    return mail


class SendKpiDigestOperator(LifecycleOperator[dict[str, Any]]):
    """Measure every program as of the run's data interval end and email the digest.

    A send whose outcome is unknown (no answer from SendGrid) or that SendGrid rejects fails
    the task without a retry, so a stakeholder never gets the same digest twice; 429 and 5xx
    answers are retried by the hook, then by Airflow.

    :param crm_conn_id: the CRM database connection.
    :param sendgrid_conn_id: the SendGrid connection (API key, sender).
    """

    template_fields = ("crm_conn_id", "state_conn_id", "sendgrid_conn_id")

    def __init__(self, *, sendgrid_conn_id: str = SendGridHook.default_conn_name, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.sendgrid_conn_id = sendgrid_conn_id

    def run(self, run: TaskRun) -> dict[str, Any]:
        from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

        from lifecycle import config
        from lifecycle.channels.retry import OutcomeUnknown, Rejected
        from lifecycle.reporting.digest import build_digest

        policy = config.load_policy()
        if not policy.stakeholders:
            raise AirflowSkipException("config/policy.yml lists no stakeholders: add some under 'stakeholders'")
        programs, errors = config.load_all_programs()
        digest = build_digest(run.engine, programs, policy, run.as_of, errors)
        hook = SendGridHook(self.sendgrid_conn_id)
        try:
            message_id = hook.send(digest_mail(hook, digest, policy.stakeholders))
        except (OutcomeUnknown, Rejected) as exc:
            raise AirflowFailException(f"KPI digest not sent, and not retried: {exc}") from None
        log.info(
            "KPI digest as of %s sent to %d stakeholders (%d programs, %d charts): message %s",
            digest.as_of.isoformat(),
            len(policy.stakeholders),
            len(digest.programs),
            len(digest.images),
            message_id,
        )
        return {
            "message_id": message_id,
            "recipients": len(policy.stakeholders),
            "programs": len(digest.programs),
        }
