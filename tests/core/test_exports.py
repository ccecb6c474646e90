import pulses
import pulses.testing


def test_public_names_are_pinned():
    # A change here is a change of the public API: deliberate, and in the changelog.
    assert sorted(pulses.__all__) == [
        "Ack", "App", "Broker", "BrokerClosed", "BrokerError", "BrokerFactory",
        "CancellationToken", "Capabilities", "ConfigurationError", "ConnectionLost",
        "Consumer", "ConsumerInfo", "Context", "DeadLetter", "DeadLetterRecord", "Drop",
        "Envelope", "GroupStats", "Handler", "HandlerStats", "HandlerTimeout", "InvalidURL",
        "Outcome", "PluginConflict", "PulsesError", "Reclaimed", "Register", "Retry",
        "RetryPolicy", "RunStats", "SettleError", "StreamAdmin", "StreamStats", "Subscription",
        "UnknownScheme", "Unsupported", "check_publish", "connect", "decode_fields",
        "encode_fields", "hookimpl", "plugin_manager", "redact_url",
        "redelivery_fields",
    ]  # fmt: skip


def test_every_public_name_exists():
    for module in (pulses, pulses.testing):
        for name in module.__all__:
            assert getattr(module, name) is not None, name
