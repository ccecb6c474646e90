"""URL helpers that every broker shares: the scheme, and hiding passwords.

Every password Pulses keeps out of logs, reprs and errors is found and hidden here:
``redact_url`` for a URL, ``url_secrets`` and ``redact_secrets`` for any other text
(a client library's error message may quote a password).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from urllib.parse import unquote, urlsplit

from pulses._errors import InvalidURL

__all__ = ["redact_secrets", "redact_url", "url_scheme", "url_secrets"]


def redact_url(url: str) -> str:
    """The URL with any password replaced by ``***``; safe for logs, reprs and errors.

    Both places a password can hide are covered: the userinfo and a ``password=`` query
    parameter (the only way to give one to a ``unix://`` URL).

    >>> redact_url("redis://app:s3cret@cache:6379/0")
    'redis://app:***@cache:6379/0'
    >>> redact_url("unix:///run/redis.sock?db=1&password=s3cret")
    'unix:///run/redis.sock?db=1&password=***'
    """
    scheme, userinfo, host = _split_userinfo(url)
    if userinfo is not None:
        user, colon, _ = userinfo.partition(":")
        # "redis://secret@host" is read as a bare password by some clients: hide it too.
        url = f"{scheme}{user}:***@{host}" if colon else f"{scheme}***@{host}"
    return _QUERY_PASSWORD.sub(r"\g<1>***", url)


def url_secrets(url: str) -> list[str]:
    """Every password ``url`` holds, as written and percent-decoded."""
    found = [m.group(2) for m in _QUERY_PASSWORD.finditer(url)]
    _, userinfo, _ = _split_userinfo(url)
    if userinfo is not None:
        user, colon, password = userinfo.partition(":")
        found.append(password if colon else user)
    return [s for secret in found for s in {secret, unquote(secret)} if s]


def redact_secrets(text: str, secrets: Iterable[str]) -> str:
    """``text`` with every occurrence of each secret replaced by ``***``."""
    for secret in sorted(set(secrets), key=len, reverse=True):  # a longer one may hold another
        if secret:
            text = text.replace(secret, "***")
    return text


_QUERY_PASSWORD = re.compile(r"([?&;](?:password|pass|pwd)=)([^&;#]*)", re.IGNORECASE)


def _split_userinfo(url: str) -> tuple[str, str | None, str]:
    """``(scheme://, userinfo or None, the rest)``."""
    scheme, sep, rest = url.partition("://")
    if not sep:  # malformed: still treat whatever stands before an "@" as userinfo
        scheme, rest = "", url
    else:
        scheme += sep
    # Up to the last "@": a password may hold "@", ":" and "/" when not percent-encoded.
    userinfo, at, host = rest.rpartition("@")
    return (scheme, userinfo, host) if at else (scheme, None, rest)


def url_scheme(url: object) -> str:
    """The lower-cased scheme of a broker URL, or ``InvalidURL`` saying what is wrong."""
    if not isinstance(url, str):
        raise InvalidURL(f"a broker URL must be a str, got {type(url).__name__}")
    try:
        scheme = urlsplit(url).scheme
    except ValueError as exc:
        raise InvalidURL(f"cannot parse broker URL {redact_url(url)!r}: {exc}") from None
    after = url[len(scheme) + 1 :]
    # "localhost:6379" parses with the scheme "localhost": a port is no URL's first part.
    if not scheme or (not after.startswith("//") and after[:1].isdigit()):
        raise InvalidURL(
            f"broker URL {redact_url(url)!r} has no scheme; expected e.g. "
            "'redis://host:6379/0' or 'memory://'"
        )
    if not after.startswith("//"):
        raise InvalidURL(
            f"broker URL {redact_url(url)!r} lacks the '//' after its scheme: write "
            f"'{scheme}://...', e.g. 'redis://host:6379/0', 'unix:///run/redis.sock' or "
            "'memory://'"
        )
    return scheme.lower()
