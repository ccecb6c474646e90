"""The one exception hierarchy of Pulses; every error a broker raises is a PulsesError."""

from __future__ import annotations

__all__ = [
    "BrokerClosed",
    "BrokerError",
    "ConfigurationError",
    "ConnectionLost",
    "HandlerTimeout",
    "InvalidName",
    "InvalidURL",
    "PluginConflict",
    "PulsesError",
    "SettleError",
    "UnknownScheme",
    "Unsupported",
]

from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pulses._envelope import Envelope
    from pulses._outcome import Outcome


class PulsesError(Exception):
    """Base of every error Pulses raises."""


class ConfigurationError(PulsesError, ValueError):
    """A handler, app or broker is set up wrongly; the message names what and where."""


class InvalidName(ConfigurationError, TypeError):
    """A stream, group or consumer name breaks the naming rule (or is no str); the
    message names the argument and the rule."""


class InvalidURL(ConfigurationError):
    """A broker URL cannot be parsed; the message shows it with the password redacted."""


class UnknownScheme(ConfigurationError):
    """No installed broker plugin handles the URL's scheme."""


class PluginConflict(ConfigurationError):
    """Two plugins claim the same URL scheme."""


class Unsupported(ConfigurationError):
    """The broker does not declare a capability that the app or handler needs."""


class BrokerError(PulsesError):
    """The broker failed an operation; the message names the stream, group or key."""


class ConnectionLost(BrokerError):
    """The broker could not be reached or the connection broke; retrying may succeed."""


class BrokerClosed(BrokerError):
    """A broker or consumer was used after ``aclose()``."""


class SettleError(BrokerError):
    """Some settlements of a batch failed; the others were applied.

    ``failed`` holds exactly the items that were not applied, so a caller can retry them.
    """

    def __init__(self, message: str, failed: Sequence[tuple[Envelope, Outcome]]) -> None:
        super().__init__(message)
        self.failed = list(failed)


class HandlerTimeout(PulsesError, TimeoutError):
    """A handler ran longer than its TIMEOUT and was cancelled: the failure its message
    is retried (or dead-lettered) for, as if ``handle`` had raised it."""
