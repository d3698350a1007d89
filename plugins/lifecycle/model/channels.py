"""The channel vocabulary: which channels exist, and the facts about each that every layer reads.

A channel is one descriptor (a :class:`lifecycle.channels.base.Channel`) that its module registers
through :mod:`lifecycle.channels.registry`; the ledger's ``channel`` columns hold its name. The
registry lives here, at the bottom of the package, because the program schema (``config``) and
rendering (``messages``) consult it as well as the engine; they see a descriptor through
:class:`ChannelFacts`, the engine sees all of it. The channels that ship with Lifecycle are found
the way plugins are: the modules in :data:`BUILTIN` are imported on the first lookup, and register
themselves.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal, Protocol

from lifecycle.model.addresses import Address
from lifecycle.model.schema import CHANNEL_NAME_LENGTH

BUILTIN = {
    "email": "lifecycle.channels.email",
    "sms": "lifecycle.channels.sms",
    "whatsapp": "lifecycle.channels.whatsapp",
    "webhook": "lifecycle.channels.webhook",
    "sales_task": "lifecycle.channels.sales_task",
}
"""The channels that ship with Lifecycle and their modules, imported on the first lookup."""
NAME = re.compile(rf"^[a-z][a-z0-9_]{{0,{CHANNEL_NAME_LENGTH - 1}}}$")
"""A channel name: what the ledger's ``channel`` columns (32 characters) can hold."""
RESERVED = frozenset({"all"})
"""Names a channel cannot have: ``all`` is the policy's cap over every channel."""

Layout = Literal["line", "block", "as_written"]


@dataclass(frozen=True)
class TemplatePart:
    """One file of a step's template on a channel: ``<template>.<suffix>``, rendered into the
    message's ``field`` and laid out as one ``line`` (whitespace collapsed), a text ``block``
    (trimmed, ending in a newline) or ``as_written``. An ``optional`` part may be left out of a
    step's template; the message then has no such field."""

    field: str
    suffix: str
    layout: Layout
    optional: bool = False


class ChannelFacts(Protocol):
    """What every layer may read of a registered channel."""

    @property
    def name(self) -> str:
        """The channel's name in program files, the policy and the ledger."""
        ...

    @property
    def address(self) -> Address:
        """The contact address it sends to, as suppression and sending read it."""
        ...

    @property
    def list_reasons(self) -> tuple[str, ...]:
        """The suppression lists (``lifecycle_suppressions.reason`` for this channel) that block it."""
        ...

    @property
    def template_parts(self) -> tuple[TemplatePart, ...]:
        """The template files one of its messages is rendered from, in rendering order."""
        ...

    @property
    def quiet_hours(self) -> bool:
        """Whether the policy may give it quiet hours (messages then wait for the window's end)."""
        ...

    @property
    def reconcilable(self) -> bool:
        """Whether a message whose outcome is unknown can be looked up at the provider."""
        ...

    @property
    def renews_claim(self) -> bool:
        """Whether the sender renews a message's claim before every provider attempt."""
        ...

    @property
    def consent(self) -> bool:
        """Whether the contact's consent on the channel is checked: False for a channel that reaches
        someone else about the contact (a task for its sales owner), which no contact opts out of."""
        ...

    def describe(self, parts: Mapping[str, str]) -> str:
        """A rendered message's parts as ``lifecycle preview`` prints them."""
        ...


class UnknownChannel(LookupError):
    """No channel of that name is registered."""


_registered: dict[str, ChannelFacts] = {}
_builtin_loaded = False


def _load_builtin() -> None:
    global _builtin_loaded
    if not _builtin_loaded:
        for module in BUILTIN.values():
            importlib.import_module(module)
        _builtin_loaded = True


def register(channel: ChannelFacts) -> None:
    """Add a channel; its name must be new, lowercase and at most 32 characters (not ``all``)."""
    if not NAME.match(channel.name) or channel.name in RESERVED:
        raise ValueError(
            f"channel name {channel.name!r} must be 1 to {CHANNEL_NAME_LENGTH} lowercase letters, digits or "
            f"underscores, starting with a letter, and not {sorted(RESERVED)}"
        )
    if _registered.get(channel.name, channel) is not channel:
        raise ValueError(f"a channel named {channel.name!r} is already registered")
    _registered[channel.name] = channel


def unregister(name: str) -> None:
    """Remove a channel (tests that register their own undo it with this)."""
    _registered.pop(name, None)


def names() -> tuple[str, ...]:
    """Every registered channel's name: the built-in ones first, then the others in the order they
    were registered."""
    _load_builtin()
    return (*(name for name in BUILTIN if name in _registered), *(name for name in _registered if name not in BUILTIN))


def get(name: str) -> ChannelFacts:
    """The channel called ``name``; :class:`UnknownChannel` names the registered ones if there is none."""
    _load_builtin()
    try:
        return _registered[name]
    except KeyError:
        raise UnknownChannel(f"no channel {name!r} is registered; registered channels: {list(names())}") from None
