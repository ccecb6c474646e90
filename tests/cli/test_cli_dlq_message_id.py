"""``pulses dlq show`` finds a dead letter by the message id a handler logged."""

from __future__ import annotations

import asyncio
import json
import uuid

from click.testing import CliRunner

from pulses import DeadLetter, Retry
from pulses.cli import main
from pulses_memory import MemoryBroker


async def _dead_after_a_retry(name: str) -> tuple[str, str]:
    """Publish, retry once (a new entry), dead-letter: the message id and the dead id."""
    broker = MemoryBroker(name)
    consumer = broker.consumer(broker.subscription("g"), ["jobs"], handler="Jobs")
    await consumer.ensure()
    message_id = await broker.publish("jobs", b"poison")
    [first] = await consumer.fetch(1, 0)
    await consumer.settle([(first, Retry())])
    [again] = await consumer.fetch(1, 0)
    await consumer.settle([(again, DeadLetter("gave up"))])
    [record] = await broker.dead_letters("jobs")
    return message_id, record.id


def test_dlq_show_finds_a_dead_letter_by_its_message_id_and_by_its_own_id() -> None:
    name = f"dlq-{uuid.uuid4().hex[:8]}"
    message_id, dead_id = asyncio.run(_dead_after_a_retry(name))
    runner = CliRunner()
    for wanted in (message_id, dead_id):
        result = runner.invoke(main, ["dlq", "show", f"memory://{name}", "jobs", wanted])
        assert result.exit_code == 0, result.output
        shown = json.loads(result.stdout)
        assert (shown["id"], shown["message_id"], shown["reason"]) == (
            dead_id,
            message_id,
            "gave up",
        )
    missing = runner.invoke(main, ["dlq", "show", f"memory://{name}", "jobs", "1-1"])
    assert missing.exit_code != 0
    assert "no dead letter '1-1' in jobs (by dead-letter or message id)" in missing.output
