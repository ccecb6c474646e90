"""A real Redis for your tests: ``REDIS_URL``, or a throwaway ``redis-server``.

The throwaway server is the ``redis-server`` on your ``PATH``, listening on a free
127.0.0.1 port, working in a temporary directory that is removed afterwards, and stopped
by its pid. It keeps nothing on disk unless asked (``appendonly=True``)::

    from pulses_redis import RedisBroker
    from pulses_redis.testing import redis_server

    with redis_server() as server:
        broker = await RedisBroker.connect(server.url)

A pytest fixture for a whole session::

    @pytest.fixture(scope="session")
    def redis_url() -> Iterator[str]:
        with pulses_redis.testing.redis_url() as url:
            yield url

A local Redis Cluster (three masters, a replica each) of such servers, created with
``redis-cli --cluster create``::

    with redis_cluster() as cluster:
        broker = await RedisBroker.connect(cluster.url)  # redis+cluster://...

And a master with a replica, watched by three Sentinels::

    with redis_sentinel() as sentinel:
        broker = await RedisBroker.connect(sentinel.url)  # redis+sentinel://.../mymaster/0

This module imports neither redis-py nor pytest.
"""

from __future__ import annotations

import os
import random
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

__all__ = [
    "LocalCluster",
    "LocalSentinel",
    "RedisServer",
    "find_redis_server",
    "redis_cluster",
    "redis_sentinel",
    "redis_server",
    "redis_url",
]

_LOG = "redis-server.log"


def find_redis_server() -> str:
    """The path of the ``redis-server`` on ``PATH``; ``FileNotFoundError`` if none."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise FileNotFoundError(
            "no redis-server on PATH (install Redis, or set REDIS_URL to a Redis to use)"
        )
    return binary


def _redis_cli() -> str:
    binary = shutil.which("redis-cli")
    if binary is None:
        raise FileNotFoundError("no redis-cli on PATH (it comes with redis-server)")
    return binary


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _free_cluster_port() -> int:
    """A free port whose cluster bus port (10,000 higher) is free too: at most 55535."""
    while True:
        port = random.randint(20_000, 55_535)
        with socket.socket() as s, socket.socket() as bus:
            try:
                s.bind(("127.0.0.1", port))
                bus.bind(("127.0.0.1", port + 10_000))
            except OSError:
                continue
            return port


class RedisServer:
    """One ``redis-server`` process on a free 127.0.0.1 port, working in ``directory``.

    ``extra`` are more ``redis-server`` arguments (``["--maxmemory", "10mb"]``); given
    after Pulses' own, they win. Without ``appendonly`` nothing is written to disk, so a
    ``restart()`` comes back empty, like a crashed Redis that kept nothing; with it, every
    write is fsynced to an AOF first and survives ``kill()`` and ``restart()``. The port
    stays the same across restarts, so clients can reconnect.
    """

    def __init__(
        self,
        binary: str,
        directory: Path,
        extra: Sequence[str] = (),
        *,
        appendonly: bool = False,
    ) -> None:
        self.binary = binary
        self.directory = directory
        self.extra = list(extra)
        self.appendonly = appendonly
        self.port = _free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def _args(self) -> list[str]:
        persistence = ["--appendonly", "yes", "--appendfsync", "always"]
        return [
            self.binary,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            *(persistence if self.appendonly else ["--appendonly", "no"]),
            "--dir",
            str(self.directory),
            *self.extra,
        ]

    def start(self, timeout: float = 10.0) -> None:
        """Start the server and return once it answers ``PING``; ``RuntimeError`` with the
        end of its log if it exits or stays silent for ``timeout`` seconds."""
        args = self._args()
        with open(self.directory / _LOG, "ab") as log:
            # No shell; the binary is the caller's or the one on PATH.
            self.process = subprocess.Popen(  # noqa: S603
                args, cwd=self.directory, stdout=log, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"redis-server exited with {self.process.returncode}: {' '.join(args)}\n"
                    f"{self._log_tail()}"
                )
            if self.ping():
                return
            time.sleep(0.02)
        self.stop()
        raise RuntimeError(
            f"redis-server did not answer on port {self.port} in {timeout}s\n{self._log_tail()}"
        )

    def ping(self) -> bool:
        """Whether the server answers (a server that requires a password answers too)."""
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as conn:
                conn.sendall(b"PING\r\n")
                return conn.recv(16).startswith((b"+PONG", b"-NOAUTH"))
        except OSError:
            return False

    def stop(self) -> None:
        """SIGTERM, and SIGKILL if it has not exited within five seconds."""
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)

    def kill(self) -> None:
        """SIGKILL: the server gets no chance to write anything more."""
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            process.kill()
            process.wait(timeout=5)

    def restart(self) -> None:
        """Stop and start again on the same port and directory."""
        self.stop()
        self.start()

    def _log_tail(self, lines: int = 10) -> str:
        try:
            text = (self.directory / _LOG).read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


def _start(server: RedisServer, free_port: Callable[[], int] = _free_port) -> None:
    for attempt in range(3):
        try:
            server.start()
            return
        except RuntimeError:
            if attempt == 2:
                raise
            # Another process may have taken the free port before the server bound it.
            server.port = free_port()


@contextmanager
def redis_server(extra: Sequence[str] = (), *, appendonly: bool = False) -> Iterator[RedisServer]:
    """A started :class:`RedisServer` in a temporary directory; stopped and removed on exit.

    ``FileNotFoundError`` without a ``redis-server`` on ``PATH``.
    """
    binary = find_redis_server()
    with tempfile.TemporaryDirectory(prefix="pulses-redis-") as directory:
        server = RedisServer(binary, Path(directory), extra, appendonly=appendonly)
        _start(server)
        try:
            yield server
        finally:
            server.stop()


@contextmanager
def redis_url() -> Iterator[str]:
    """``REDIS_URL`` if set (that Redis is written to: never point it at one you care
    about), else the URL of a throwaway :func:`redis_server`."""
    url = os.environ.get("REDIS_URL")
    if url:
        yield url
        return
    with redis_server() as server:
        yield server.url


class LocalCluster:
    """A Redis Cluster of :class:`RedisServer` processes on loopback: ``masters`` masters
    with ``replicas`` replicas each, every node in its own subdirectory of ``directory``.

    ``node_timeout_ms`` is Redis's ``cluster-node-timeout``: how long a master may be
    unreachable before its replica is promoted.
    """

    def __init__(
        self,
        binary: str,
        directory: Path,
        *,
        masters: int = 3,
        replicas: int = 1,
        node_timeout_ms: int = 2000,
        extra: Sequence[str] = (),
    ) -> None:
        self.replicas = replicas
        self.nodes: list[RedisServer] = []
        for i in range(masters * (1 + replicas)):
            home = directory / f"node-{i}"
            home.mkdir()
            options = [
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                "nodes.conf",
                "--cluster-node-timeout",
                str(node_timeout_ms),
                *extra,
            ]
            node = RedisServer(binary, home, options)
            node.port = _free_cluster_port()
            self.nodes.append(node)

    @property
    def url(self) -> str:
        """``redis+cluster://`` with every node as a seed."""
        return "redis+cluster://" + ",".join(f"127.0.0.1:{n.port}" for n in self.nodes) + "/"

    def start(self, timeout: float = 30.0) -> None:
        """Start every node, create the cluster and return once every node reports
        ``cluster_state:ok`` and agrees on the slots."""
        for node in self.nodes:
            _start(node, _free_cluster_port)
        # No shell; redis-cli comes from PATH like redis-server.
        created = subprocess.run(  # noqa: S603
            [
                _redis_cli(),
                "--cluster",
                "create",
                *[f"127.0.0.1:{n.port}" for n in self.nodes],
                "--cluster-replicas",
                str(self.replicas),
                "--cluster-yes",
            ],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if created.returncode != 0:
            raise RuntimeError(
                f"redis-cli --cluster create failed:\n{created.stdout}{created.stderr}"
            )
        self.wait_ok(timeout)

    def wait_ok(self, timeout: float = 30.0) -> None:
        """Until every running node reports ``cluster_state:ok``, with every slot
        served by a master that every node knows, and every replica has synced with its
        master (one that has not would refuse to take over)."""
        deadline = time.monotonic() + timeout
        while True:
            running = [n for n in self.nodes if n.process is not None]
            states = [self.info(n) for n in running]
            roles = [self.cli(n, "INFO", "replication") for n in running]
            if all(
                "cluster_state:ok" in s and "cluster_slots_ok:16384" in s for s in states
            ) and all("role:master" in r or "master_link_status:up" in r for r in roles):
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"the cluster is not ok after {timeout}s: {states}")
            time.sleep(0.1)

    def info(self, node: RedisServer) -> str:
        """``CLUSTER INFO`` of one node ('' when it does not answer)."""
        return self.cli(node, "CLUSTER", "INFO")

    def cli(self, node: RedisServer, *args: str) -> str:
        """A command sent to one node with redis-cli; its output ('' when it fails)."""
        return _cli(node, *args)

    def masters(self) -> list[RedisServer]:
        """The running nodes that are masters now (a promoted replica counts)."""
        return [
            n
            for n in self.nodes
            if n.process is not None and "role:master" in self.cli(n, "INFO", "replication")
        ]

    def node_id(self, node: RedisServer) -> str:
        return self.cli(node, "CLUSTER", "MYID").strip()

    def slot_of(self, key: str) -> int:
        running = next(n for n in self.nodes if n.process is not None)
        return int(self.cli(running, "CLUSTER", "KEYSLOT", key))

    def master_of(self, key: str) -> RedisServer:
        """The node serving ``key``'s slot now, as a running node sees it."""
        return self.master_of_slot(self.slot_of(key))

    def master_of_slot(self, slot: int) -> RedisServer:
        running = next(n for n in self.nodes if n.process is not None)
        by_port = {n.port: n for n in self.nodes}
        # CLUSTER NODES: <id> <ip:port@cport> <flags> <master> ... <slot ranges>
        for line in self.cli(running, "CLUSTER", "NODES").splitlines():
            fields = line.split()
            if "master" in fields[2] and "fail" not in fields[2] and _serves(fields, slot):
                return by_port[int(fields[1].split("@")[0].rsplit(":", 1)[1])]
        raise RuntimeError(f"no master serves slot {slot}")

    def move_slot(self, slot: int, target: RedisServer, batch: int = 10) -> None:
        """Move ``slot`` with its keys to master ``target`` while clients keep working,
        as ``redis-cli --cluster reshard`` does: IMPORTING and MIGRATING, MIGRATE the
        keys a few at a time (clients meanwhile get ASK for moved keys and TRYAGAIN for
        split multi-key commands), then the new owner on every master."""
        source = self.master_of_slot(slot)
        source_id, target_id = self.node_id(source), self.node_id(target)
        self.cli(target, "CLUSTER", "SETSLOT", str(slot), "IMPORTING", source_id)
        self.cli(source, "CLUSTER", "SETSLOT", str(slot), "MIGRATING", target_id)
        while keys := self.cli(source, "CLUSTER", "GETKEYSINSLOT", str(slot), str(batch)).split():
            moved = self.cli(
                source, "MIGRATE", "127.0.0.1", str(target.port), "", "0", "5000", "KEYS", *keys
            )
            if moved.strip() not in ("OK", "NOKEY"):
                raise RuntimeError(f"MIGRATE of slot {slot} failed: {moved!r}")
        for node in [target, source, *self.masters()]:
            self.cli(node, "CLUSTER", "SETSLOT", str(slot), "NODE", target_id)

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()


def _serves(fields: list[str], slot: int) -> bool:
    """Whether a line of CLUSTER NODES lists ``slot`` among its ranges."""
    for served in fields[8:]:
        first, _, last = served.partition("-")
        if first.isdigit() and int(first) <= slot <= int(last or first):
            return True
    return False


@contextmanager
def redis_cluster(
    *, masters: int = 3, replicas: int = 1, node_timeout_ms: int = 2000
) -> Iterator[LocalCluster]:
    """A started :class:`LocalCluster` in a temporary directory; stopped and removed on exit.

    ``FileNotFoundError`` without ``redis-server`` and ``redis-cli`` on ``PATH``.
    """
    binary = find_redis_server()
    _redis_cli()
    with tempfile.TemporaryDirectory(prefix="pulses-cluster-") as directory:
        cluster = LocalCluster(
            binary,
            Path(directory),
            masters=masters,
            replicas=replicas,
            node_timeout_ms=node_timeout_ms,
        )
        try:
            cluster.start()
            yield cluster
        finally:
            cluster.stop()


class _SentinelProcess(RedisServer):
    """``redis-server sentinel.conf --sentinel``: Sentinel rewrites its config file."""

    def __init__(self, binary: str, directory: Path, monitor: str) -> None:
        super().__init__(binary, directory)
        (directory / "sentinel.conf").write_text(monitor)

    def _args(self) -> list[str]:
        conf = str(self.directory / "sentinel.conf")
        return [self.binary, conf, "--sentinel", "--port", str(self.port), "--bind", "127.0.0.1"]


class LocalSentinel:
    """A master and its replica, watched by three Sentinels (quorum two) as ``service``;
    a master silent for ``down_after_ms`` is failed over to the replica."""

    def __init__(
        self, binary: str, directory: Path, *, service: str = "mymaster", down_after_ms: int = 1000
    ) -> None:
        self.service = service
        self.down_after_ms = down_after_ms
        for name in ("master", "replica", "sentinel-0", "sentinel-1", "sentinel-2"):
            (directory / name).mkdir()
        self.master = RedisServer(binary, directory / "master")
        self.replica = RedisServer(binary, directory / "replica")
        self.sentinels: list[RedisServer] = []
        self._binary = binary
        self._directory = directory

    @property
    def url(self) -> str:
        hosts = ",".join(f"127.0.0.1:{s.port}" for s in self.sentinels)
        return f"redis+sentinel://{hosts}/{self.service}/0"

    def start(self, timeout: float = 30.0) -> None:
        _start(self.master)
        self.replica.extra = ["--replicaof", "127.0.0.1", str(self.master.port)]
        _start(self.replica)
        monitor = (
            f"sentinel monitor {self.service} 127.0.0.1 {self.master.port} 2\n"
            f"sentinel down-after-milliseconds {self.service} {self.down_after_ms}\n"
            f"sentinel failover-timeout {self.service} {max(3000, 3 * self.down_after_ms)}\n"
        )
        for i in range(3):
            sentinel = _SentinelProcess(self._binary, self._directory / f"sentinel-{i}", monitor)
            _start(sentinel)
            self.sentinels.append(sentinel)
        deadline = time.monotonic() + timeout
        # Ready once the replica has synced and every Sentinel knows the others.
        while not (
            "master_link_status:up" in _cli(self.replica, "INFO", "replication")
            and all(
                "num-other-sentinels\n2" in _cli(s, "SENTINEL", "MASTER", self.service)
                for s in self.sentinels
            )
        ):
            if time.monotonic() > deadline:
                raise RuntimeError(f"the Sentinel set-up is not ready after {timeout}s")
            time.sleep(0.1)

    def cli(self, server: RedisServer, *args: str) -> str:
        """A command sent to one server with redis-cli; its output ('' when it fails)."""
        return _cli(server, *args)

    def master_port(self) -> int:
        """The master's port as the Sentinels report it now."""
        reply = _cli(self.sentinels[0], "SENTINEL", "GET-MASTER-ADDR-BY-NAME", self.service)
        return int(reply.split()[1])

    def stop(self) -> None:
        for server in [*self.sentinels, self.replica, self.master]:
            server.stop()


def _cli(node: RedisServer, *args: str) -> str:
    """A command sent to one server with redis-cli; its output ('' when it fails)."""
    done = subprocess.run(  # noqa: S603
        [_redis_cli(), "-h", "127.0.0.1", "-p", str(node.port), *args],
        capture_output=True,
        text=True,
        timeout=10,
        check=False,
    )
    return done.stdout if done.returncode == 0 else ""


@contextmanager
def redis_sentinel(*, down_after_ms: int = 1000) -> Iterator[LocalSentinel]:
    """A started :class:`LocalSentinel` in a temporary directory; stopped and removed
    on exit. ``FileNotFoundError`` without ``redis-server`` and ``redis-cli``."""
    binary = find_redis_server()
    _redis_cli()
    with tempfile.TemporaryDirectory(prefix="pulses-sentinel-") as directory:
        sentinel = LocalSentinel(binary, Path(directory), down_after_ms=down_after_ms)
        try:
            sentinel.start()
            yield sentinel
        finally:
            sentinel.stop()
