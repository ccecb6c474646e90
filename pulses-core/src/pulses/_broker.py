"""What a broker plugin implements: Broker[S], Consumer, Capabilities, and admin facets."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Generic, Protocol, Self, TypeVar, runtime_checkable

from pulses._envelope import Envelope
from pulses._idempotency import DEFAULT_KEY_WINDOW_MS
from pulses._names import check_name
from pulses._outcome import Outcome

__all__ = [
    "Broker",
    "Capabilities",
    "Consumer",
    "ConsumerInfo",
    "DeadLetterRecord",
    "GroupStats",
    "Reclaimed",
    "StreamAdmin",
    "StreamStats",
    "Subscription",
    "TrimStats",
    "check_publish",
]

S = TypeVar("S")
B_contra = TypeVar("B_contra", bound="Broker[Any]", contravariant=True)


class Subscription(Generic[B_contra]):
    """Base of every broker's subscription type: which consumer group to join, and how.

    It is generic over the broker it belongs to, so ``App(redis_broker,
    MemorySubscription(...))`` is a type error rather than a runtime surprise.
    Subclasses are frozen dataclasses with at least these fields.
    """

    __slots__ = ()
    group: str
    """The consumer group's name."""
    consumer: str
    """This process's consumer name within the group."""

    def __post_init__(self) -> None:
        # Called by the subclasses' dataclass __init__: one name rule for every broker.
        check_name("group", self.group, f"{type(self).__name__}.group")
        check_name("consumer", self.consumer, f"{type(self).__name__}.consumer")


@dataclass(frozen=True, slots=True)
class Capabilities:
    """What a broker supports, so core refuses what it cannot do instead of ignoring it.

    Every field defaults to the lesser promise; a broker declares what it does.

    :ivar delayed_publish: ``publish(..., delay_ms=N)`` with N > 0.
    :ivar delayed_retry: ``Retry(after_ms=N)`` with N > 0, held outside the pending
        list until due.
    :ivar dead_letters: ``DeadLetter`` outcomes are stored, listable and replayable.
    :ivar reclaim: Idle messages of other consumers can be taken over, with exact
        delivery counts.
    :ivar extend: The lease of a running message can be renewed without counting a
        delivery.
    :ivar release: Fetched but unstarted messages can be handed back without counting a
        delivery.
    :ivar admin: The broker is also a ``StreamAdmin`` (stats, dead letters, trim).
    :ivar max_payload_bytes: The largest payload the broker accepts, when it has a
        limit; None when it has none.
    :ivar process_local: The data lives inside one process, so other processes cannot
        share the work.
    :ivar liveness: Consumers say they are alive (``Consumer.heartbeat``), and
        ``reclaim`` takes over the messages of a consumer whose heartbeat lapsed without
        waiting for ``min_idle_ms``. Without it, a dead consumer's messages wait for the
        idle time.
    :ivar lease_ms: Set by a broker whose server delivers an unsettled message again by
        itself: the lease (ack wait) in milliseconds after which a fetched message that
        was neither settled nor extended comes back through ``fetch``, to any consumer
        of the group, as a suspect with one more delivery. Such a broker keeps one lease
        per message, not a pending list per consumer name, and has nothing to reclaim
        (``reclaim`` is False): the runtime runs no reclaim loop and extends leases
        every third of ``lease_ms``. None (the default): unsettled messages stay with
        their consumer until reclaimed.
    """

    delayed_publish: bool = False
    delayed_retry: bool = False
    dead_letters: bool = False
    reclaim: bool = False
    extend: bool = False
    release: bool = False
    admin: bool = False
    max_payload_bytes: int | None = None
    process_local: bool = False
    liveness: bool = False
    lease_ms: int | None = None

    def __post_init__(self) -> None:
        lease = self.lease_ms
        if lease is not None and (isinstance(lease, bool) or not isinstance(lease, int)):
            raise TypeError(f"Capabilities.lease_ms must be an int or None, got {lease!r}")
        if lease is not None and lease <= 0:
            raise ValueError(f"Capabilities.lease_ms must be positive, got {lease}")
        if lease is not None and self.reclaim:
            raise ValueError(
                "Capabilities: a broker whose server redelivers by itself (lease_ms) has "
                "nothing to reclaim; declare reclaim=False"
            )


@dataclass(frozen=True, slots=True)
class Reclaimed:
    """What one ``Consumer.reclaim`` call took over.

    :ivar envelopes: Messages now owned by the calling consumer, with a fresh lease and
        exact delivery counts; when one of them is a suspect, it is the only one.
    :ivar vanished: Ids of pending messages whose stored entry was deleted or trimmed;
        the broker has dropped them from the pending list.
    """

    envelopes: Sequence[Envelope]
    vanished: Sequence[str] = ()


class Consumer(Protocol):
    """One handler's view of its streams within a consumer group."""

    @property
    def name(self) -> str:
        """This consumer's unique name within its group."""
        ...

    async def ensure(self) -> None:
        """Create the group on every stream, from the start, if it does not exist."""
        ...

    async def fetch(self, max_count: int, block_ms: int) -> Sequence[Envelope]:
        """Up to ``max_count`` messages in total over all streams, waiting up to ``block_ms``.

        The first fetches after a restart hand back what this consumer's name still held
        (a suspect at a time, alone); after a fetch that failed, the next one first hands
        out whatever the failed one may have taken, with unchanged delivery counts.
        """
        ...

    async def settle(self, items: Sequence[tuple[Envelope, Outcome]]) -> None:
        """Apply each outcome atomically; on partial failure raise ``SettleError``."""
        ...

    async def extend(self, envelopes: Sequence[Envelope]) -> None:
        """Renew the lease of messages still being handled, counting no delivery."""
        ...

    async def release(self, envelopes: Sequence[Envelope]) -> None:
        """Hand back fetched but unstarted messages so others take them at once."""
        ...

    async def heartbeat(self, ttl_ms: int) -> None:
        """Say this consumer is alive for the next ``ttl_ms`` (brokers with ``liveness``)."""
        ...

    async def reclaim(self, min_idle_ms: int, max_count: int, *, grace_ms: int = 0) -> Reclaimed:
        """Take over messages of other consumers of the group: those idle longer than
        ``min_idle_ms``, and (with ``liveness``) every message of a consumer whose
        heartbeat lapsed more than ``grace_ms`` ago.

        A message taken over that was delivered before is a suspect
        (``Envelope.suspect``): when the result holds one, it holds nothing else, so
        that the runtime can run it alone.
        """
        ...

    async def aclose(self) -> None:
        """Stop using the consumer; closing twice is harmless."""
        ...


@runtime_checkable
class Broker(Protocol[S]):
    """A connection to a message broker, generic over its subscription type.

    ``S`` is what tells the broker which consumer group to join and how (for Redis, a
    ``RedisSubscription``), so passing another broker's subscription is a type error.
    """

    @property
    def url(self) -> str:
        """The broker's URL with any password redacted."""
        ...

    @property
    def capabilities(self) -> Capabilities: ...

    async def publish(
        self,
        stream: str,
        payload: bytes,
        *,
        headers: Mapping[str, str] | None = None,
        delay_ms: int = 0,
        key: str | None = None,
        key_window_ms: int = DEFAULT_KEY_WINDOW_MS,
        codec: str | None = None,
    ) -> str:
        """Append one message; return its message id (for a delayed message, its delay
        ticket). A message with an idempotency ``key`` that a publish to the stream used
        within ``key_window_ms`` is dropped, and that publish's id returned. ``codec``
        is recorded in the message for typed consumers (``pulses.Stream`` sets it)."""
        ...

    async def publish_many(
        self,
        stream: str,
        payloads: Sequence[bytes],
        *,
        headers: Mapping[str, str] | None = None,
        keys: Sequence[str | None] | None = None,
        key_window_ms: int = DEFAULT_KEY_WINDOW_MS,
        codec: str | None = None,
    ) -> list[str]:
        """Append many messages in one round trip; return their ids in order. ``keys``,
        one per payload (None for none), are idempotency keys as in ``publish``."""
        ...

    def subscription(self, group: str, *, consumer: str | None = None) -> S:
        """The default subscription for a consumer group; ``consumer`` names this process's
        consumer (by default unique per process: host, pid and a random suffix)."""
        ...

    def consumer(self, subscription: S, streams: Sequence[str], *, handler: str) -> Consumer:
        """A consumer of ``streams`` in the subscription's group, for the named handler.

        Streams are checked with ``check_streams`` (one name rule for every broker)."""
        ...

    async def aclose(self) -> None: ...

    async def __aenter__(self) -> Self: ...

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...


@dataclass(frozen=True, slots=True)
class ConsumerInfo:
    """One consumer of a group, as ``StreamAdmin.stats`` sees it.

    :ivar name: The consumer's name in its group.
    :ivar pending: Messages it holds: handed to it and not settled.
    :ivar idle_ms: Milliseconds since its last read from the group, as the broker counts it.
    :ivar alive: Whether its heartbeat is current; None when it never sent one (or the
        broker has no ``liveness``).
    """

    name: str
    pending: int
    idle_ms: int
    alive: bool | None = None


@dataclass(frozen=True, slots=True)
class GroupStats:
    """One consumer group on one stream; every message is in exactly one bucket.

    :ivar group: The group's name.
    :ivar acked: Messages the group acknowledged, a running total.
    :ivar dropped: Messages the group dropped, a running total.
    :ivar dead_lettered: Messages the group dead-lettered, a running total that neither
        ``replay`` nor ``purge`` lowers (``StreamStats.dead_letters`` is what is stored).
    :ivar pending: Messages handed out and not settled yet.
    :ivar lag: Entries of the stream the group has not read yet (due retries included).
    :ivar delayed: Retries waiting for their time, outside the pending list.
    :ivar oldest_pending_ms: The age, in milliseconds, of the oldest pending message,
        counted from when the entry it was delivered from was written (not from its
        last delivery); None when nothing is pending.
    :ivar consumers: The group's known consumers; empty on a broker that does not know
        which consumer holds what.
    """

    group: str
    acked: int
    dropped: int
    dead_lettered: int
    pending: int
    lag: int
    delayed: int
    oldest_pending_ms: int | None
    consumers: Sequence[ConsumerInfo] = field(default_factory=tuple)


@dataclass(frozen=True, slots=True)
class TrimStats:
    """What ``StreamAdmin.trim`` (a worker's retention, ``pulses trim``) removed from a
    stream, as the broker recorded it.

    :ivar removed: Entries removed by every trim so far.
    :ivar last_removed: Entries removed by the last trim.
    :ivar last_ago_ms: How long ago the last trim ran, in milliseconds.
    :ivar keep: The history the last trim left, as a count of entries; None when it
        was given as an age.
    :ivar keep_ms: The history the last trim left, as an age in milliseconds; None
        when it was given as a count. Neither: the last trim left no acknowledged
        entry (``pulses trim`` without ``--keep``, ``Retention()``).
    """

    removed: int
    last_removed: int
    last_ago_ms: int
    keep: int | None = None
    keep_ms: int | None = None


@dataclass(frozen=True, slots=True)
class StreamStats:
    """One stream, as ``StreamAdmin.stats`` sees it.

    :ivar stream: The stream's name.
    :ivar length: Entries stored in the stream now.
    :ivar delayed: Delayed publishes not yet in the stream.
    :ivar dead_letters: Dead-letter records stored now (``replay`` and ``purge`` lower
        it).
    :ivar groups: One ``GroupStats`` per consumer group of the stream.
    :ivar trimmed: What trims removed so far; None: never trimmed (or the broker keeps
        no record).
    """

    stream: str
    length: int
    delayed: int
    dead_letters: int
    groups: Sequence[GroupStats]
    trimmed: TrimStats | None = None


@dataclass(frozen=True, slots=True)
class DeadLetterRecord:
    """A dead-lettered message with where it came from and why.

    :ivar id: The record's own id, which ``replay`` and ``purge`` take.
    :ivar original_id: The id of the delivery that was dead-lettered, the last one
        (after a retry, the retry's own entry, not the first publish's).
    :ivar stream: The stream the message was published to.
    :ivar payload: The message's payload.
    :ivar headers: The message's headers.
    :ivar reason: Why: the ``DeadLetter`` reason, or what the runtime says (too many
        deliveries, a payload that does not decode).
    :ivar deliveries: The delivery count of the dead-lettered delivery.
    :ivar handler: The handler that dead-lettered it.
    :ivar group: The consumer group that dead-lettered it; ``replay`` hands it back to
        this group only.
    :ivar dead_at_ms: When, in Unix milliseconds.
    :ivar message_id: The message's id for life (``Envelope.message_id``), the same over
        every retry and replay.
    """

    id: str
    original_id: str
    stream: str
    payload: bytes
    headers: Mapping[str, str]
    reason: str
    deliveries: int
    handler: str
    group: str
    dead_at_ms: int
    message_id: str = ""


@runtime_checkable
class StreamAdmin(Protocol):
    """The admin facet: what ``pulses info``, ``dlq`` and ``trim`` use, on any broker."""

    async def streams(self) -> list[str]:
        """Every stream that has a consumer group or dead letters, sorted."""
        ...

    async def stats(self, stream: str) -> StreamStats: ...

    async def dead_letters(self, stream: str, *, limit: int = 100) -> list[DeadLetterRecord]:
        """Oldest first."""
        ...

    async def replay(self, stream: str, ids: Sequence[str] | None = None) -> list[str]:
        """Hand dead letters (all when ``ids`` is None) again, as new deliveries, to the
        group that dead-lettered each (not to its fan-out groups), and remove them; new ids."""
        ...

    async def purge(self, stream: str, ids: Sequence[str] | None = None) -> int:
        """Delete dead letters (all when ``ids`` is None); how many were removed."""
        ...

    async def trim(
        self,
        stream: str,
        *,
        dry_run: bool = False,
        keep: int | None = None,
        keep_ms: int | None = None,
    ) -> int:
        """Remove entries every group has acknowledged, oldest first, but leave the newest
        ``keep`` entries or those younger than ``keep_ms`` (one of them, checked by
        ``check_history``); how many were (or would be) removed. No group: nothing.

        A broker that records its trims (Redis, memory: every trim but a dry run)
        shows them in ``stats(stream).trimmed``; one that cannot keep a history of
        some kind raises ``Unsupported``.
        """
        ...


def check_publish(stream: object, payload: object, headers: object, delay_ms: object) -> None:
    """Reject bad publish arguments with an error naming the argument; shared by brokers."""
    check_name("stream", stream, "stream")
    if not isinstance(payload, bytes):
        raise TypeError(
            f"payload for stream {stream!r} must be bytes, got {type(payload).__name__}"
            " (encode text or JSON first)"
        )
    if headers is not None:
        if not isinstance(headers, Mapping):
            raise TypeError(f"headers for stream {stream!r} must be a mapping of str to str")
        for key, value in headers.items():
            if not isinstance(key, str) or not isinstance(value, str):
                raise TypeError(
                    f"headers for stream {stream!r} must map str to str, got {key!r}: {value!r}"
                )
    if isinstance(delay_ms, bool) or not isinstance(delay_ms, int) or delay_ms < 0:
        raise ValueError(
            f"delay_ms for stream {stream!r} must be a non-negative int, got {delay_ms!r}"
        )
