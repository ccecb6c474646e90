"""The broker's calls to the NATS server: JetStream API requests, acknowledged publishes,
and the one place where nats-py's exceptions become Pulses errors."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import nats.errors
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from pulses import BrokerError, ConnectionLost

__all__ = ["ApiError", "Wire", "mapped"]

REPLY_TIMEOUT = 5.0
"""Seconds to wait for the server's answer to a request or an acknowledged publish."""

STREAM_NOT_FOUND = 10059
CONSUMER_NOT_FOUND = 10014
NO_MESSAGE_FOUND = 10037
WRONG_LAST_SEQUENCE = 10071


class ApiError(BrokerError):
    """The JetStream API refused a request; ``code`` is its ``err_code``."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


@contextlib.contextmanager
def mapped(what: str) -> Iterator[None]:
    """Turn nats-py's and the socket's exceptions into Pulses errors that say ``what``."""
    try:
        yield
    except (nats.errors.Error, OSError, TimeoutError) as exc:
        detail = str(exc) or type(exc).__name__
        raise ConnectionLost(f"cannot {what}: {detail}") from exc


class Wire:
    """One NATS connection, and a private inbox that collects publish acknowledgements,
    so a batch of publishes is sent in order in one go and then awaited together."""

    def __init__(self, nc: Client) -> None:
        self.nc = nc
        self._inbox = nc.new_inbox()
        self._tokens = itertools.count()
        self._waiting: dict[str, asyncio.Future[Msg]] = {}
        self._sub: Subscription | None = None

    async def start(self) -> None:
        self._sub = await self.nc.subscribe(f"{self._inbox}.*", cb=self._answered)

    async def _answered(self, msg: Msg) -> None:
        future = self._waiting.pop(msg.subject.rpartition(".")[2], None)
        if future is not None and not future.done():
            future.set_result(msg)

    async def api(self, call: str, body: Mapping[str, Any] | None, what: str) -> dict[str, Any]:
        """A JetStream API request (``call`` is what follows ``$JS.API.``)."""
        payload = b"" if body is None else json.dumps(body).encode()
        with mapped(what):
            reply = await self.nc.request(f"$JS.API.{call}", payload, timeout=REPLY_TIMEOUT)
        return _checked(reply, what)

    async def publish_acked(
        self, messages: Sequence[tuple[str, bytes, Mapping[str, str] | None]], what: str
    ) -> list[dict[str, Any]]:
        """Publish to JetStream subjects in order, then await every acknowledgement;
        raise on the first refusal or after REPLY_TIMEOUT."""
        return [_checked(reply, what) for reply in await self._requests(messages, what)]

    async def confirmed(self, messages: Sequence[tuple[str, bytes]], what: str) -> None:
        """Send acks, naks and terms to messages' reply subjects and wait until the server
        has applied each (it answers an ack that asks for an answer once it is done)."""
        await self._requests([(subject, data, None) for subject, data in messages], what)

    async def _requests(
        self, messages: Sequence[tuple[str, bytes, Mapping[str, str] | None]], what: str
    ) -> list[Msg]:
        """Send requests in order, in one go, and await every answer."""
        loop = asyncio.get_running_loop()
        tokens: list[str] = []
        futures: list[asyncio.Future[Msg]] = []
        try:
            with mapped(what):
                for subject, data, headers in messages:
                    token = str(next(self._tokens))
                    future: asyncio.Future[Msg] = loop.create_future()
                    self._waiting[token] = future
                    tokens.append(token)
                    futures.append(future)
                    await self.nc.publish(
                        subject,
                        data,
                        reply=f"{self._inbox}.{token}",
                        headers=dict(headers) if headers else None,
                    )
                return await asyncio.wait_for(asyncio.gather(*futures), REPLY_TIMEOUT)
        finally:
            for token in tokens:
                self._waiting.pop(token, None)

    async def send(self, subject: str, data: bytes, what: str) -> None:
        """A plain publish (acks, naks and the like go to a message's reply subject)."""
        with mapped(what):
            await self.nc.publish(subject, data)

    async def flush(self, what: str) -> None:
        """Return once the server has read everything sent before."""
        with mapped(what):
            await self.nc.flush(timeout=int(REPLY_TIMEOUT))

    async def aclose(self) -> None:
        for future in self._waiting.values():
            future.cancel()
        self._waiting.clear()
        with contextlib.suppress(nats.errors.Error):
            await self.nc.close()


def _checked(reply: Msg, what: str) -> dict[str, Any]:
    headers = reply.headers or {}
    if headers.get("Status") == "503":
        raise ApiError(f"cannot {what}: no JetStream stream answers (503)", STREAM_NOT_FOUND)
    try:
        answer = json.loads(reply.data)
    except ValueError:
        raise BrokerError(f"cannot {what}: the server answered {reply.data[:200]!r}") from None
    if not isinstance(answer, dict):
        raise BrokerError(f"cannot {what}: the server answered {answer!r}")
    error = answer.get("error")
    if isinstance(error, dict):
        raise ApiError(
            f"cannot {what}: {error.get('description', error)}", int(error.get("err_code", 0))
        )
    return answer
