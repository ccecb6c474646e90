"""pulses_redis.testing: the one redis-server launcher of the tests, the benchmark and users."""

from __future__ import annotations

from pathlib import Path

import pytest
import redis

from pulses_redis.testing import RedisServer, redis_server, redis_url
from redis_server import redis_server_binary

pytestmark = pytest.mark.redis


@pytest.fixture(autouse=True)
def _binary() -> None:
    redis_server_binary()  # skip, or fail under PULSES_REQUIRE_REDIS=1, without one


def _client(server: RedisServer) -> redis.Redis:
    return redis.Redis(host="127.0.0.1", port=server.port, socket_timeout=5)


def test_a_throwaway_server_answers_and_leaves_nothing_behind() -> None:
    with redis_server() as server:
        assert server.ping()
        assert server.url == f"redis://127.0.0.1:{server.port}/0"
        process, directory = server.process, server.directory
        assert process is not None
        assert directory.is_dir()
    assert process.poll() is not None
    assert not server.ping()
    assert not directory.exists()


def test_without_appendonly_a_restart_comes_back_empty() -> None:
    with redis_server() as server, _client(server) as client:
        client.set("k", "v")
        server.restart()
        assert client.get("k") is None
        assert not list(server.directory.glob("*.aof")) + list(server.directory.glob("*.rdb"))


def test_with_appendonly_writes_survive_a_kill_on_the_same_port() -> None:
    with redis_server(appendonly=True) as server, _client(server) as client:
        port = server.port
        client.set("k", "v")
        server.kill()
        assert not server.ping()
        server.start()
        assert server.port == port
        assert client.get("k") == b"v"


def test_extra_arguments_win_over_the_launchers_own() -> None:
    extra = ["--appendonly", "yes", "--maxmemory", "1mb"]
    with redis_server(extra) as server, _client(server) as client:
        assert client.config_get("appendonly") == {"appendonly": "yes"}
        assert client.config_get("maxmemory") == {"maxmemory": "1048576"}


def test_a_server_that_cannot_start_says_why(tmp_path: Path) -> None:
    server = RedisServer(redis_server_binary(), tmp_path, ["--no-such-directive", "1"])
    with pytest.raises(RuntimeError, match=r"redis-server exited(.|\n)*no-such-directive"):
        server.start()


def test_redis_url_takes_REDIS_URL_and_starts_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REDIS_URL", "redis://redis.invalid:1/0")
    monkeypatch.setenv("PATH", "")
    with redis_url() as url:
        assert url == "redis://redis.invalid:1/0"


def test_redis_url_without_REDIS_URL_starts_a_throwaway_server(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("REDIS_URL", raising=False)
    with redis_url() as url, redis.Redis.from_url(url, socket_timeout=5) as client:
        assert url.startswith("redis://127.0.0.1:")
        assert client.ping()


def test_no_redis_server_on_path_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("REDIS_URL", raising=False)
    monkeypatch.setenv("PATH", "")
    with pytest.raises(FileNotFoundError, match="no redis-server on PATH"), redis_url():
        pass
