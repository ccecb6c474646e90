"""Pulses: background jobs and stream consumers with explicit outcomes and no lost messages."""

from pulses._app import App
from pulses._broker import (
    Broker,
    Capabilities,
    Consumer,
    ConsumerInfo,
    DeadLetterRecord,
    GroupStats,
    Reclaimed,
    StreamAdmin,
    StreamStats,
    Subscription,
    check_publish,
)
from pulses._cancel import CancellationToken
from pulses._clock import Clock, wake
from pulses._codec import decode_fields, encode_fields, message_id_of, redelivery_fields
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
from pulses._hookspecs import BrokerFactory, Register, hookimpl
from pulses._middleware import (
    CallHandle,
    CallPublish,
    CallSettle,
    Middleware,
    Publishing,
    observe_publishes,
)
from pulses._idempotency import DEFAULT_KEY_WINDOW_MS, check_codec, check_keys, check_window
from pulses._names import check_name, check_streams
from pulses._outcome import Ack, DeadLetter, Drop, Outcome, Retry
from pulses._plugins import connect, plugin_manager
from pulses._stats import HandlerStats, RunStats
from pulses._typed import Codec, PayloadError, Stream
from pulses._urls import redact_url

__version__ = "0.1.0"  # the same in pulses_memory and pulses_redis

__all__ = [
    "DEFAULT_KEY_WINDOW_MS",
    "Ack",
    "App",
    "Broker",
    "CallHandle",
    "CallPublish",
    "CallSettle",
    "BrokerClosed",
    "BrokerError",
    "BrokerFactory",
    "CancellationToken",
    "Capabilities",
    "Clock",
    "Codec",
    "ConfigurationError",
    "ConnectionLost",
    "Consumer",
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
    "Reclaimed",
    "Register",
    "Retry",
    "RunStats",
    "SettleError",
    "Stream",
    "StreamAdmin",
    "StreamStats",
    "Subscription",
    "UnknownScheme",
    "Unsupported",
    "check_codec",
    "check_keys",
    "check_name",
    "check_publish",
    "check_streams",
    "check_window",
    "connect",
    "decode_fields",
    "encode_fields",
    "hookimpl",
    "message_id_of",
    "observe_publishes",
    "plugin_manager",
    "redact_url",
    "redelivery_fields",
    "run_until_drained",
    "wake",
]
