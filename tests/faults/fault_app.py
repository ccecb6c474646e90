"""The app every fault case runs in its worker processes (``python -m pulses worker
fault_app:app``), configured by environment variables so one module serves every case.

Settings not given in the environment take the tuned values most cases use (claim_idle
1 s, MAX_IN_FLIGHT 8, ...), or with ``FAULT_DEFAULTS=1`` the library's own defaults.

A payload is ``<id>|<kind>|<arg>`` (anything after a second ``|`` is padding); a payload
that does not parse (foreign entries, binary payloads) is recorded by its entry id, with
the fields, headers and delivery count the handler saw, and acked. Each call appends one
JSON line at its start (``S``) and one at its end (``E``) to the ledger with
``O_APPEND``: whole lines, and the file keeps what a SIGKILLed process wrote.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import signal
import time
from typing import Any

from pulses import Ack, App, Broker, Context, Envelope, Handler, Outcome, Retention, Retry
from pulses_redis import RedisBroker

_ENV = os.environ
LEDGER = os.open(_ENV.get("LEDGER", "ledger.jsonl"), os.O_WRONLY | os.O_APPEND | os.O_CREAT)
START_RECORDS = _ENV.get("FAULT_START_RECORDS", "1") == "1"
DEFAULTS = _ENV.get("FAULT_DEFAULTS") == "1"
PID = os.getpid()


def _setting(name: str, tuned: str | None) -> str | None:
    """The environment's value; else the tuned one, or None (the library's default)."""
    return _ENV.get(name) or (None if DEFAULTS else tuned)


def _record(event: str, msg: Envelope, **extra: Any) -> None:
    line = {"ev": event, "pid": PID, "eid": msg.id, "d": msg.deliveries, "t": time.time()}
    if msg.suspect:
        line["sus"] = True
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


def _fields(msg: Envelope) -> list[list[str]] | None:
    """The entry's fields as text, for entries small enough to write to the ledger."""
    if sum(len(part) for part in msg.raw) > 4096:
        return None
    return [[k.decode(errors="replace"), v.decode(errors="replace")] for k, v in msg.fields]


class Faulty(Handler[Broker[Any]]):
    """Does what each payload says: ok, raise, die, hang or retry."""

    STREAMS = (_ENV.get("FAULT_STREAM", "jobs"),)
    TIMEOUT = float(_ENV["FAULT_TIMEOUT"]) if _ENV.get("FAULT_TIMEOUT") else None

    async def handle(self, ctx: Context[Broker[Any]], msg: Envelope) -> Outcome:
        parsed = _parse(msg.payload)
        if parsed is None:
            digest = hashlib.sha256(msg.payload).hexdigest()
            _record(
                "E",
                msg,
                id=msg.id,
                size=len(msg.payload),
                sha=digest,
                raw=len(msg.raw),
                fields=_fields(msg),
                headers=dict(msg.headers),
            )
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


# Class attributes set only where a value is chosen: the others keep Handler's defaults.
for _attr, (_name, _tuned) in {
    "WORKERS": ("FAULT_WORKERS", "4"),
    "MAX_IN_FLIGHT": ("FAULT_MAX_IN_FLIGHT", "8"),
    "MAX_DELIVERIES": ("FAULT_MAX_DELIVERIES", "10"),
    "RETRY_BACKOFF_MS": ("FAULT_BACKOFF_MS", "20"),
    "RETRY_BACKOFF_MAX_MS": ("FAULT_BACKOFF_MAX_MS", "200"),
}.items():
    if (_value := _setting(_name, _tuned)) is not None:
        setattr(Faulty, _attr, int(_value))

_app_settings: dict[str, Any] = {
    key: kind(value)
    for key, (name, tuned, kind) in {
        "claim_idle_ms": ("FAULT_CLAIM_IDLE_MS", "1000", int),
        "liveness_ms": ("FAULT_LIVENESS_MS", None, int),
        "block_ms": ("FAULT_BLOCK_MS", "200", int),
        "shutdown_timeout": ("FAULT_SHUTDOWN_TIMEOUT", "10", float),
    }.items()
    if (value := _setting(name, tuned)) is not None
}
if _ENV.get("FAULT_RETENTION"):  # "keep:interval_ms" (the CLI's --retention has no interval)
    _keep, _every = _ENV["FAULT_RETENTION"].split(":")
    _app_settings["retention"] = Retention(keep=int(_keep), interval_ms=int(_every))
_broker = RedisBroker.from_url(_ENV["PULSES_URL"])
_subscription = _broker.subscription(_ENV.get("FAULT_GROUP", "g"))
app = App(_broker, _subscription, **_app_settings).register(Faulty())
