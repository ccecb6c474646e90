"""Every JetStream name, subject, header and id this broker uses, in one place.

Pulses names are any printable Unicode; JetStream stream, consumer and subject tokens
allow no whitespace, ``.``, ``*``, ``>`` or slashes. So each Pulses name becomes a
*tag*: its safe characters (readable in ``nats stream ls``) and a hash of the whole name
(unique). The Pulses name itself is kept in the JetStream description, where the admin
facet reads it back.

Per Pulses stream ``s`` (tag ``T``) and group ``g`` (tag ``G``):

- ``PULSES_T``: the messages, on subject ``pulses.s.T``; the group is the durable pull
  consumer ``G`` on it;
- ``PULSES_T_R``: replayed dead letters, a work queue with one subject per group
  (``pulses.r.T.G``), so a replay reaches only the group that dead-lettered it; the
  group reads it through a durable ``G`` too;
- ``PULSES_T_D``: dead letters, subject ``pulses.d.T.G``;
- ``PULSES_BOOK`` (one per server): bookkeeping out of band, one message per subject:
  ``pulses.b.T.G.<kind>.<seq>`` marks a message that was handed back (retry, release),
  ``pulses.b.T.G.counts`` holds the group's counters.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

__all__ = [
    "BOOK_STREAM",
    "BOOK_SUBJECTS",
    "CODEC_HEADER",
    "DEAD_HEADER",
    "HEADERS_HEADER",
    "ID_HEADER",
    "MAIN",
    "REPLAY",
    "AckSubject",
    "Names",
    "entry_id",
    "parse_ack_subject",
    "parse_entry_id",
    "tag",
]

MAIN = "m"
"""The kind of a message in the stream itself; its id is its stream sequence."""
REPLAY = "r"
"""The kind of a replayed dead letter; its id is ``r<sequence in the replay stream>``."""

BOOK_STREAM = "PULSES_BOOK"
BOOK_SUBJECTS = "pulses.b.>"

HEADERS_HEADER = "Pulses-Headers"
"""A message's Pulses headers, as one JSON object (NATS header values are one line of
text; JSON with ASCII escapes carries any str)."""
CODEC_HEADER = "Pulses-Codec"
"""How the payload is encoded, when not JSON (``pulses.Stream`` sets it)."""
ID_HEADER = "Pulses-Id"
"""The message id for life, on a replayed dead letter (whose own id is new)."""
DEAD_HEADER = "Pulses-Dead"
"""A dead letter's record (original id, reason, deliveries, handler, group, headers)."""

_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")
_READABLE = 24


def tag(name: str) -> str:
    """A JetStream-safe, unique and stable token for a Pulses name."""
    digest = hashlib.sha256(name.encode()).hexdigest()[:12]
    return f"{_UNSAFE.sub('_', name)[:_READABLE]}_{digest}"


@dataclass(frozen=True, slots=True)
class AckSubject:
    """What the reply subject of a delivered JetStream message says about it."""

    stream: str
    consumer: str
    delivered: int
    sequence: int
    timestamp_ns: int


def parse_ack_subject(reply: str) -> AckSubject | None:
    """``$JS.ACK.<stream>.<consumer>.<delivered>.<stream seq>.<consumer seq>.<ns>.<pending>``,
    or the newer form with a domain and an account hash before the stream (and perhaps a
    token after); None for anything else."""
    tokens = reply.split(".")
    if len(tokens) < 9 or tokens[0] != "$JS" or tokens[1] != "ACK":
        return None
    at = 2 if len(tokens) == 9 else 4
    numbers = tokens[at + 2 : at + 6]
    if len(numbers) != 4 or not all(n.isdigit() for n in numbers):
        return None
    return AckSubject(tokens[at], tokens[at + 1], int(numbers[0]), int(numbers[1]), int(numbers[3]))


def entry_id(kind: str, sequence: int) -> str:
    return str(sequence) if kind == MAIN else f"{REPLAY}{sequence}"


def parse_entry_id(value: str) -> tuple[str, int] | None:
    """``(kind, sequence)`` of an id this broker gave out; None for anything else."""
    kind, digits = (REPLAY, value[1:]) if value.startswith(REPLAY) else (MAIN, value)
    if not digits.isdigit() or len(digits) > 20:
        return None
    return kind, int(digits)


@dataclass(frozen=True, slots=True)
class Names:
    """The JetStream names of one Pulses stream."""

    stream: str
    tag: str

    @classmethod
    def of(cls, stream: str) -> Names:
        return cls(stream, tag(stream))

    @property
    def main(self) -> str:
        return f"PULSES_{self.tag}"

    @property
    def subject(self) -> str:
        return f"pulses.s.{self.tag}"

    @property
    def replay(self) -> str:
        return f"PULSES_{self.tag}_R"

    def replay_subject(self, group_tag: str) -> str:
        return f"pulses.r.{self.tag}.{group_tag}"

    @property
    def dead(self) -> str:
        return f"PULSES_{self.tag}_D"

    def dead_subject(self, group_tag: str) -> str:
        return f"pulses.d.{self.tag}.{group_tag}"

    def js_stream(self, kind: str) -> str:
        return self.main if kind == MAIN else self.replay

    def mark_subject(self, group_tag: str, kind: str, sequence: int) -> str:
        return f"pulses.b.{self.tag}.{group_tag}.{kind}.{sequence}"

    def marks_filter(self, group_tag: str) -> str:
        return f"pulses.b.{self.tag}.{group_tag}.*.*"

    def counts_subject(self, group_tag: str) -> str:
        return f"pulses.b.{self.tag}.{group_tag}.counts"
