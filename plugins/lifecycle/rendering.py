"""Message rendering: sandboxed Jinja2, strict about undefined names, HTML autoescaped."""

from __future__ import annotations

from collections.abc import Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from jinja2 import FileSystemLoader, StrictUndefined, select_autoescape
from jinja2.exceptions import SecurityError
from jinja2.sandbox import ImmutableSandboxedEnvironment, safe_range

from lifecycle.config import templates_dir

CONTACT_FIELDS = (
    "contact_id",
    "first_name",
    "last_name",
    "country",
    "region",
    "timezone",
    "locale",
    "role",
    "industry",
    "lifecycle_stage",
    "plan",
    "mrr",
    "ltv",
    "owner",
    "churn_reason",
    "created_at",
    "last_active_at",
)
ACCOUNT_FIELDS = ("name", "industry", "tier")
MAX_LOOP = 100_000
_loop_budget: ContextVar[int | None] = ContextVar("lifecycle_template_loop_budget", default=None)


class RenderError(ValueError):
    """A template failed: names the template file and what to fix."""

    def __init__(self, template: str, problem: str) -> None:
        super().__init__(f"template {template}: {problem}")
        self.template = template
        self.problem = problem


@dataclass(frozen=True)
class Rendered:
    """A rendered message: ``subject``/``html``/``text`` for email, ``text`` alone for SMS."""

    text: str
    subject: str | None = None
    html: str | None = None


def _finalize(value: Any) -> Any:
    return "" if value is None else value


def _money(value: Any, currency: str = "$") -> str:
    try:
        return f"{currency}{float(value):,.2f}".replace(".00", "")
    except (TypeError, ValueError):
        return ""


@cache
def environment(root: str) -> ImmutableSandboxedEnvironment:
    """One sandboxed environment per templates folder: no attribute escapes, no mutation."""
    env = ImmutableSandboxedEnvironment(
        loader=FileSystemLoader(root),
        undefined=StrictUndefined,
        autoescape=select_autoescape(enabled_extensions=("html", "html.j2"), default_for_string=False),
        finalize=_finalize,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=False,
    )
    env.filters["money"] = _money
    env.globals["range"] = _bounded_range
    return env


def _bounded_range(*args: int) -> range:
    """``range`` for templates: inside :func:`render`, at most MAX_LOOP numbers in all per part."""
    numbers = safe_range(*args)
    left = _loop_budget.get()
    if left is not None:
        if len(numbers) > left:
            raise SecurityError(f"range() loops may run at most {MAX_LOOP:,} times in one template")
        _loop_budget.set(left - len(numbers))
    return numbers


def _render(env: ImmutableSandboxedEnvironment, name: str, context: Mapping[str, Any]) -> str:
    """Render one template; whatever it raises (syntax, undefined, sandbox, or a Python error such
    as a division by zero on this contact's data) is a RenderError naming it."""
    budget = _loop_budget.set(MAX_LOOP)
    try:
        return env.get_template(name).render(context)
    except Exception as exc:
        line = getattr(exc, "lineno", None)
        where = f" (line {line} of {getattr(exc, 'name', None) or name})" if line else ""
        raise RenderError(
            name,
            f"{type(exc).__name__}{where}: {getattr(exc, 'message', None) or exc} — fix the template "
            "or give the variable a fallback, e.g. {{ x or 'default' }}",
        ) from None
    finally:
        _loop_budget.reset(budget)


def render(template: str, channel: str, context: Mapping[str, Any], root: Path | None = None) -> Rendered:
    """Render a step's template parts for ``channel`` with ``context``."""
    env = environment(str(root or templates_dir()))
    if channel == "sms":
        return Rendered(text=" ".join(_render(env, f"{template}.sms.j2", context).split()))
    subject = " ".join(_render(env, f"{template}.subject.txt", context).split())
    return Rendered(
        subject=subject,
        html=_render(env, f"{template}.html.j2", context),
        text=_render(env, f"{template}.txt.j2", context).strip() + "\n",
    )


def message_context(
    contact: Mapping[str, Any],
    *,
    program: str,
    step: str,
    variant: str | None,
    trigger: Mapping[str, Any] | None,
    account: Mapping[str, Any] | None = None,
    links: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """The variables a template sees: the contact's non-address fields, the account, the
    trigger event's properties, the A/B variant and links. Addresses are not exposed."""
    return {
        "contact": {k: contact.get(k) for k in CONTACT_FIELDS},
        "account": {k: (account or {}).get(k) for k in ACCOUNT_FIELDS},
        "trigger": dict(trigger or {}),
        "variant": variant,
        "program": program,
        "step": step,
        "links": dict(links or {}),
    }
