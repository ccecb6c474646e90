"""Bad input end to end: foreign entries mid-batch, foreign fields that look like our
bookkeeping, payloads from 0 bytes to 64 MiB, a payload bigger than the server accepts,
stream names no broker could use, a key of the wrong type, an ACL user lacking a
command, a wrong password; a canary password never shows; nothing unpickles."""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import pulses
from faults.fault_harness import (
    SETTINGS,
    AofRedis,
    Case,
    Workers,
    case_name,
    cpu_seconds,
    dead_letters,
    read_ledger,
    wait_drained,
    wait_for,
)
from pulses import Ack, App, Broker, Context, Envelope, Handler, Outcome
from pulses.cli import EXIT
from pulses_memory import MemoryBroker
from pulses_redis import RedisBroker
from redis_server import redis_server_binary

pytestmark = pytest.mark.redis

CANARY = "canary-Pw-7c1e"
UNPICKLERS = re.compile(
    r"^\s*(import|from)\s+(c?pickle|_pickle|dill|cloudpickle|marshal|shelve)\b", re.M
)
"""What could turn bytes from Redis into objects; a comment on pickling is no such thing."""
FOREIGN: list[dict[bytes, bytes] | list[tuple[bytes, bytes]]] = [
    {b"foo": b"bar"},
    {b"payload": b"\xff\xfe not utf-8"},
    [(b"payload", b"first"), (b"payload", b"second")],
    {b"headers": b"not json", b"payload": b"x"},
    {b"headers": b'{"a": 1}', b"payload": b"y"},
    {b"deliveries": b"-5", b"payload": b"z"},
    {b"enqueued": b"abc"},
    {b"\xff": b"\x00"},
    {b"payload": b""},
]
SIZES = [0, 1, 1024, 1 << 20, 16 << 20, 64 << 20]


def test_foreign_entries_and_payload_sizes(
    aof_redis: AofRedis, workers: Callable[..., Workers], seed: int
) -> None:
    client = aof_redis.client()
    rng = __import__("random").Random(seed)
    with Case("bad-input-entries", seed) as case:
        w = workers(aof_redis.url, FAULT_MAX_IN_FLIGHT="16")
        w.start()
        wait_for(lambda: client.exists("jobs"), 20, "the worker to create the group")
        expected: dict[str, tuple[int, str] | None] = {}
        pipe = client.pipeline(transaction=False)
        for i in range(40):  # foreign entries in the middle of batches of ours
            if i % 4 == 0:
                fields = FOREIGN[(i // 4) % len(FOREIGN)]
                items = fields.items() if isinstance(fields, dict) else fields
                flat: list[bytes] = [x for pair in items for x in pair]
                pipe.execute_command("XADD", "jobs", "*", *flat)  # type: ignore[no-untyped-call]  # untyped in redis-py
            else:
                pipe.xadd("jobs", {"payload": f"p{i}|ok|".encode()})
        ids = [i.decode() for i in pipe.execute()]
        expected.update(dict.fromkeys(ids))
        bodies = [b"\xff" + rng.randbytes(max(0, n - 1)) if n else b"" for n in SIZES]
        published = asyncio.run(_publish_each(aof_redis.url, bodies))
        for entry_id, body in zip(published, bodies, strict=True):
            expected[entry_id] = (len(body), hashlib.sha256(body).hexdigest())
        wait_drained(client, w.ledger, [], 120)
        records = read_ledger(w.ledger)
        done = {r["eid"]: r for r in records if r["ev"] == "E"}
        exact = [
            eid
            for eid, want in expected.items()
            if want is not None and (done[eid]["size"], done[eid]["sha"]) == want
        ]
        case.figures.update(
            entries=len(expected),
            foreign=sum(1 for i in range(40) if i % 4 == 0),
            handled=len(set(done) & set(expected)),
            sizes=SIZES,
            byte_exact=len(exact),
            runs=len([r for r in records if r["ev"] == "E"]),
        )
        assert set(done) == set(expected)  # every entry handled, foreign ones too
        assert case.figures["runs"] == len(expected)  # each once: no batch broke
        assert len(exact) == len(SIZES)


LOOKALIKES: list[list[str]] = [
    ["payload", "p", "deliveries", "50", "headers", '{"trace": "t1"}'],
    ["payload", "q", "deliveries", "9", "enqueued", "1", "headers", "{}", "attempts", "3"],
    ["payload", "look|ok|", "deliveries", "50", "headers", '{"a": "b"}'],
]
"""Foreign entries whose fields look like the bookkeeping Pulses once kept unprefixed."""


@pytest.mark.parametrize("settings", ["defaults", "tuned"])
def test_foreign_fields_that_look_like_ours_reach_the_handler(
    aof_redis: AofRedis, workers: Callable[..., Workers], seed: int, settings: str
) -> None:
    """Issue 9: ``XADD s * payload p deliveries 50`` was dead-lettered without running,
    its foreign ``deliveries`` read as our own count."""
    client = aof_redis.client()
    with Case(case_name("foreign-lookalike-fields", settings), seed) as case:
        w = workers(aof_redis.url, **SETTINGS[settings])
        w.start()
        wait_for(lambda: client.exists("jobs"), 20, "the worker to create the group")
        cli = Path(redis_server_binary()).with_name("redis-cli")
        first = subprocess.run(
            [cli, "-p", str(aof_redis.port), "XADD", "jobs", "*", *LOOKALIKES[0]],
            capture_output=True,
            text=True,
            check=True,
        )
        written = {first.stdout.strip(): LOOKALIKES[0]}
        for fields in LOOKALIKES[1:]:
            entry_id = client.execute_command("XADD", "jobs", "*", *fields)  # type: ignore[no-untyped-call]  # untyped in redis-py
            written[entry_id.decode()] = fields
        wait_drained(client, w.ledger, ["look"], 30)
        records = read_ledger(w.ledger)
        ends = {r["eid"]: r for r in records if r["ev"] == "E"}
        seen = {
            eid: (r.get("fields"), r.get("headers"), r["d"])
            for eid, r in ends.items()
            if eid in written
        }
        case.figures.update(
            settings=settings,
            handled=len(seen),
            dead_lettered=len(dead_letters(client)),
            runs=sum(1 for r in records if r["ev"] == "E"),
            deliveries_seen=sorted(r["d"] for r in ends.values()),
        )
        assert not dead_letters(client)
        assert case.figures["runs"] == len(written)  # each once
        for eid, fields in written.items():
            if fields[1] == "look|ok|":  # ours in shape: the handler ran it as a job
                assert ends[eid]["d"] == 1
                continue
            pairs = [[k, v] for k, v in zip(fields[::2], fields[1::2], strict=True)]
            assert seen[eid] == (pairs, {}, 1), eid  # every field, none read as ours


BAD_STREAMS = {
    "a}b": "has a '}' but no hash tag",
    "{}x": "has a '}' but no hash tag",
    # Not UTF-8 on the command line: Python reads it as a lone surrogate.
    "x\udcffy": "not valid Unicode",
}


class _Named(Handler[Broker[Any]]):
    async def handle(self, ctx: Context[Broker[Any]], msg: Envelope) -> Outcome:
        return Ack()


def test_bad_stream_names_are_refused_at_the_first_call(
    aof_redis: AofRedis, workers: Callable[..., Workers], seed: int
) -> None:
    """Issue 9: ``a}b`` and ``{}x`` were taken by ``publish`` and ``register`` and then
    refused by ``run``: what was published could never be consumed. A lone surrogate
    raised a bare UnicodeEncodeError on Redis. The broker's own calls are in the
    conformance suite; here: App.register on both brokers, ``pulses publish`` and
    ``pulses worker``."""
    client = aof_redis.client()
    with Case("bad-names", seed) as case:
        errors: dict[str, list[str]] = {}
        for bad, rule in BAD_STREAMS.items():
            brokers: list[Broker[Any]] = [MemoryBroker(), RedisBroker.from_url(aof_redis.url)]
            for broker in brokers:
                handler = type("Named", (_Named,), {"STREAMS": (bad,)})()
                with pytest.raises(pulses.ConfigurationError, match=r"Named\.STREAMS") as info:
                    App(broker, broker.subscription("g")).register(handler)
                assert rule in str(info.value)
            publish = subprocess.run(
                [sys.executable, "-m", "pulses", "publish", aof_redis.url, bad, "x"],
                capture_output=True,
                timeout=60,
            )
            w = workers(aof_redis.url, FAULT_STREAM=bad)
            worker = w.start()
            worker.wait(60)
            said = [publish.stderr.decode(errors="replace"), w.log(0)]
            errors[repr(bad)] = [text.strip().splitlines()[-1][:200] for text in said]
            assert publish.returncode == EXIT["config"], said[0]
            assert worker.returncode == EXIT["config"], said[1]
            assert "stream" in said[0]
            assert "Faulty.STREAMS" in said[1]
            assert all(rule in text for text in said), said
        case.figures.update(errors=errors, keys_written=len(client.keys()))
        assert client.keys() == []  # nothing was written under any of these names


async def _publish_each(url: str, bodies: list[bytes]) -> list[str]:
    async with RedisBroker.from_url(url) as broker:
        return [await broker.publish("jobs", body) for body in bodies]


def test_payload_bigger_than_the_server_accepts(aof_redis: AofRedis, seed: int) -> None:
    client = aof_redis.client()
    client.config_set("proto-max-bulk-len", 1 << 20)

    async def go() -> tuple[str, str]:
        async with RedisBroker.from_url(aof_redis.url) as broker:
            with pytest.raises(pulses.PulsesError) as info:
                await broker.publish("big", b"x" * (2 << 20))
            after = await broker.publish("big", b"small")  # the pool is healthy
            return f"{type(info.value).__name__}: {info.value}", after

    with Case("bad-input-too-big", seed) as case:
        error, after = go_result = asyncio.run(go())
        case.figures.update(error=error[:300], published_after=bool(after))
        assert "big" in error  # names the stream
        assert go_result[1]


def worker_cpu(proc: subprocess.Popen[bytes], seconds: float) -> float:
    before = cpu_seconds(proc.pid)
    time.sleep(seconds)  # measuring CPU over a window
    return (cpu_seconds(proc.pid) - before) / seconds


def test_wrong_type_key_and_missing_acl_command(
    aof_redis: AofRedis, workers: Callable[..., Workers], seed: int
) -> None:
    client = aof_redis.client()
    client.set("wt", "a string, not a stream")
    client.acl_setuser(
        "limited",
        enabled=True,
        passwords=[f"+{CANARY}"],
        keys=["*"],
        commands=["+@all", "-xclaim"],
    )
    with Case("bad-input-wrongtype-acl", seed) as case:
        wrong = workers(aof_redis.url, FAULT_STREAM="wt")
        wt = wrong.start()
        wait_for(lambda: "holds a string" in wrong.log(0), 20, "the wrong-type error")
        wt_cpu = worker_cpu(wt, 2)
        client.delete("wt")
        client.xadd("wt", {"payload": b"after|ok|"})
        wait_for(
            lambda: any(r.get("id") == "after" for r in read_ledger(wrong.ledger)),
            20,
            "the worker to carry on once the key is a stream",
        )

        url = f"redis://limited:{CANARY}@127.0.0.1:{aof_redis.port}/0"
        acl = workers(url, FAULT_CLAIM_IDLE_MS="600")
        limited = acl.start()
        wait_for(lambda: client.exists("jobs"), 20, "the limited worker to create the group")
        client.xadd("jobs", {"payload": b"slow|ok|1.0"})
        wait_for(lambda: "xclaim" in acl.log(0).lower(), 20, "the missing command to be named")
        acl_cpu = worker_cpu(limited, 2)
        wait_drained(client, acl.ledger, ["slow"], 20)
        logs = wrong.logs() + acl.logs()
        case.figures.update(
            wrong_type_error=next(
                line for line in wrong.log(0).splitlines() if "holds a string" in line
            )[-200:],
            wrong_type_cpu=round(wt_cpu, 3),
            acl_error=next(line for line in acl.log(0).splitlines() if "xclaim" in line.lower())[
                -200:
            ],
            acl_cpu=round(acl_cpu, 3),
            canary_in_logs=CANARY in logs,
        )
        assert wt_cpu < 0.2
        assert acl_cpu < 0.2
        assert CANARY not in logs


def test_wrong_password_and_canary(case_dir: Path, aof_redis: AofRedis, seed: int) -> None:
    client = aof_redis.client()
    client.acl_setuser("app", enabled=True, passwords=["+right"], keys=["*"], commands=["+@all"])
    url = f"redis://app:{CANARY}@127.0.0.1:{aof_redis.port}/0"
    with Case("bad-input-password", seed) as case:
        env = {**os.environ, "PULSES_URL": url, "PYTHONPATH": str(Path(__file__).parent)}
        env["LEDGER"] = str(case_dir / "ledger.jsonl")
        check = subprocess.run(
            [sys.executable, "-m", "pulses", "worker", "fault_app:app", "--check", "-v"],
            cwd=case_dir,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        info = subprocess.run(
            [sys.executable, "-m", "pulses", "info", url],
            cwd=case_dir,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        shown = repr(RedisBroker.from_url(url)) + str(RedisBroker.from_url(url).url)
        output = check.stdout + check.stderr + info.stdout + info.stderr + shown
        sources = [
            p
            for pkg in (pulses.__file__, sys.modules["pulses_redis"].__file__)
            for p in Path(str(pkg)).parent.rglob("*.py")
        ]
        pickles = [str(p) for p in sources if UNPICKLERS.search(p.read_text())]
        case.figures.update(
            check_exit=check.returncode,
            info_exit=info.returncode,
            check_error=check.stderr.strip().splitlines()[-1][:300] if check.stderr else "",
            canary_in_output=CANARY in output,
            modules_importing_an_unpickler=pickles,
        )
        assert check.returncode != 0
        assert info.returncode != 0
        assert "credentials" in check.stderr or "WRONGPASS" in check.stderr
        assert CANARY not in output
        assert not pickles
