"""The memory broker against a plain model: every step of random use keeps the promises.

Delivery counts are exact, no message is held by two consumers at once, every message
is in exactly one state, suspects (delivered before and never settled) come alone, and
the broker's stats agree with the model after every step.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any, TypeVar

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from pulses import Ack, DeadLetter, Drop, Envelope, Outcome, Retry
from pulses_memory import ManualClock, MemoryBroker, MemoryConsumer

T = TypeVar("T")
CONSUMERS = ("c1", "c2")
STREAM, GROUP = "jobs", "workers"
RELEASED_OWNER = "(released)"
LONG_AGO = -(2**62)


@dataclass
class Message:
    """What the model knows of one message, by its unique payload."""

    state: str  # "scheduled" (delayed publish or retry, due at `due`), "unread", "pending",
    # "acked", "dropped" or "dead"
    deliveries: int = 0
    """Deliveries so far; the next delivery carries one more."""
    unsettled: int = 0
    """Deliveries of its current entry (a retry starts a new one), less releases: the
    next delivery is a suspect when this is above 0."""
    due: int = 0
    entry: tuple[str, str] = ("", "")
    """Where its current entry lives and its id there: a retry's entry lives elsewhere,
    and may have the same id as the original."""
    owner: str = ""
    delivered_at: int = 0
    retry: bool = False


class MemoryBrokerModel(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.clock = ManualClock(start_ms=1_000_000)
        self.broker = MemoryBroker(clock=self.clock)
        self.consumers: dict[str, MemoryConsumer] = {}
        # What each consumer name held when it last restarted: payload -> its entry then.
        self.recovering: dict[str, dict[bytes, tuple[str, str]]] = {n: {} for n in CONSUMERS}
        self.held: dict[str, list[Envelope]] = {name: [] for name in CONSUMERS}
        self.messages: dict[bytes, Message] = {}
        self.counter = 0

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return self.loop.run_until_complete(coro)

    def teardown(self) -> None:
        self.run(self.broker.aclose())
        self.loop.close()

    @initialize()
    def start(self) -> None:
        for name in CONSUMERS:
            self.consumers[name] = self._consumer(name)
            self.run(self.consumers[name].ensure())

    def _consumer(self, name: str) -> MemoryConsumer:
        subscription = self.broker.subscription(GROUP, consumer=name)
        return self.broker.consumer(subscription, [STREAM], handler="model")

    def _payloads(self, n: int) -> list[bytes]:
        payloads = [f"m{self.counter + i}".encode() for i in range(n)]
        self.counter += n
        return payloads

    def _available(self, message: Message) -> bool:
        now = self.clock.now_ms()
        return message.state == "unread" or (message.state == "scheduled" and message.due <= now)

    # -- rules ------------------------------------------------------------------------

    @rule(n=st.integers(1, 4), many=st.booleans())
    def publish(self, n: int, many: bool) -> None:
        payloads = self._payloads(n)
        if many:
            ids = self.run(self.broker.publish_many(STREAM, payloads))
        else:
            ids = [self.run(self.broker.publish(STREAM, p)) for p in payloads]
        for payload, entry_id in zip(payloads, ids, strict=True):
            self.messages[payload] = Message("unread", entry=(STREAM, entry_id))

    @rule(delay=st.integers(1, 500))
    def publish_delayed(self, delay: int) -> None:
        [payload] = self._payloads(1)
        self.run(self.broker.publish(STREAM, payload, delay_ms=delay))
        self.messages[payload] = Message("scheduled", due=self.clock.now_ms() + delay)

    @rule(ms=st.sampled_from([0, 1, 50, 150, 400]))
    def advance(self, ms: int) -> None:
        self.clock.advance(ms)

    @rule(name=st.sampled_from(CONSUMERS))
    def restart(self, name: str) -> None:
        """A new consumer object with the same name, as after a crash."""
        self.consumers[name] = self._consumer(name)
        self.run(self.consumers[name].ensure())
        self.held[name] = []
        self.recovering[name] = {
            p: m.entry for p, m in self.messages.items() if m.state == "pending" and m.owner == name
        }

    @rule(name=st.sampled_from(CONSUMERS), n=st.integers(1, 5))
    def fetch(self, name: str, n: int) -> None:
        recovering = {
            p
            for p, entry in self.recovering[name].items()
            if self.messages[p].state == "pending"
            and self.messages[p].owner == name
            and self.messages[p].entry == entry
        }
        available = [p for p, m in self.messages.items() if self._available(m)]
        batch = self.run(self.consumers[name].fetch(n, 0))
        # What a previous life held comes first, a suspect at a time.
        assert len(batch) == (1 if recovering else min(n, len(available)))
        for envelope in batch:
            message = self.messages[envelope.payload]
            if envelope.payload in recovering:
                del self.recovering[name][envelope.payload]
            else:
                assert self._available(message), (envelope, message)
            self._deliver(name, envelope, message)

    @rule(
        name=st.sampled_from(CONSUMERS),
        n=st.integers(1, 5),
        min_idle=st.sampled_from([0, 100, 300]),
    )
    def reclaim(self, name: str, n: int, min_idle: int) -> None:
        now = self.clock.now_ms()
        idle = {
            p
            for p, m in self.messages.items()
            if m.state == "pending" and now - m.delivered_at >= min_idle
        }
        reclaimed = self.run(self.consumers[name].reclaim(min_idle, n))
        assert list(reclaimed.vanished) == []
        got = reclaimed.envelopes
        assert len(got) <= min(n, len(idle))
        if any(e.suspect for e in got):
            assert len(got) == 1, got
        elif len(got) < min(n, len(idle)):  # it stopped before a suspect
            taken = {e.payload for e in got}
            assert any(self.messages[p].unsettled > 0 for p in idle - taken)
        for envelope in got:
            assert envelope.payload in idle
            message = self.messages[envelope.payload]
            assert (envelope.source, envelope.id) == message.entry
            self.recovering[name].pop(envelope.payload, None)
            self._deliver(name, envelope, message)

    def _deliver(self, name: str, envelope: Envelope, message: Message) -> None:
        assert envelope.deliveries == message.deliveries + 1, (envelope, message)
        assert envelope.suspect == (message.unsettled > 0), (envelope, message)
        message.deliveries += 1
        message.unsettled += 1
        message.state = "pending"
        message.owner = name
        message.entry = (envelope.source, envelope.id)
        message.delivered_at = self.clock.now_ms()
        self.held[name].append(envelope)

    @precondition(lambda self: any(self.held.values()))
    @rule(
        data=st.data(),
        outcome=st.sampled_from(["ack", "drop", "retry", "dead"]),
        after=st.sampled_from([0, 10, 250]),
    )
    def settle(self, data: st.DataObject, outcome: str, after: int) -> None:
        name = data.draw(st.sampled_from([n for n in CONSUMERS if self.held[n]]))
        held = self.held[name]
        envelope = held.pop(data.draw(st.integers(0, len(held) - 1)))
        outcomes: dict[str, Outcome] = {
            "ack": Ack(),
            "drop": Drop(),
            "dead": DeadLetter("model"),
            "retry": Retry(after_ms=after),
        }
        result = outcomes[outcome]
        self.run(self.consumers[name].settle([(envelope, result)]))
        message = self.messages[envelope.payload]
        if message.state != "pending" or message.entry != (envelope.source, envelope.id):
            return  # settled already, or a retry's earlier entry: a no-op
        if outcome == "retry":
            message.state = "scheduled"
            message.due = self.clock.now_ms() + after
            message.deliveries = envelope.deliveries
            message.unsettled = 0
            message.retry = True
        else:
            message.state = {"ack": "acked", "drop": "dropped", "dead": "dead"}[outcome]

    @rule(name=st.sampled_from(CONSUMERS))
    def extend(self, name: str) -> None:
        self.run(self.consumers[name].extend(self.held[name]))
        for envelope in self.held[name]:
            message = self.messages[envelope.payload]
            if message.state == "pending" and message.owner == name:
                message.delivered_at = self.clock.now_ms()

    @rule(name=st.sampled_from(CONSUMERS))
    def release(self, name: str) -> None:
        self.run(self.consumers[name].release(self.held[name]))
        for envelope in self.held[name]:
            message = self.messages[envelope.payload]
            if message.state == "pending" and message.owner == name:
                message.owner = RELEASED_OWNER
                message.delivered_at = LONG_AGO
                message.deliveries -= 1
                message.unsettled -= 1
        self.held[name] = []

    # -- what must always hold -------------------------------------------------------

    @invariant()
    def stats_agree_with_the_model(self) -> None:
        stats = self.run(self.broker.stats(STREAM))
        if not stats.groups:
            return
        [group] = stats.groups
        now = self.clock.now_ms()
        states = [m.state for m in self.messages.values()]
        delayed = [m for m in self.messages.values() if m.state == "scheduled" and m.due > now]
        assert group.acked == states.count("acked")
        assert group.dropped == states.count("dropped")
        assert group.dead_lettered == states.count("dead") == stats.dead_letters
        assert group.pending == states.count("pending")
        assert group.lag == sum(self._available(m) for m in self.messages.values())
        assert group.delayed == sum(m.retry for m in delayed)
        assert stats.delayed == sum(not m.retry for m in delayed)
        total = (
            group.acked
            + group.dropped
            + group.dead_lettered
            + group.pending
            + group.lag
            + group.delayed
            + stats.delayed
        )
        assert total == len(self.messages)
        owners = {c.name: c.pending for c in group.consumers}
        for name in CONSUMERS:
            expected = sum(m.state == "pending" and m.owner == name for m in self.messages.values())
            assert owners.get(name, 0) == expected


MemoryBrokerModel.TestCase.settings = settings(
    max_examples=200,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
test_memory_broker_matches_its_model = MemoryBrokerModel.TestCase
