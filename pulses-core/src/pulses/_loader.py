"""Find the App a command line names: ``package.module:app`` or ``package.module.app``."""

from __future__ import annotations

import importlib
import os
import sys
from typing import Any

from pulses._app import App
from pulses._errors import PulsesError

__all__ = ["AppImportError", "NotAnApp", "load_app"]


class AppImportError(PulsesError):
    """The module that should hold the app does not import."""


class NotAnApp(PulsesError):
    """The named attribute is missing or is not a ``pulses.App``."""


def load_app(spec: str) -> App[Any]:
    """Import ``module:attr`` (or ``module.attr``) with the current directory importable."""
    module_name, sep, attr = spec.partition(":")
    if not sep:
        module_name, _, attr = spec.rpartition(".")
    if not module_name or not attr:
        raise NotAnApp(f"{spec!r} does not name an app; write it as 'module:app'")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:
        raise AppImportError(
            f"cannot import module {module_name!r}: {type(exc).__name__}: {exc}"
        ) from exc
    try:
        app = getattr(module, attr)
    except AttributeError:
        raise NotAnApp(f"module {module_name!r} has no attribute {attr!r}") from None
    if not isinstance(app, App):
        raise NotAnApp(
            f"{module_name}:{attr} is a {type(app).__name__}, not a pulses.App; point at the "
            "App, e.g. app = App(broker, broker.subscription('group')).register(MyHandler())"
        )
    return app
