"""redis-py exceptions become Pulses errors here, and only here."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from types import TracebackType

from redis import exceptions as rx

from pulses import BrokerError, ConnectionLost, PulsesError
from pulses.broker import redact_secrets
from pulses_redis._scripts import Client, failed_call

__all__ = ["ErrorMap", "is_nogroup"]


def is_nogroup(exc: BaseException) -> bool:
    """The group (or its stream) is gone: recreate it from the start and go on."""
    return isinstance(exc, rx.ResponseError) and "NOGROUP" in str(exc)


def _failing_over(exc: BaseException) -> bool:
    """A cluster or replica state that passes within seconds: the command did not run."""
    if isinstance(exc, rx.ClusterDownError | rx.TryAgainError | rx.SlotNotCoveredError):
        return True
    if isinstance(exc, rx.ClusterError) and "TTL exhausted" in str(exc):
        return True  # redirected over and over while a slot migrates
    if isinstance(exc, rx.RedisClusterException) and "cannot be connected" in str(exc):
        return True  # no seed node answered while asked for the slots
    # A master just demoted to a replica, or a replica that lost its master.
    return str(exc).startswith(("READONLY", "MASTERDOWN", "LOADING"))


class ErrorMap:
    """``async with errors("reading", stream=..., group=..., keys=...)`` re-raises any
    redis-py (or socket) exception as a :class:`pulses.PulsesError` that names what was
    being done, the stream, group and key involved, and never the password."""

    __slots__ = ("_client", "_secrets", "_url")

    def __init__(self, client: Client, url: str, secrets: Iterable[str]) -> None:
        self._client = client
        self._url = url
        self._secrets = tuple(secrets)

    def __call__(
        self,
        action: str,
        *,
        stream: str | Sequence[str] | None = None,
        group: str | None = None,
        keys: Mapping[str, str] | None = None,
    ) -> _Scope:
        """``keys`` maps each key the operation touches to the type it should have."""
        return _Scope(self, action, stream, group, keys)

    def scrub(self, text: str) -> str:
        return redact_secrets(text, self._secrets)

    async def translate(self, exc: BaseException, scope: _Scope) -> PulsesError:
        where = scope.where()
        detail = self.scrub(f"{type(exc).__name__}: {exc}")
        if isinstance(exc, rx.AuthenticationError | rx.AuthorizationError):
            return BrokerError(
                f"{scope.action} {where}: Redis at {self._url} refused the credentials ({detail})"
            )
        if isinstance(exc, rx.ConnectionError | rx.TimeoutError | OSError):
            return ConnectionLost(
                f"{scope.action} {where}: lost the connection to Redis at {self._url} ({detail})"
            )
        message = str(exc)
        if _failing_over(exc):
            return ConnectionLost(
                f"{scope.action} {where}: Redis at {self._url} is failing over or moving "
                f"slots; try again shortly ({detail})"
            )
        if isinstance(exc, rx.MovedError | rx.AskError):  # followed by a cluster client
            return BrokerError(
                f"{scope.action} {where}: Redis at {self._url} is a node of a Redis Cluster; "
                "connect with redis+cluster://host:port,host:port/ instead"
            )
        if "WRONGTYPE" in message and scope.keys:
            wrong = await self._wrong_types(scope.keys)
            if wrong:
                return BrokerError(
                    f"{scope.action} {where}: " + "; ".join(wrong) + " (another "
                    "application uses that key name; rename the stream or the key)"
                )
        if "can't run this command" in message and (call := failed_call(message)):
            return BrokerError(
                f"{scope.action} {where}: the Redis user may not run {call}, which Pulses "
                "needs; see the pulses_redis docs for the command list"
            )
        if "NOPERM" in message:
            return BrokerError(
                f"{scope.action} {where}: the Redis user lacks a permission "
                f"Pulses needs ({detail}); see the pulses_redis docs for the "
                "command list"
            )
        return BrokerError(f"{scope.action} {where}: Redis at {self._url} replied {detail}")

    async def _wrong_types(self, keys: Mapping[str, str]) -> list[str]:
        try:
            pipe = self._client.pipeline(transaction=False)
            for key in keys:
                pipe.execute_command("TYPE", key)
            found = await pipe.execute()
        except (rx.RedisError, OSError):
            return [f"one of the keys {', '.join(map(repr, keys))} has the wrong type"]
        wrong = []
        for (key, expected), actual in zip(keys.items(), found, strict=True):
            kind = actual.decode() if isinstance(actual, bytes) else str(actual)
            if kind not in (expected, "none"):
                wrong.append(f"key {key!r} holds a {kind}, not a {expected}")
        return wrong


class _Scope:
    __slots__ = ("action", "group", "keys", "map", "stream")

    def __init__(
        self,
        errors: ErrorMap,
        action: str,
        stream: str | Sequence[str] | None,
        group: str | None,
        keys: Mapping[str, str] | None,
    ) -> None:
        self.map = errors
        self.action = action
        self.stream = stream
        self.group = group
        self.keys = keys

    def where(self) -> str:
        parts = []
        streams = [self.stream] if isinstance(self.stream, str) else list(self.stream or ())
        if streams:
            label = "stream" if len(streams) == 1 else "streams"
            parts.append(f"{label} {', '.join(map(repr, streams))}")
        if self.group is not None:
            parts.append(f"group {self.group!r}")
        return "in " + ", ".join(parts) if parts else "on Redis"

    async def __aenter__(self) -> None:
        return None

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc is None or isinstance(exc, PulsesError):
            return
        # RedisClusterException (no RedisError): a slot no master serves, say.
        if isinstance(exc, rx.RedisError | rx.RedisClusterException | OSError):
            raise await self.map.translate(exc, self) from exc
