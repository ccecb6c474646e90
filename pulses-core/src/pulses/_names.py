"""The one rule for stream, group and consumer names, the same on every broker.

Checked at the first call that takes a name (``publish``, ``publish_many``,
``subscription``, ``consumer``, ``App.register``), so a name that some part of the
system could never use is refused before anything is written under it.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from pulses._errors import InvalidName

__all__ = ["check_name", "check_streams"]

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def _hash_tag(name: str) -> str | None:
    """What Redis Cluster hashes of a key: the text between its first ``{`` and the next
    ``}`` when that is not empty; None when the whole key is hashed."""
    start = name.find("{")
    if start != -1:
        end = name.find("}", start + 1)
        if end > start + 1:
            return name[start + 1 : end]
    return None


def check_name(kind: str, name: object, where: str) -> str:
    """Return ``name`` if it is a valid ``kind`` name ("stream", "group" or "consumer"),
    else raise naming ``where`` (the argument or setting) and the rule.

    Rules: a non-empty str; valid Unicode (no lone surrogates), no control characters;
    and for streams, a ``}`` only inside a hash tag such as ``{orders}``, because a
    stream's companion keys (dead letters, retries) must share its Redis Cluster slot.
    Brokers that have no slots follow the same rule, so a name means the same everywhere.

    >>> check_name("stream", "{orders}:eu", "stream")
    '{orders}:eu'
    """
    if not isinstance(name, str):
        raise InvalidName(f"{where} must be a str {kind} name, got {type(name).__name__}")
    if not name:
        raise InvalidName(f"{where}: a {kind} name must not be empty")
    try:
        name.encode()
    except UnicodeEncodeError:
        raise InvalidName(
            f"{where}: {kind} name {name!r} is not valid Unicode (it holds a lone surrogate)"
        ) from None
    if _CONTROL.search(name):
        raise InvalidName(f"{where}: {kind} name {name!r} holds a control character")
    if kind == "stream" and "}" in name and _hash_tag(name) is None:
        raise InvalidName(
            f"{where}: stream name {name!r} has a '}}' but no hash tag; its dead letters "
            "and retries could not share its Redis Cluster slot: drop the '}' or give it "
            "a tag like '{orders}'"
        )
    return name


def check_streams(streams: object, where: str) -> tuple[str, ...]:
    """A non-empty sequence of distinct valid stream names, as a tuple; else raise
    naming ``where``. What ``Broker.consumer`` takes."""
    if isinstance(streams, str | bytes) or not isinstance(streams, Sequence) or not streams:
        raise InvalidName(f"{where} must be a non-empty sequence of stream names, got {streams!r}")
    names = tuple(check_name("stream", stream, where) for stream in streams)
    if len(set(names)) != len(names):
        raise InvalidName(f"{where} names a stream twice: {names!r}")
    return names
