"""The whole hook API of Pulses. A plugin module implements some of these with ``hookimpl``.

Plugins are found through the ``pulses`` entry-point group, e.g. in a broker package's
pyproject.toml: ``[project.entry-points.pulses] redis = "pulses_redis._plugin"``.
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

BrokerFactory: TypeAlias = Callable[[str], Awaitable[Broker[Any]]]
"""Connects to the broker a URL names; imports heavy client libraries only when called."""

Register: TypeAlias = Callable[[str, BrokerFactory], None]
"""``register(scheme, factory)``: handed to ``register_brokers``."""


@hookspec
def register_brokers(register: Register) -> None:
    """Call ``register(scheme, factory)`` once per URL scheme; every plugin's calls count."""
