"""Logging as the ``pulses`` command sets it up: plain lines or one JSON object per line.

Only the command configures logging. As a library, Pulses only logs to its named
loggers (``pulses``, ``pulses.runtime``, ...) and leaves handlers to the application.
"""

from __future__ import annotations

import json
import logging
import logging.config
from datetime import UTC, datetime
from typing import Any

__all__ = ["LOG_FORMATS", "JsonFormatter", "configure_logging", "logs_json"]

LOG_FORMATS = ("text", "json")

_TEXT = "%(asctime)s [%(process)d] %(levelname)s %(name)s: %(message)s"

# What every LogRecord carries; anything else on a record came from ``extra=``.
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message",
    "asctime",
    "taskName",
}


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line.

    Always ``ts`` (UTC, ISO 8601, milliseconds), ``level``, ``logger``, ``message`` and
    ``pid``; then each field given with ``extra=`` (Pulses gives ``handler``, ``stream``,
    ``message_id``, ``deliveries`` and ``reason`` where they apply), unless it would
    replace one of those; ``exception`` with the traceback when there is one. Values
    JSON cannot hold are written as their ``str``.
    """

    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "pid": record.process,
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                data.setdefault(key, value)
        if record.exc_info:
            data["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            data["exception"] = record.exc_text
        if record.stack_info:
            data["stack"] = self.formatStack(record.stack_info)
        return json.dumps(data, default=str, ensure_ascii=False)


def configure_logging(level: int, log_format: str = "text") -> None:
    """Log to stderr in ``log_format`` (``text``: a line with the process id, as ``-w``
    runs several processes; ``json``: see ``JsonFormatter``), with ``logging.config``.

    A host that configured logging before (a program that embeds this command, a test
    runner) keeps its handlers; only the level of Pulses' loggers is set then. An app
    module that configures logging when imported, after this, has the last word.
    """
    if logging.getLogger().handlers:
        logging.getLogger("pulses").setLevel(level)
        return
    formatter: dict[str, Any] = {"()": JsonFormatter} if log_format == "json" else {"format": _TEXT}
    logging.config.dictConfig(
        {
            "version": 1,
            "disable_existing_loggers": False,
            "formatters": {"pulses": formatter},
            "handlers": {
                "stderr": {
                    "class": "logging.StreamHandler",
                    "formatter": "pulses",
                    "stream": "ext://sys.stderr",
                }
            },
            "root": {"level": level, "handlers": ["stderr"]},
        }
    )
    logging.captureWarnings(True)  # warnings too get the pid, and go where the logs go


def logs_json() -> bool:
    """Whether the root logger writes JSON: then the command's own error lines go
    through it too, so that every line on stderr is one JSON object."""
    return any(isinstance(h.formatter, JsonFormatter) for h in logging.getLogger().handlers)
