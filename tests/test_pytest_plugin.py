"""The pytest plugin that pulses-core installs: a user's coroutine tests using its fixtures
run as written, whatever runs asyncio tests in their project (nothing, pytest-asyncio in
either mode), and retry delays cost no real time."""

from __future__ import annotations

import pytest

USER_TESTS = '''
from pulses import Ack, App, Context, Envelope, Handler, Outcome
from pulses.testing import Drain
from pulses_memory import MemoryBroker


class ChargeCard(Handler[MemoryBroker]):
    """Production settings: the default backoff would wait minutes in real time."""

    STREAMS = ("payments",)
    MAX_DELIVERIES = 6

    async def handle(self, ctx: Context[MemoryBroker], msg: Envelope) -> Outcome:
        if msg.payload == b"poison":
            raise ValueError("card number is not a number")
        return Ack()


async def test_poison_is_dead_lettered_after_max_deliveries(
    memory_broker: MemoryBroker, drain: Drain
) -> None:
    await memory_broker.publish("payments", b"poison")
    await memory_broker.publish("payments", b"4242")
    app = App(memory_broker, memory_broker.subscription("test")).register(ChargeCard())
    stats = await drain(app, timeout=5)
    assert (stats.total.acked, stats.total.retried, stats.total.dead_lettered) == (1, 5, 1)
    [dead] = await memory_broker.dead_letters("payments")
    assert dead.deliveries == 6
    assert "ValueError" in dead.reason


async def test_a_delayed_publish_comes_due_in_a_drain(
    memory_broker: MemoryBroker, drain: Drain
) -> None:
    await memory_broker.publish("payments", b"tomorrow", delay_ms=86_400_000)
    app = App(memory_broker, memory_broker.subscription("test")).register(ChargeCard())
    stats = await drain(app, timeout=5)
    assert stats.total.acked == 1


async def test_each_test_has_a_broker_of_its_own(memory_broker: MemoryBroker) -> None:
    assert (await memory_broker.stats("payments")).length == 0
'''


@pytest.mark.parametrize(
    "how",
    [
        pytest.param(["-p", "no:asyncio"], id="without pytest-asyncio"),
        pytest.param([], id="pytest-asyncio in strict mode"),
        pytest.param(["-o", "asyncio_mode=auto"], id="pytest-asyncio in auto mode"),
    ],
)
def test_coroutine_tests_using_the_fixtures_run_with_no_asyncio_setup(
    pytester: pytest.Pytester, how: list[str]
) -> None:
    pytester.makepyfile(test_payments=USER_TESTS)
    result = pytester.runpytest_subprocess(*how, "-p", "no:cacheprovider")
    result.assert_outcomes(passed=3)


def test_coroutine_tests_without_the_fixtures_are_left_to_pytest(
    pytester: pytest.Pytester,
) -> None:
    pytester.makepyfile(test_other="async def test_not_ours() -> None:\n    pass\n")
    result = pytester.runpytest_subprocess("-p", "no:asyncio", "-p", "no:cacheprovider")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*async def functions are not natively supported*"])
