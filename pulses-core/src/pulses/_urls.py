"""URL helpers that every broker shares: the scheme, and a form safe to show."""

from __future__ import annotations

import re
from urllib.parse import urlsplit

from pulses._errors import InvalidURL

__all__ = ["redact_url", "url_scheme"]

# Up to the last "@" before the path: passwords may contain "@" and ":" themselves.
_USERINFO = re.compile(r"^(?P<scheme>[^:/?#]+://)(?P<userinfo>[^/?#]*)@")


def redact_url(url: str) -> str:
    """The URL with any password replaced by ``***``; safe for logs, reprs and errors.

    >>> redact_url("redis://app:s3cret@cache:6379/0")
    'redis://app:***@cache:6379/0'
    """
    match = _USERINFO.match(url)
    if match is None:
        return url
    user, sep, _ = match["userinfo"].partition(":")
    userinfo = f"{user}:***" if sep else user
    if not sep and user:
        # "redis://secret@host" puts the password where the user goes (redis-py reads it
        # as a password when no user is configured), so hide it too.
        userinfo = "***"
    return f"{match['scheme']}{userinfo}@{url[match.end() :]}"


def url_scheme(url: object) -> str:
    """The lower-cased scheme of a broker URL, or ``InvalidURL`` saying what is wrong."""
    if not isinstance(url, str):
        raise InvalidURL(f"a broker URL must be a str, got {type(url).__name__}")
    try:
        scheme = urlsplit(url).scheme
    except ValueError as exc:
        raise InvalidURL(f"cannot parse broker URL {redact_url(url)!r}: {exc}") from None
    if not scheme or "://" not in url:
        raise InvalidURL(
            f"broker URL {redact_url(url)!r} has no scheme; expected e.g. "
            "'redis://host:6379/0' or 'memory://'"
        )
    return scheme.lower()
