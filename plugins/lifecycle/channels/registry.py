"""The registered channels, as the engine sees them: each one a whole :class:`Channel`.

A channel's module registers its descriptor at import (``register(SmsChannel())``); the
channels that ship with Lifecycle are imported on the first lookup. A test registers its own
channel and unregisters it when done.
"""

from __future__ import annotations

from typing import TypeVar

from lifecycle.channels.base import Channel
from lifecycle.model import channels as vocabulary

C = TypeVar("C", bound=Channel)


def register(channel: C) -> C:
    """Register ``channel`` under its name (new, lowercase, at most 32 characters); returns it.
    Every fact a :class:`Channel` declares must be set."""
    unset = [fact for fact in Channel.__annotations__ if not hasattr(channel, fact)]
    if unset:
        raise TypeError(f"{type(channel).__name__} does not set {unset}: a channel must say each of them")
    vocabulary.register(channel)
    return channel


def unregister(name: str) -> None:
    """Remove the channel called ``name``."""
    vocabulary.unregister(name)


def names() -> tuple[str, ...]:
    """Every registered channel's name, the built-in ones (email, sms) first."""
    return vocabulary.names()


def get(name: str) -> Channel:
    """The channel called ``name``; :class:`~lifecycle.model.channels.UnknownChannel` if there is none."""
    channel = vocabulary.get(name)
    if not isinstance(channel, Channel):
        raise TypeError(f"channel {name!r} is registered as a {type(channel).__name__}, not a Channel")
    return channel
