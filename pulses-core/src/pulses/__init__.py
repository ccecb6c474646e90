"""Pulses: background jobs and stream consumers with explicit outcomes and no lost messages.

This is the API of an application. What only a broker plugin needs is the plugin API,
``pulses.broker``; test helpers are in ``pulses.testing``.
"""

import typing as _typing
import warnings as _warnings

from pulses._app import App
from pulses._cancel import CancellationToken
from pulses._clock import Clock, wake
from pulses._drain import run_until_drained
from pulses._envelope import Envelope
from pulses._errors import (
    BrokerClosed,
    BrokerError,
    ConfigurationError,
    ConnectionLost,
    HandlerTimeout,
    InvalidName,
    InvalidURL,
    PluginConflict,
    PulsesError,
    SettleError,
    UnknownScheme,
    Unsupported,
)
from pulses._handler import Context, Handler
from pulses._middleware import (
    CallHandle,
    CallPublish,
    CallSettle,
    Middleware,
    Publishing,
    observe_publishes,
)
from pulses._outcome import Ack, DeadLetter, Drop, Outcome, Retry
from pulses._plugins import connect, plugin_manager
from pulses._public import claim as _claim
from pulses._retention import Retention
from pulses._stats import HandlerStats, RunStats
from pulses._typed import Codec, PayloadError, Stream
from pulses._urls import redact_url

# Defined by the plugin API; an application holds them too (see pulses.broker).
from pulses.broker import (
    Broker,
    ConsumerInfo,
    DeadLetterRecord,
    GroupStats,
    StreamAdmin,
    StreamStats,
    TrimStats,
)

if _typing.TYPE_CHECKING:  # moved to pulses.broker: typed code that uses them still checks
    from pulses.broker import DEFAULT_KEY_WINDOW_MS as DEFAULT_KEY_WINDOW_MS
    from pulses.broker import BrokerFactory as BrokerFactory
    from pulses.broker import Capabilities as Capabilities
    from pulses.broker import Consumer as Consumer
    from pulses.broker import Reclaimed as Reclaimed
    from pulses.broker import Register as Register
    from pulses.broker import Subscription as Subscription
    from pulses.broker import check_codec as check_codec
    from pulses.broker import check_keys as check_keys
    from pulses.broker import check_name as check_name
    from pulses.broker import check_publish as check_publish
    from pulses.broker import check_streams as check_streams
    from pulses.broker import check_window as check_window
    from pulses.broker import decode_fields as decode_fields
    from pulses.broker import encode_fields as encode_fields
    from pulses.broker import hookimpl as hookimpl
    from pulses.broker import message_id_of as message_id_of
    from pulses.broker import redelivery_fields as redelivery_fields

__version__ = "0.1.0"  # the same in pulses_memory and pulses_redis

__all__ = [
    "Ack",
    "App",
    "Broker",
    "BrokerClosed",
    "BrokerError",
    "CallHandle",
    "CallPublish",
    "CallSettle",
    "CancellationToken",
    "Clock",
    "Codec",
    "ConfigurationError",
    "ConnectionLost",
    "ConsumerInfo",
    "Context",
    "DeadLetter",
    "DeadLetterRecord",
    "Drop",
    "Envelope",
    "GroupStats",
    "Handler",
    "HandlerStats",
    "HandlerTimeout",
    "InvalidName",
    "InvalidURL",
    "Middleware",
    "Outcome",
    "PayloadError",
    "PluginConflict",
    "Publishing",
    "PulsesError",
    "Retention",
    "Retry",
    "RunStats",
    "SettleError",
    "Stream",
    "StreamAdmin",
    "StreamStats",
    "TrimStats",
    "UnknownScheme",
    "Unsupported",
    "connect",
    "observe_publishes",
    "plugin_manager",
    "redact_url",
    "run_until_drained",
    "wake",
]

_claim(__name__, globals())

_MOVED_TO_BROKER = frozenset(
    {
        "DEFAULT_KEY_WINDOW_MS",
        "BrokerFactory",
        "Capabilities",
        "Consumer",
        "Reclaimed",
        "Register",
        "Subscription",
        "check_codec",
        "check_keys",
        "check_name",
        "check_publish",
        "check_streams",
        "check_window",
        "decode_fields",
        "encode_fields",
        "hookimpl",
        "message_id_of",
        "redelivery_fields",
    }
)
"""Plugin API names that ``pulses`` exported in 0.1 snapshots: kept for one release,
with a warning that names their new home."""


if not _typing.TYPE_CHECKING:  # hidden from type checkers, which then flag misspelt names

    def __getattr__(name: str) -> object:
        if name in _MOVED_TO_BROKER:
            _warnings.warn(
                f"pulses.{name} is deprecated; import it from pulses.broker",
                DeprecationWarning,
                stacklevel=2,
            )
            from pulses import broker

            return getattr(broker, name)
        raise AttributeError(f"module 'pulses' has no attribute {name!r}")
