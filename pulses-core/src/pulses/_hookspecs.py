"""The whole hook API of Pulses. A plugin module implements some of these with ``hookimpl``.

Plugins are found through the ``pulses`` entry-point group, e.g. in a broker package's
pyproject.toml: ``[project.entry-points.pulses] redis = "pulses_redis._plugin"``.
Plugin authors import these names from ``pulses.broker``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeAlias

import pluggy

from pulses._broker import Broker

__all__ = ["BrokerFactory", "Register", "hookimpl", "hookspec"]

PROJECT = "pulses"

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)
"""Marks a plugin module's ``register_brokers`` function as its implementation of the
hook (``@hookimpl``); a misspelt hook name is an error when plugins load, not silence."""

BrokerFactory: TypeAlias = Callable[[str], Awaitable[Broker[Any]]]
"""``async (url) -> Broker``: connects to the broker the URL names, for
``pulses.connect(url)``, ``pulses worker --url`` and every ``pulses`` command. Usually
the broker class's ``connect`` classmethod. It imports the client library only when
called, so loading the plugin stays cheap for the schemes not asked for; a URL it cannot
use raises ``InvalidURL`` with any password redacted.

Not part of the hook, but expected of a broker class: a synchronous
``from_url(url)`` that returns the broker without sending anything until first use (as
``RedisBroker.from_url`` does), so that an app defined at module level, which ``pulses
worker module:app`` imports before any event loop runs, can build its broker."""

Register: TypeAlias = Callable[[str, BrokerFactory], None]
"""``register(scheme, factory)``: handed to ``register_brokers``. A scheme is matched
without regard to case; two plugins registering one scheme is a ``PluginConflict``."""


@hookspec
def register_brokers(register: Register) -> None:
    """Call ``register(scheme, factory)`` once per URL scheme; every plugin's calls count."""
