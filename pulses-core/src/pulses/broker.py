"""The plugin API: what a broker plugin implements and the helpers it shares.

An application needs none of this; ``pulses`` is its API. A broker plugin finds here:

- the protocols it implements: ``Broker``, ``Consumer``, the admin facet
  ``StreamAdmin``, and the ``Subscription`` base class;
- the values it returns: ``Capabilities``, ``Reclaimed``, and for the admin facet
  ``StreamStats``, ``GroupStats``, ``ConsumerInfo``, ``DeadLetterRecord`` and
  ``TrimStats``;
- the layout of a message as a flat field list, the same on every broker:
  ``encode_fields``, ``decode_fields`` (which returns ``DecodedFields``),
  ``redelivery_fields`` and ``message_id_of``;
- the shared checks, so that bad input fails alike everywhere: ``check_publish``,
  ``check_keys``, ``check_codec``, ``check_window`` (and ``DEFAULT_KEY_WINDOW_MS``),
  ``check_name``, ``check_streams``, ``check_history`` (for ``StreamAdmin.trim``);
  and, to keep passwords out of errors, ``url_secrets`` and ``redact_secrets``;
- the hook: ``hookimpl``, ``Register`` and ``BrokerFactory``.

What both sides use stays in ``pulses``: ``Envelope``, the outcomes, the errors and
``redact_url``. Seven names are in both modules, because an application holds them too:
``Broker`` (what ``pulses.connect`` returns, and ``Handler[Broker[Any]]`` for a handler
that runs on any broker), ``StreamAdmin`` (``isinstance(broker, StreamAdmin)`` before
admin calls from code) and the five values its methods return. They are defined here, so
their ``__module__`` is ``pulses.broker``; ``pulses`` re-exports them.

The conformance suite that proves a broker keeps this contract is
``pulses.testing.conformance`` (``BrokerConformance``, run through a
``pulses.testing.BrokerHarness``), and the guide is "Writing a broker" in the
documentation. A plugin module, declared in the ``pulses`` entry-point group of its
distribution (``[project.entry-points.pulses] sqlite = "pulses_sqlite._plugin"``)::

    from pulses.broker import Register, hookimpl

    from pulses_sqlite._broker import SqliteBroker


    @hookimpl
    def register_brokers(register: Register) -> None:
        register("sqlite", SqliteBroker.connect)  # async (url) -> SqliteBroker
"""

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
    TrimStats,
    check_publish,
)
from pulses._codec import (
    DecodedFields,
    decode_fields,
    encode_fields,
    message_id_of,
    redelivery_fields,
)
from pulses._hookspecs import BrokerFactory, Register, hookimpl
from pulses._idempotency import DEFAULT_KEY_WINDOW_MS, check_codec, check_keys, check_window
from pulses._names import check_name, check_streams
from pulses._public import claim as _claim
from pulses._retention import check_history
from pulses._urls import redact_secrets, url_secrets

__all__ = [
    "DEFAULT_KEY_WINDOW_MS",
    "Broker",
    "BrokerFactory",
    "Capabilities",
    "Consumer",
    "ConsumerInfo",
    "DeadLetterRecord",
    "DecodedFields",
    "GroupStats",
    "Reclaimed",
    "Register",
    "StreamAdmin",
    "StreamStats",
    "Subscription",
    "TrimStats",
    "check_codec",
    "check_history",
    "check_keys",
    "check_name",
    "check_publish",
    "check_streams",
    "check_window",
    "decode_fields",
    "encode_fields",
    "hookimpl",
    "message_id_of",
    "redact_secrets",
    "redelivery_fields",
    "url_secrets",
]

_claim(__name__, globals())
