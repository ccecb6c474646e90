"""The app every fault case runs in its worker processes (``python -m pulses worker
fault_app:app``), configured by environment variables so one module serves every case.

A payload is ``<id>|<kind>|<arg>`` (anything after a second ``|`` is padding); a payload
that does not parse (foreign entries, binary payloads) is recorded by its entry id and
acked. Each call appends one JSON line at its start (``S``) and one at its end (``E``)
to the ledger with ``O_APPEND``: whole lines, and the file keeps what a SIGKILLed
process wrote.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import signal
import time
from typing import Any

from pulses import Ack, App, Broker, Context, Envelope, Handler, Outcome, Retry
from pulses_redis import RedisBroker

_ENV = os.environ
LEDGER = os.open(_ENV.get("LEDGER", "ledger.jsonl"), os.O_WRONLY | os.O_APPEND | os.O_CREAT)
START_RECORDS = _ENV.get("FAULT_START_RECORDS", "1") == "1"
PID = os.getpid()


def _record(event: str, msg: Envelope, **extra: Any) -> None:
    line = {"ev": event, "pid": PID, "eid": msg.id, "d": msg.deliveries, "t": time.time()}
    line.update(extra)
    os.write(LEDGER, json.dumps(line, separators=(",", ":")).encode() + b"\n")


def _parse(payload: bytes) -> tuple[str, str, str] | None:
    parts = payload.split(b"|", 3)
    if len(parts) < 3 or len(payload) > 4096:
        return None
    try:
        return parts[0].decode(), parts[1].decode(), parts[2].decode()
    except UnicodeDecodeError:
        return None


class Faulty(Handler[Broker[Any]]):
    """Does what each payload says: ok, raise, die, hang or retry."""

    STREAMS = (_ENV.get("FAULT_STREAM", "jobs"),)
    WORKERS = int(_ENV.get("FAULT_WORKERS", "4"))
    MAX_IN_FLIGHT = int(_ENV.get("FAULT_MAX_IN_FLIGHT", "8"))
    MAX_DELIVERIES = int(_ENV.get("FAULT_MAX_DELIVERIES", "10"))
    RETRY_BACKOFF_MS = int(_ENV.get("FAULT_BACKOFF_MS", "20"))
    RETRY_BACKOFF_MAX_MS = max(RETRY_BACKOFF_MS, 200)
    TIMEOUT = float(_ENV["FAULT_TIMEOUT"]) if _ENV.get("FAULT_TIMEOUT") else None

    async def handle(self, ctx: Context[Broker[Any]], msg: Envelope) -> Outcome:
        parsed = _parse(msg.payload)
        if parsed is None:
            digest = hashlib.sha256(msg.payload).hexdigest()
            _record("E", msg, id=msg.id, size=len(msg.payload), sha=digest, raw=len(msg.raw))
            return Ack()
        ident, kind, arg = parsed
        lat = time.time() - msg.enqueued_ms / 1000
        if START_RECORDS:
            _record("S", msg, id=ident, lat=lat)
        if kind == "raise":
            raise RuntimeError(f"poison {ident} raised on delivery {msg.deliveries}")
        if kind == "die":
            os.kill(PID, signal.SIGKILL)
        if kind == "hang":
            await asyncio.sleep(3600)
        if kind == "ok" and arg:
            await asyncio.sleep(float(arg))
        if kind == "retry" and msg.deliveries == 1:
            _record("E", msg, id=ident, out="retry")
            return Retry(after_ms=int(arg))
        _record("E", msg, id=ident, out="ack", lat=lat)
        return Ack()


_broker = RedisBroker.from_url(_ENV["PULSES_URL"])
app = App(
    _broker,
    _broker.subscription(_ENV.get("FAULT_GROUP", "g")),
    claim_idle_ms=int(_ENV.get("FAULT_CLAIM_IDLE_MS", "1000")),
    block_ms=int(_ENV.get("FAULT_BLOCK_MS", "200")),
    shutdown_timeout=float(_ENV.get("FAULT_SHUTDOWN_TIMEOUT", "10")),
).register(Faulty())
