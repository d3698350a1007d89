"""Message rendering: sandboxed Jinja2, strict about undefined names, HTML autoescaped."""

from __future__ import annotations

import math
import re
import string
from collections.abc import Callable, Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from jinja2 import FileSystemLoader, StrictUndefined, pass_eval_context, select_autoescape
from jinja2.exceptions import SecurityError
from jinja2.filters import do_center, do_format, do_indent, do_replace, sync_do_slice
from jinja2.runtime import Context
from jinja2.sandbox import ImmutableSandboxedEnvironment, safe_range

from lifecycle.model import channels
from lifecycle.model.channels import Layout
from lifecycle.paths import templates_dir

MAX_LOOP = 100_000
# Limits on what one template expression may build, so a template cannot exhaust the worker's
# memory or time: repeated strings and lists, integer powers, padding widths and replacements.
MAX_SIZE = 1_000_000
MAX_WIDTH = 10_000
MAX_POWER_BITS = 4_096
_loop_budget: ContextVar[int | None] = ContextVar("lifecycle_template_loop_budget", default=None)


class RenderError(ValueError):
    """A template failed: names the template file and what to fix."""

    def __init__(self, template: str, problem: str) -> None:
        super().__init__(f"template {template}: {problem}")
        self.template = template
        self.problem = problem


@dataclass(frozen=True)
class Rendered:
    """A rendered message: its channel's template parts by field (``subject``/``html``/``text`` for
    email, ``text`` alone for SMS)."""

    parts: Mapping[str, str]

    @property
    def text(self) -> str:
        """The plain-text part."""
        return self.parts.get("text", "")

    @property
    def subject(self) -> str | None:
        """The subject line, on channels that have one."""
        return self.parts.get("subject")

    @property
    def html(self) -> str | None:
        """The HTML part, on channels that have one."""
        return self.parts.get("html")


def _finalize(value: Any) -> Any:
    return "" if value is None else value


def _money(value: Any, currency: str = "$") -> str:
    try:
        return f"{currency}{float(value):,.2f}".replace(".00", "")
    except (TypeError, ValueError):
        return ""


def _too_big(what: str, limit: int) -> SecurityError:
    return SecurityError(f"{what} may be at most {limit:,} in a template")


def _check_repeat(left: Any, right: Any) -> None:
    for seq, times in ((left, right), (right, left)):
        if isinstance(seq, str | list | tuple) and isinstance(times, int) and len(seq) * times > MAX_SIZE:
            raise _too_big("a repeated string or list's length", MAX_SIZE)


def _check_power(base: Any, exponent: Any) -> None:
    numbers = isinstance(base, int) and isinstance(exponent, int) and abs(base) > 1 and exponent > 0
    if numbers and exponent * math.log2(abs(base)) > MAX_POWER_BITS:
        raise _too_big("an integer power's size in bits", MAX_POWER_BITS)


_PRINTF_WIDTHS = re.compile(r"%(?:\([^)]*\))?[-#0 +]*(\*|\d+)?(?:\.(\*|\d+))?")


def _check_printf(template: Any) -> None:
    """A ``%`` format string's widths and precisions: numbers up to MAX_WIDTH, never ``*``."""
    if isinstance(template, str):
        for match in _PRINTF_WIDTHS.finditer(template):
            if any(part == "*" or (part and int(part) > MAX_WIDTH) for part in match.groups()):
                raise _too_big("a format width", MAX_WIDTH)


def _check_format_spec(template: str) -> None:
    """A ``str.format`` string's specs: widths up to MAX_WIDTH, no nested replacement fields."""
    for _literal, field, spec, _conversion in string.Formatter().parse(template):
        if field is None or not spec:
            continue
        if "{" in spec or any(int(number) > MAX_WIDTH for number in re.findall(r"\d+", spec)):
            raise _too_big("a format width", MAX_WIDTH)


def _check_widths(*values: Any) -> None:
    if any(isinstance(v, int) and v > MAX_WIDTH for v in values):
        raise _too_big("a width or count", MAX_WIDTH)


def _check_replace(text: Any, old: Any, new: Any) -> None:
    text, old, new = str(text), str(old), str(new)
    grows = (text.count(old) if old else len(text) + 1) * max(len(new) - len(old), 0)
    if len(text) + grows > MAX_SIZE:
        raise _too_big("a replacement's result length", MAX_SIZE)


# The built-in filters that take a width, a count or a format string, checked first.
def _center(value: Any, width: int = 80) -> str:
    _check_widths(width)
    return do_center(value, width)


def _indent(value: Any, width: Any = 4, *args: Any, **kwargs: Any) -> str:
    _check_widths(width)
    return do_indent(value, width, *args, **kwargs)


def _slice(value: Any, slices: int, fill_with: Any = None) -> Any:
    _check_widths(slices)
    return sync_do_slice(value, slices, fill_with)


def _format(value: Any, *args: Any, **kwargs: Any) -> str:
    _check_printf(value)
    return do_format(value, *args, **kwargs)


@pass_eval_context
def _replace(eval_ctx: Any, text: Any, old: str, new: str, count: int | None = None) -> str:
    _check_replace(text, old, new)
    return do_replace(eval_ctx, text, old, new, count)


_STR_METHODS_WITH_WIDTH = frozenset({"center", "ljust", "rjust", "zfill", "expandtabs"})


class _BoundedSandbox(ImmutableSandboxedEnvironment):
    """The immutable sandbox plus bounds on what one expression may allocate."""

    intercepted_binops = frozenset({"*", "**", "%"})

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        if operator == "*":
            _check_repeat(left, right)
        elif operator == "**":
            _check_power(left, right)
        elif operator == "%":
            _check_printf(left)
        return super().call_binop(context, operator, left, right)

    def call(__self, __context: Context, __obj: Any, *args: Any, **kwargs: Any) -> Any:  # noqa: N805
        if isinstance(getattr(__obj, "__self__", None), str):
            name = getattr(__obj, "__name__", "")
            if name in _STR_METHODS_WITH_WIDTH:
                _check_widths(*args, *kwargs.values())
            elif name == "replace" and len(args) >= 2:
                _check_replace(__obj.__self__, args[0], args[1])
        return super().call(__context, __obj, *args, **kwargs)

    def wrap_str_format(self, value: Any) -> Callable[..., str] | None:
        wrapped = super().wrap_str_format(value)
        if wrapped is not None:
            _check_format_spec(value.__self__)
        return wrapped


@cache
def environment(root: str, reload: bool = True) -> ImmutableSandboxedEnvironment:
    """One sandboxed environment per templates folder: no attribute escapes, no mutation, and
    bounds on what an expression may allocate (see :class:`_BoundedSandbox`). ``reload=False``:
    a template once loaded is not checked again against its file (no ``stat`` per render), for a
    process that renders many messages from templates that do not change under it (a send task)."""
    env = _BoundedSandbox(
        loader=FileSystemLoader(root),
        auto_reload=reload,
        undefined=StrictUndefined,
        autoescape=select_autoescape(enabled_extensions=("html", "html.j2"), default_for_string=False),
        finalize=_finalize,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=False,
    )
    env.filters["money"] = _money
    env.filters["with_article"] = with_article
    env.filters.update(center=_center, indent=_indent, slice=_slice, format=_format, replace=_replace)
    env.globals["range"] = _bounded_range
    return env


def with_article(noun: str, lower: bool = False) -> str:
    """``"an engineer"``, ``"a CRM manager"``: the noun with its indefinite article, chosen by how
    its first word is said (acronyms by their first letter: ``"an SDR"``, ``"a CTO"``). With
    ``lower``, words that are not acronyms are lowercased, for a title in the middle of a sentence."""
    words = str(noun).split()
    if not words:
        return ""
    if lower:
        words = [w if w.isupper() and len(w) > 1 else w.lower() for w in words]
    first = words[0]
    if first.isupper() and len(first) > 1:
        vowel_sound = first[0] in "AEFHILMNORSX"
    else:
        vowel_sound = first[0].lower() in "aeiou" and not first.lower().startswith(("uni", "use", "usu", "one"))
    return f"{'an' if vowel_sound else 'a'} {' '.join(words)}"


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


_LAYOUTS: dict[Layout, Callable[[str], str]] = {
    "line": lambda text: " ".join(text.split()),
    "block": lambda text: text.strip() + "\n",
    "as_written": lambda text: text,
}


def render(
    template: str, channel: str, context: Mapping[str, Any], root: Path | None = None, *, reload: bool = True
) -> Rendered:
    """Render a step's template parts for ``channel`` with ``context``, each laid out as its channel
    says; ``reload=False``: templates already loaded are used as they are (see :func:`environment`)."""
    folder = root or templates_dir()
    env = environment(str(folder), reload)
    return Rendered(
        {
            part.field: _LAYOUTS[part.layout](_render(env, f"{template}.{part.suffix}", context))
            for part in channels.get(channel).template_parts
            if not part.optional or (folder / f"{template}.{part.suffix}").is_file()
        }
    )
