"""The conformance suite that Pulses ships, on a real JetStream server.

Cases the broker does not support skip by the suite's own capability checks, with their
reason. The cases below assume, as written, something that is Redis-shaped rather than
part of the contract; they are expected to fail (strictly: a suite that stops assuming
it makes them pass, and this list must shrink). test_nats_broker.py checks what each
of them is about in the way a broker whose server redelivers by itself does it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import ClassVar

import pytest
from nats_harness import NatsHarness
from nats_server import NatsServer

from pulses import Unsupported
from pulses.testing.conformance import BrokerConformance

pytest_plugins = ["nats_fixtures"]

_RECLAIM = (
    "calls Consumer.reclaim whatever the capabilities say, expecting nothing to take over; "
    "a broker with reclaim=False refuses it (Unsupported), as "
    "test_unsettled_message_is_reclaimable_once_idle_longer_than_min_idle_not_before demands"
)


class TestNatsBroker(BrokerConformance):
    # test name -> (the error it fails with, why); the error pins each to its reason.
    SUITE_ASSUMES: ClassVar[dict[str, tuple[type[BaseException], str]]] = {
        "test_acked_message_is_never_delivered_again_and_acking_twice_is_harmless": (
            Unsupported,
            _RECLAIM,
        ),
        "test_dropped_message_is_never_delivered_again_and_counted_as_dropped": (
            Unsupported,
            _RECLAIM,
        ),
        "test_retry_is_invisible_before_its_delay_and_counts_one_more_delivery": (
            Unsupported,
            _RECLAIM,
        ),
        "test_retry_goes_only_to_the_group_that_retried": (Unsupported, _RECLAIM),
        "test_dead_lettered_message_leaves_the_group_and_is_recorded_with_its_origin": (
            Unsupported,
            _RECLAIM,
        ),
        "test_extend_keeps_a_message_from_reclaim_without_counting_a_delivery": (
            Unsupported,
            "proves extend only through Consumer.reclaim; with reclaim=False the lease is "
            "the server's ack wait, and extend is proved by no redelivery past it",
        ),
        "test_released_messages_go_to_another_consumer_at_once_with_the_same_deliveries": (
            Unsupported,
            "takes released messages through Consumer.reclaim(60_000, ...); on NATS they "
            "come back through fetch, at once and with the same deliveries",
        ),
        "test_reclaim_counts_every_delivery_and_a_reclaimed_dead_letter_is_recorded": (
            Unsupported,
            "no capability check: needs reclaim; on NATS redeliveries arrive through fetch "
            "with exact counts",
        ),
        "test_a_pending_message_whose_entry_vanished_is_reported_once_and_never_again": (
            Unsupported,
            "no capability check: reports vanished entries through Consumer.reclaim; "
            "JetStream drops a deleted message from its consumers' pending by itself",
        ),
        "test_reclaim_returns_at_most_max_count_and_reaches_idle_ones_behind_fresh_ones": (
            Unsupported,
            "no capability check: needs reclaim",
        ),
        "test_a_restarted_consumer_gets_back_its_own_pending_messages_once": (
            AssertionError,
            "assumes a pending list per consumer name; a JetStream durable consumer is "
            "shared by the group, and what a dead process held comes back after the ack "
            "wait, to whichever consumer fetches",
        ),
        "test_stats_put_every_published_message_in_exactly_one_bucket": (
            Unsupported,
            "publishes with delay_ms=60_000 whatever capabilities.delayed_publish says, "
            "and expects pending per consumer name, which JetStream does not know",
        ),
        "test_trim_removes_only_what_every_group_has_acknowledged": (
            Unsupported,
            "shows that trim kept a pending message by reclaiming it: needs reclaim",
        ),
        "test_foreign_entries_are_delivered_with_their_raw_fields_and_spoil_no_batch": (
            ValueError,
            "a foreign entry there is a flat field list with duplicate and non-UTF-8 field "
            "names (which the harness cannot write); a foreign NATS message is a body and "
            "a header map",
        ),
        "test_suspects_come_alone_so_a_poison_raises_only_its_own_count": (
            Unsupported,
            "no capability check: takes the suspects over with Consumer.reclaim; on NATS "
            "they arrive through fetch, each alone",
        ),
    }

    @pytest.fixture
    async def harness(self, nats_server: NatsServer) -> AsyncIterator[NatsHarness]:
        harness = NatsHarness(nats_server)
        yield harness
        await harness.aclose()
