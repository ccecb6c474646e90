"""rediss:// against a redis-server with TLS and a throwaway test CA."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from pulses import ConnectionLost
from pulses_redis import RedisBroker
from redis_server import RedisServer, redis_server_binary

pytestmark = pytest.mark.redis


def _unavailable(why: str) -> None:
    """Skip, or fail under PULSES_REQUIRE_REDIS=1 (CI): there TLS must be tested."""
    if os.environ.get("PULSES_REQUIRE_REDIS") == "1":
        pytest.fail(f"PULSES_REQUIRE_REDIS=1 but {why}", pytrace=False)
    pytest.skip(why)


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RedisServer, Path]]:
    binary = redis_server_binary()
    if shutil.which("openssl") is None:
        _unavailable("no openssl command to make a test CA with")
    d = tmp_path_factory.mktemp("tls")
    # Python 3.13 verifies strictly (VERIFY_X509_STRICT): the CA needs its key usage.
    _openssl(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
        "-days",
        "2",
        "-subj",
        "/CN=Pulses test CA",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
        cwd=d,
    )
    _openssl(
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=localhost",
        cwd=d,
    )
    (d / "ext").write_text(
        "subjectAltName=DNS:localhost,IP:127.0.0.1\n"
        "keyUsage=critical,digitalSignature,keyEncipherment\n"
        "extendedKeyUsage=serverAuth\n"
        "authorityKeyIdentifier=keyid,issuer\n"
    )
    _openssl(
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.crt",
        "-days",
        "2",
        "-extfile",
        "ext",
        cwd=d,
    )
    plain = RedisServer(binary, d)
    tls = RedisServer(binary, d)  # only for its free port
    plain.extra = [
        "--tls-port",
        str(tls.port),
        "--tls-cert-file",
        "server.crt",
        "--tls-key-file",
        "server.key",
        "--tls-ca-cert-file",
        "ca.crt",
        "--tls-auth-clients",
        "no",
    ]
    try:
        plain.start()
    except RuntimeError as error:
        _unavailable(f"this redis-server does not start with TLS (built without it?): {error}")
    try:
        yield tls, d
    finally:
        plain.stop()


async def test_rediss_with_the_servers_ca_works(tls_server: tuple[RedisServer, Path]) -> None:
    tls, d = tls_server
    url = f"rediss://127.0.0.1:{tls.port}/0?ssl_ca_certs={d / 'ca.crt'}"
    async with await RedisBroker.connect(url) as broker:
        consumer = broker.consumer(broker.subscription("g"), ["tls"], handler="H")
        await consumer.ensure()
        await broker.publish("tls", b"over TLS")
        assert [e.payload for e in await consumer.fetch(1, 1000)] == [b"over TLS"]


async def test_rediss_refuses_a_certificate_it_cannot_verify(
    tls_server: tuple[RedisServer, Path],
) -> None:
    tls, _ = tls_server
    async with await RedisBroker.connect(f"rediss://127.0.0.1:{tls.port}/0") as broker:
        with pytest.raises(ConnectionLost, match=r"(?i)certificate"):
            await broker.publish("tls", b"x")
