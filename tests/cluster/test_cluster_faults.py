"""Fault cases on a local Redis Cluster, with worker processes as ``pulses worker`` runs
them (tests/faults' harness): a master SIGKILLed mid-run while jobs flow (its replica is
promoted), a worker SIGKILLed, a slot moved to another master under load; and the master
of a Sentinel set-up SIGKILLed mid-run. Each writes a record like the cases of
tests/faults."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import threading
import time
from collections.abc import Callable
from typing import cast

import pytest
import redis
from redis.cluster import RedisCluster

from faults.fault_harness import (
    STREAM,
    Case,
    Workers,
    acked,
    dead,
    dead_ids,
    group_state,
    held_by,
    payload,
    publish,
    read_ledger,
    tally,
    wait_drained,
    wait_for,
)
from faults.test_kill import RERUN_BOUND_S, rerun_elsewhere
from pulses import PulsesError
from pulses_redis import RedisBroker
from pulses_redis.testing import RedisServer
from redis_cluster import LocalCluster, LocalSentinel

pytestmark = pytest.mark.cluster

BATCH = 10
PACE_S = 0.02
"""A batch of BATCH every PACE_S: 500 jobs a second, what two worker processes of four
workers each keep up with on two cores."""


class Flow:
    """Publishes batches of ``m<n>|ok|0.001`` through Pulses from a thread until
    stopped; a batch that fails (the master is gone) is not acknowledged and not
    retried, though it may have been stored. ``acknowledged`` are the ids of every
    batch publish_many returned for, ``attempted`` those of every batch."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.acknowledged: list[str] = []
        self.attempted: list[str] = []
        self.failed = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)

    def __enter__(self) -> Flow:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    async def _run(self) -> None:
        async with RedisBroker.from_url(self.url) as broker:
            n = 0
            while not self._stop.is_set():
                ids = [f"m{n + i}" for i in range(BATCH)]
                n += BATCH
                self.attempted += ids
                try:
                    await broker.publish_many(STREAM, [payload(i, "ok", "0.001") for i in ids])
                except PulsesError:
                    self.failed += 1
                else:
                    self.acknowledged += ids
                await asyncio.sleep(PACE_S)  # the pace of the flow, not a wait

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)


def _observer(cluster: LocalCluster) -> redis.Redis:
    # The fault harness reads state with single-key commands, which a cluster client
    # routes like a plain client sends them.
    node = next(n for n in cluster.nodes if n.process is not None)
    return cast("redis.Redis", RedisCluster(host="127.0.0.1", port=node.port))


def _offset(node: RedisServer) -> int:
    """How far the replication stream of ``node`` (a master or a replica) has come."""
    reply = redis.Redis(host="127.0.0.1", port=node.port, socket_timeout=5)
    try:
        info = reply.info("replication")
    finally:
        reply.close()
    return int(info.get("slave_repl_offset", info["master_repl_offset"]))


def _wait_replicated_to(master: RedisServer, replica: RedisServer) -> None:
    """Until ``replica`` has every write ``master`` acknowledged so far."""
    offset = _offset(master)
    wait_for(lambda: _offset(replica) >= offset, 5, "the replica to catch up", interval=0.002)


def _wait_replicated(cluster: LocalCluster, master: RedisServer) -> None:
    """Until the replica of cluster ``master`` has every write it acknowledged so far."""
    replica = next(
        n
        for n in cluster.nodes
        if n.process is not None
        and f"master_port:{master.port}" in cluster.cli(n, "INFO", "replication")
    )
    _wait_replicated_to(master, replica)


def _serving(cluster: LocalCluster, key: str) -> RedisServer | None:
    try:
        return cluster.master_of(key)
    except RuntimeError:  # no master that is not failing serves it yet
        return None


def _handled(w: Workers) -> int:
    return len(acked(read_ledger(w.ledger)))


def _lost(client: redis.Redis, w: Workers, ids: list[str]) -> int:
    done = set(acked(read_ledger(w.ledger))) | set(dead_ids(client))
    return len(set(ids) - done)


def test_a_master_killed_mid_run_loses_no_replicated_publish_and_strands_nothing(
    fresh_cluster: LocalCluster, workers: Callable[[str, int], Workers], seed: int
) -> None:
    """Redis replicates after it acknowledges: what a master acknowledged in the
    moment before its death may never reach the replica that takes over. Publishes the
    replica had (checked before the kill) and those after the failover must all run."""
    rng = random.Random(seed)
    with Case("cluster-master-killed", seed) as case:
        client = _observer(fresh_cluster)
        w = workers(fresh_cluster.url, 2)
        victim = fresh_cluster.master_of(STREAM)
        with Flow(fresh_cluster.url) as flow:
            wait_for(lambda: _handled(w) >= 300, 30, "the workers to handle jobs")
            time.sleep(rng.uniform(0.2, 1.0))  # a random point of the run, not a wait
            replicated = list(flow.acknowledged)
            _wait_replicated(fresh_cluster, victim)
            victim.kill()
            killed = time.monotonic()
            wait_for(
                lambda: _serving(fresh_cluster, STREAM) not in (None, victim),
                30,
                "a replica to take over the slot",
                interval=0.05,
            )
            failover = time.monotonic() - killed
            after = len(flow.acknowledged)
            handled = _handled(w)
            wait_for(lambda: _handled(w) >= handled + 300, 30, "jobs handled after the failover")
            resumed = time.monotonic() - killed
        acknowledged = flow.acknowledged
        expected = replicated + acknowledged[after:]
        drain = wait_drained(client, w.ledger, expected, 60)
        # Duplicates and unexpected ids over every attempted publish; losses over those
        # that count (below), and over every acknowledged one for the record.
        figures = {**tally(client, w.ledger, flow.attempted), "lost": _lost(client, w, expected)}
        case.figures.update(
            figures,
            acknowledged=len(acknowledged),
            counted=len(expected),
            lost_of_all_acknowledged=_lost(client, w, acknowledged),
            failed_publish_batches=flow.failed,
            failover_s=round(failover, 2),
            handling_again_s=round(resumed, 2),
            drain_s=round(drain, 2),
            stranded=group_state(client)["pending"],
        )
        assert figures["lost"] == 0
        assert figures["unexpected"] == 0
        assert case.figures["stranded"] == 0


def test_a_worker_killed_on_the_cluster_has_its_jobs_run_elsewhere_within_the_bound(
    fresh_cluster: LocalCluster, workers: Callable[[str, int], Workers], seed: int
) -> None:
    rng = random.Random(seed)
    with Case("cluster-sigkill-worker", seed) as case:
        client = _observer(fresh_cluster)
        w = workers(fresh_cluster.url, 2)
        ids = [f"m{i}" for i in range(1500)]
        publish(fresh_cluster.url, [payload(i, "ok", "0.01") for i in ids])
        wait_for(lambda: _handled(w) >= 100, 30, "the workers to handle jobs")
        time.sleep(rng.uniform(0.1, 0.5))  # a random point of the run, not a wait
        victim = wait_for(
            lambda: next(
                (p.pid for p in w.procs if p.poll() is None and held_by(client, p.pid)), None
            ),
            20,
            "a worker holding messages",
            interval=0.01,
        )
        os.kill(victim, signal.SIGKILL)
        killed, killed_wall = time.monotonic(), time.time()
        wait_for(lambda: dead(victim), 5, f"pid {victim} to die", interval=0.005)
        held = held_by(client, victim)
        wait_for(
            lambda: rerun_elsewhere(client, w, held, victim, killed_wall),
            30,
            f"the messages of killed pid {victim} to run again elsewhere",
            interval=0.02,
        )
        rerun = time.monotonic() - killed
        w.start()  # its replacement, as a service manager would start one
        drain = wait_drained(client, w.ledger, ids, 120)
        figures = tally(client, w.ledger, ids)
        case.figures.update(
            figures, in_flight_at_kill=len(held), rerun_s=round(rerun, 3), drain_s=round(drain, 2)
        )
        assert figures["lost"] == 0
        assert figures["unexpected"] == 0
        assert figures["duplicates"] <= len(held)
        assert rerun <= RERUN_BOUND_S


def test_a_slot_moved_to_another_master_under_load_loses_nothing(
    fresh_cluster: LocalCluster, workers: Callable[[str, int], Workers], seed: int
) -> None:
    """The stream's slot and every key in it (the stream, its retry stream, heartbeats,
    counters) move to another master, one key at a time, while jobs are published and
    handled: commands meanwhile get ASK or TRYAGAIN."""
    rng = random.Random(seed)
    with Case("cluster-reshard", seed) as case:
        client = _observer(fresh_cluster)
        w = workers(fresh_cluster.url, 2)
        source = fresh_cluster.master_of(STREAM)
        target = next(m for m in fresh_cluster.masters() if m is not source)
        with Flow(fresh_cluster.url) as flow:
            wait_for(lambda: _handled(w) >= 300, 30, "the workers to handle jobs")
            time.sleep(rng.uniform(0.2, 1.0))  # a random point of the run, not a wait
            started = time.monotonic()
            fresh_cluster.move_slot(fresh_cluster.slot_of(STREAM), target, batch=1)
            moved = time.monotonic() - started
            assert fresh_cluster.master_of(STREAM) is target
            handled = _handled(w)
            wait_for(lambda: _handled(w) >= handled + 300, 30, "jobs handled after the move")
        drain = wait_drained(client, w.ledger, flow.acknowledged, 60)
        figures = {
            **tally(client, w.ledger, flow.attempted),
            "lost": _lost(client, w, flow.acknowledged),
        }
        case.figures.update(
            figures,
            failed_publish_batches=flow.failed,
            move_s=round(moved, 2),
            drain_s=round(drain, 2),
            stranded=group_state(client)["pending"],
        )
        assert figures["lost"] == 0
        assert figures["unexpected"] == 0
        assert case.figures["stranded"] == 0


def test_a_sentinel_master_killed_mid_run_loses_no_replicated_publish_and_strands_nothing(
    fresh_sentinel: LocalSentinel, workers: Callable[[str, int], Workers], seed: int
) -> None:
    rng = random.Random(seed)
    sentinel = fresh_sentinel
    with Case("sentinel-master-killed", seed) as case:
        # Read after the failover only: the replica is the master then.
        client = redis.Redis(host="127.0.0.1", port=sentinel.replica.port, socket_timeout=5)
        w = workers(sentinel.url, 2)
        with Flow(sentinel.url) as flow:
            wait_for(lambda: _handled(w) >= 300, 30, "the workers to handle jobs")
            time.sleep(rng.uniform(0.2, 1.0))  # a random point of the run, not a wait
            replicated = list(flow.acknowledged)
            _wait_replicated_to(sentinel.master, sentinel.replica)
            sentinel.master.kill()
            killed = time.monotonic()
            wait_for(
                lambda: sentinel.master_port() == sentinel.replica.port,
                30,
                "the Sentinels to promote the replica",
                interval=0.05,
            )
            failover = time.monotonic() - killed
            after = len(flow.acknowledged)
            handled = _handled(w)
            wait_for(lambda: _handled(w) >= handled + 300, 30, "jobs handled after the failover")
            resumed = time.monotonic() - killed
        expected = replicated + flow.acknowledged[after:]
        drain = wait_drained(client, w.ledger, expected, 60)
        figures = {**tally(client, w.ledger, flow.attempted), "lost": _lost(client, w, expected)}
        case.figures.update(
            figures,
            acknowledged=len(flow.acknowledged),
            counted=len(expected),
            lost_of_all_acknowledged=_lost(client, w, flow.acknowledged),
            failed_publish_batches=flow.failed,
            failover_s=round(failover, 2),
            handling_again_s=round(resumed, 2),
            drain_s=round(drain, 2),
            stranded=group_state(client)["pending"],
        )
        client.close()
        assert figures["lost"] == 0
        assert figures["unexpected"] == 0
        assert case.figures["stranded"] == 0
