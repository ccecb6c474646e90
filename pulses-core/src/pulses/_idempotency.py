"""Idempotent publishing: what every broker checks and shares about keys and codecs."""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["DEFAULT_KEY_WINDOW_MS", "check_codec", "check_keys", "check_window"]

DEFAULT_KEY_WINDOW_MS = 3_600_000
"""How long an idempotency key is remembered by default: one hour, long enough for a
producer's own retries and a web client's resubmits, short enough that the keys of a busy
stream take little memory. Brokers take ``key_window_ms`` to change it."""


def check_keys(stream: str, keys: object, count: int) -> None:
    """Refuse idempotency keys that are not text or that do not match the payloads."""
    if keys is None:
        return
    if not isinstance(keys, Sequence) or isinstance(keys, str) or len(keys) != count:
        raise ValueError(
            f"keys for stream {stream!r} must be a sequence of one key (or None) per "
            f"payload: {count} payloads, got {keys!r}"
        )
    for key in keys:
        if key is not None and (not isinstance(key, str) or not key):
            raise TypeError(
                f"an idempotency key for stream {stream!r} must be a non-empty str, got {key!r}"
            )


def check_codec(stream: str, codec: object) -> None:
    """Refuse a ``codec`` that is neither None (raw bytes) nor one that typed streams
    write (``"json"``, ``"msgpack"``), naming the stream; ``publish`` and
    ``publish_many`` call it after ``check_keys``."""
    if codec is not None and codec not in ("json", "msgpack"):
        raise ValueError(f"codec for stream {stream!r} must be 'json' or 'msgpack', got {codec!r}")


def check_window(key_window_ms: object) -> int:
    """The window, checked: a positive number of milliseconds."""
    if isinstance(key_window_ms, bool) or not isinstance(key_window_ms, int) or key_window_ms <= 0:
        raise ValueError(
            f"key_window_ms must be a positive int of milliseconds, got {key_window_ms!r}"
        )
    return key_window_ms
