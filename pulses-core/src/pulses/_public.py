"""Public names report their public module, as users import them."""

from __future__ import annotations

from collections.abc import Mapping
from types import FunctionType
from typing import Any

__all__ = ["claim"]


def claim(module: str, namespace: Mapping[str, Any]) -> None:
    """Set ``__module__`` to ``module`` on each class and function of the module's
    ``__all__`` that a private module (a dotted part starting with ``_``) defined, so
    that reprs, ``help()``, error messages and pickles name the path users import.

    A name another public module already claimed keeps that home: the module that
    defines the contract is the one that is named. Type aliases and other objects
    (``typing`` aliases, ``pluggy`` markers) are left as they are.
    """
    for name in namespace["__all__"]:
        obj = namespace[name]
        if isinstance(obj, type | FunctionType) and _is_private(obj.__module__):
            obj.__module__ = module


def _is_private(module: str) -> bool:
    return any(part.startswith("_") for part in module.split("."))
