"""App.register checks every setting of every handler at once and names each one."""

from __future__ import annotations

from typing import Any

import pytest

from pulses import Ack, App, ConfigurationError, Context, Envelope, Handler, Outcome
from pulses.broker import Capabilities
from pulses_memory import MemoryBroker


def handler(name: str = "Job", **settings: Any) -> Handler[Any]:
    async def handle(self: Any, ctx: Context[Any], msg: Envelope) -> Outcome:
        return Ack()

    namespace: dict[str, Any] = {"STREAMS": ("jobs",), "handle": handle, **settings}
    return type(name, (Handler,), namespace)()  # type: ignore[no-any-return]  # built on the fly


@pytest.fixture
def app() -> App[MemoryBroker]:
    broker = MemoryBroker()
    return App(broker, broker.subscription("g"))


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"STREAMS": ()}, "Job.STREAMS is empty"),
        ({"STREAMS": "jobs"}, "Job.STREAMS must be a tuple of stream names, got 'jobs'"),
        ({"STREAMS": ("a", "")}, "Job.STREAMS: a stream name must not be empty"),
        ({"STREAMS": ("a", "a")}, "Job.STREAMS names a stream twice"),
        ({"WORKERS": 0}, "Job.WORKERS must be an int >= 1, got 0"),
        ({"WORKERS": 2.5}, "Job.WORKERS must be an int >= 1, got 2.5"),
        ({"WORKERS": 4, "MAX_IN_FLIGHT": 3}, "Job.MAX_IN_FLIGHT must be an int >= 4, got 3"),
        ({"MAX_DELIVERIES": 0}, "Job.MAX_DELIVERIES must be an int >= 1"),
        ({"RETRY_BACKOFF_MS": -1}, "Job.RETRY_BACKOFF_MS must be an int >= 0"),
        ({"RETRY_BACKOFF_MS": 10, "RETRY_BACKOFF_MAX_MS": 5}, "is above RETRY_BACKOFF_MAX_MS"),
        ({"TIMEOUT": 0}, "Job.TIMEOUT must be a positive number of seconds, got 0"),
        ({"TIMEOUT": float("nan")}, "Job.TIMEOUT must be a positive number of seconds"),
        ({"handle": lambda self, ctx, msg: Ack()}, "Job.handle must be an 'async def' method"),
    ],
)
def test_each_invalid_setting_is_named(
    app: App[MemoryBroker], settings: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigurationError) as info:
        app.register(handler(**settings))
    assert message in str(info.value)
    assert app.handlers == ()  # nothing half-registered


def test_every_problem_is_reported_at_once(app: App[MemoryBroker]) -> None:
    with pytest.raises(ConfigurationError) as info:
        app.register(handler("A", WORKERS=0, TIMEOUT=-1), handler("B", STREAMS=()))
    lines = str(info.value).splitlines()
    assert lines[0] == "invalid handlers:"
    assert any("A.WORKERS" in line for line in lines)
    assert any("A.TIMEOUT" in line for line in lines)
    assert any("B.STREAMS" in line for line in lines)


def test_two_handlers_on_one_stream_is_an_error_pointing_at_fan_out(
    app: App[MemoryBroker],
) -> None:
    app.register(handler("Mailer"))
    with pytest.raises(ConfigurationError, match="already consumed by Mailer") as info:
        app.register(handler("Auditor"))
    assert "another consumer group" in str(info.value)


def test_a_class_instead_of_an_instance_is_named(app: App[MemoryBroker]) -> None:
    with pytest.raises(ConfigurationError, match="not a Handler instance"):
        app.register(type(handler()))  # type: ignore[arg-type]  # the mistake under test


def test_a_handler_registered_twice_is_an_error(app: App[MemoryBroker]) -> None:
    job = handler()
    with pytest.raises(ConfigurationError, match="already registered"):
        app.register(job, job)


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"claim_idle_ms": 0}, "App.claim_idle_ms must be an int >= 1"),
        ({"block_ms": -5}, "App.block_ms must be an int >= 1"),
        ({"shutdown_timeout": float("inf")}, "App.shutdown_timeout must be a finite number"),
        ({"reclaim_interval_ms": True}, "App.reclaim_interval_ms must be an int >= 1"),
    ],
)
def test_invalid_app_settings_are_named(settings: dict[str, Any], message: str) -> None:
    broker = MemoryBroker()
    with pytest.raises(ConfigurationError, match=message.replace(".", r"\.")):
        App(broker, broker.subscription("g"), **settings)


class WithoutDelays(MemoryBroker):
    @property
    def capabilities(self) -> Capabilities:
        return Capabilities(dead_letters=True, reclaim=True, extend=True, release=True)


def test_a_handler_needing_what_the_broker_lacks_is_refused() -> None:
    broker = WithoutDelays()
    app = App(broker, broker.subscription("g"))
    with pytest.raises(ConfigurationError, match="cannot delay retries"):
        app.register(handler())
    app.register(handler(RETRY_BACKOFF_MS=0, RETRY_BACKOFF_MAX_MS=0))  # retries at once: fine


async def test_run_without_handlers_is_an_error(app: App[MemoryBroker]) -> None:
    from pulses import CancellationToken

    with pytest.raises(ConfigurationError, match="no handlers registered"):
        await app.run(CancellationToken())


async def test_using_moves_the_app_to_another_broker_with_its_handlers(
    app: App[MemoryBroker],
) -> None:
    app.register(handler())
    other = MemoryBroker()
    moved = app.using(other, shutdown_timeout=3)
    assert moved.broker is other
    assert moved.handlers == app.handlers
    assert moved.subscription.group == app.subscription.group
    assert moved.subscription.consumer == app.subscription.consumer
