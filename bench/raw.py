"""The baseline: a plain redis-py asyncio consumer, run as its own process.

``python -m bench.raw consume URL STREAM GROUP``: ``XREADGROUP COUNT 500`` and one
multi-id ``XACK`` per batch until a read comes back empty. ``python -m bench.raw
latency URL STREAM GROUP``: the same with ``BLOCK``, noting publish→receive latency of
each entry, until SIGTERM. Prints one JSON line: first read start, last ack end,
messages, latencies.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys
import time
from typing import Any

from redis.asyncio import Redis

COUNT = 500


async def consume(url: str, stream: str, group: str) -> dict[str, object]:
    client = Redis.from_url(url)
    await client.ping()
    started = time.monotonic()
    done = 0
    while True:
        reply: Any = await client.xreadgroup(group, "raw", {stream: ">"}, count=COUNT)
        if not reply:
            break
        ids = [entry_id for entry_id, _ in reply[0][1]]
        await client.xack(stream, group, *ids)
        done += len(ids)
        ended = time.monotonic()
    await client.aclose()
    return {"first_fetch": started, "last_settle": ended, "settled": done}


async def latency(url: str, stream: str, group: str) -> dict[str, object]:
    client = Redis.from_url(url)
    await client.ping()
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    samples: list[int] = []
    while not stop.is_set():
        reply: Any = await client.xreadgroup(group, "raw", {stream: ">"}, count=COUNT, block=200)
        if not reply:
            continue
        now = time.monotonic_ns()
        entries = reply[0][1]
        samples += [now - int(fields[b"payload"][:20]) for _, fields in entries]
        await client.xack(stream, group, *[entry_id for entry_id, _ in entries])
    await client.aclose()
    return {"settled": len(samples), "latencies_ns": samples}


def main() -> None:
    mode, url, stream, group = sys.argv[1:5]
    run = consume if mode == "consume" else latency
    print(json.dumps(asyncio.run(run(url, stream, group))))


if __name__ == "__main__":
    main()
