"""URL helpers that every broker shares: the scheme, and a form safe to show."""

from __future__ import annotations

import re
from urllib.parse import urlsplit

from pulses._errors import InvalidURL

__all__ = ["redact_url", "url_scheme"]


def redact_url(url: str) -> str:
    """The URL with any password replaced by ``***``; safe for logs, reprs and errors.

    Both places a password can hide are covered: the userinfo and a ``password=`` query
    parameter (the only way to give one to a ``unix://`` URL).

    >>> redact_url("redis://app:s3cret@cache:6379/0")
    'redis://app:***@cache:6379/0'
    >>> redact_url("unix:///run/redis.sock?db=1&password=s3cret")
    'unix:///run/redis.sock?db=1&password=***'
    """
    return _QUERY_PASSWORD.sub(r"\g<1>***", _redact_userinfo(url))


_QUERY_PASSWORD = re.compile(r"([?&;](?:password|pass|pwd)=)[^&;#]*", re.IGNORECASE)


def _redact_userinfo(url: str) -> str:
    scheme, sep, rest = url.partition("://")
    if not sep:  # malformed: still hide whatever stands before an "@"
        scheme, rest = "", url
    else:
        scheme += sep
    # Up to the last "@": a password may hold "@", ":" and "/" when not percent-encoded.
    userinfo, at, host = rest.rpartition("@")
    if not at:
        return url
    user, colon, _ = userinfo.partition(":")
    # "redis://secret@host" is read as a bare password by some clients: hide it too.
    shown = f"{user}:***" if colon else "***"
    return f"{scheme}{shown}@{host}"


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
