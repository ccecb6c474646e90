"""Every Redis key name Pulses uses, in one place.

Companion keys of a stream (dead letters, delayed publishes, a group's retry stream,
delayed retries and counters) share the stream's hash tag, so scripts that touch a
stream and its companions stay in one Redis Cluster slot: ``{orders}`` →
``{orders}:dead``; a stream without a tag gets one: ``emails`` → ``{emails}:dead``.
(``emails`` and ``{emails}`` therefore share their companion keys; don't use both.)
A name with a ``}`` but no tag (``a}b``) cannot have companions in its slot: the name
rule of ``pulses.broker.check_name`` refuses it on every broker.
"""

from __future__ import annotations

from pulses.broker import check_name

__all__ = ["RELEASED_CONSUMER", "StreamKeys", "hash_tag_base"]

RELEASED_CONSUMER = "pulses:released"
"""Pseudo-consumer that owns released messages until a real consumer reclaims them."""


def hash_tag_base(stream: str) -> str:
    """The prefix of a stream's companion keys: the stream itself if it has a hash tag.

    A stream without a tag is hashed whole, so its companions need the tag ``{stream}``,
    which holds the whole name only if it has no ``}``. The name rule refuses a ``}``
    outside a hash tag, so a valid name has a tag exactly when it has a ``}``.
    """
    check_name("stream", stream, "stream")
    return stream if "}" in stream else "{" + stream + "}"


class StreamKeys:
    """The keys of one stream and of one consumer group on it."""

    __slots__ = (
        "base",
        "counts",
        "dead",
        "delayed",
        "group",
        "heartbeats",
        "retry",
        "retry_delayed",
        "stream",
        "trims",
    )

    def __init__(self, stream: str, group: str = "") -> None:
        base = hash_tag_base(stream)
        self.base = base
        self.stream = stream
        self.group = group
        self.dead = f"{base}:dead"
        """Dead-letter records of every group on the stream (a stream)."""
        self.delayed = f"{base}:delayed"
        """Delayed publishes, scored by due time in ms (a sorted set)."""
        self.trims = f"{base}:trimmed"
        """What trims removed (a hash): ``removed`` in total; of the last trim
        ``last_ms`` (Redis time), ``last_removed`` and the history it kept, ``keep`` or
        ``keep_ms``."""
        self.retry = f"{base}:retry:{group}"
        """Due retries of this group only (a stream only this group reads)."""
        self.retry_delayed = f"{base}:retry-delayed:{group}"
        """Retries of this group waiting for their time (a sorted set)."""
        self.counts = f"{base}:counts:{group}"
        """acked / dropped / dead_lettered counters of this group (a hash)."""
        self.heartbeats = f"{base}:alive:{group}"
        """Consumer name → until when (Redis time, ms) its last heartbeat holds (a hash);
        serves the stream and the retry stream alike."""

    def idempotency(self, key: str) -> str:
        """Marks that idempotency ``key`` was used, holding that publish's message id
        until the window ends (a string with a TTL)."""
        return f"{self.base}:key:{key}"
