import pulses
import pulses.testing


def test_public_names_are_pinned() -> None:
    # A change here is a change of the public API: deliberate, and in the changelog.
    assert sorted(pulses.__all__) == [
        "Ack", "App", "Broker", "BrokerClosed", "BrokerError", "CallHandle", "CallPublish",
        "CallSettle", "CancellationToken", "Clock", "Codec", "ConfigurationError",
        "ConnectionLost", "ConsumerInfo", "Context", "DeadLetter", "DeadLetterRecord", "Drop",
        "Envelope", "GroupStats", "Handler", "HandlerStats", "HandlerTimeout", "InvalidName",
        "InvalidURL", "Middleware", "Outcome", "PayloadError", "PluginConflict", "Publishing",
        "PulsesError", "Retention", "Retry", "RunStats", "SettleError", "Stream",
        "StreamAdmin", "StreamStats", "TrimStats", "UnknownScheme", "Unsupported", "connect",
        "observe_publishes", "plugin_manager", "redact_url", "run_until_drained", "wake",
    ]  # fmt: skip


def test_plugin_api_names_are_pinned() -> None:
    import pulses.broker

    assert sorted(pulses.broker.__all__) == [
        "Broker", "BrokerFactory", "Capabilities", "Consumer", "ConsumerInfo",
        "DEFAULT_KEY_WINDOW_MS", "DeadLetterRecord", "DecodedFields", "GroupStats",
        "Reclaimed", "Register", "StreamAdmin", "StreamStats", "Subscription", "TrimStats",
        "check_codec", "check_history", "check_keys", "check_name", "check_publish",
        "check_streams", "check_window", "decode_fields", "encode_fields", "hookimpl",
        "message_id_of", "redact_secrets", "redelivery_fields", "url_secrets",
    ]  # fmt: skip


def test_every_public_name_exists() -> None:
    for module in (pulses, pulses.testing):
        for name in module.__all__:
            assert getattr(module, name) is not None, name


def test_broker_and_testing_names_are_pinned() -> None:
    import pulses.testing.conformance
    import pulses_memory
    import pulses_redis

    assert sorted(pulses.testing.__all__) == ["BrokerHarness", "Drain", "run_until_drained"]
    assert sorted(pulses.testing.conformance.__all__) == ["BrokerConformance", "BrokerHarness"]
    assert sorted(pulses_memory.__all__) == [
        "Clock", "ManualClock", "MemoryBroker", "MemoryConsumer", "MemorySubscription",
        "SystemClock",
    ]  # fmt: skip
    assert sorted(pulses_redis.__all__) == ["RedisBroker", "RedisConsumer", "RedisSubscription"]
    for module in (pulses.testing.conformance, pulses_memory, pulses_redis):
        for name in module.__all__:
            assert getattr(module, name) is not None, name
