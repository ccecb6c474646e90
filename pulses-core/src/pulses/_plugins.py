"""Broker plugins: the plugin manager, the scheme registry, and ``connect(url)``."""

from __future__ import annotations

import importlib.metadata
import logging
import re
from dataclasses import dataclass
from typing import Any, cast

import pluggy

from pulses import _hookspecs
from pulses._broker import Broker
from pulses._errors import ConfigurationError, PluginConflict, UnknownScheme
from pulses._hookspecs import BrokerFactory
from pulses._urls import url_scheme

__all__ = ["SchemeRegistry", "connect", "plugin_manager", "scheme_registry"]

logger = logging.getLogger("pulses")

ENTRY_POINT_GROUP = "pulses"
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*")  # RFC 3986 §3.1

# The distributions this project ships, for the "pip install ..." hint. Only these are
# ever suggested: a guessed name such as "pulses-postgres" could be anyone's package.
_KNOWN_PACKAGES = {
    "memory": "pulses-memory",
    "redis": "pulses-redis",
    "rediss": "pulses-redis",
    "unix": "pulses-redis",
}


def plugin_manager(*, load_entrypoints: bool = True) -> pluggy.PluginManager:
    """A fresh plugin manager with the hook API; tests pass ``load_entrypoints=False``
    and ``register`` their own plugins on it."""
    pm = pluggy.PluginManager(_hookspecs.PROJECT)
    pm.add_hookspecs(_hookspecs)
    if load_entrypoints:
        _load_entrypoints(pm)
    pm.check_pending()  # a misspelt hook in any plugin is an error, not silence
    return pm


_broken: dict[str, str] = {}
"""Installed plugins that failed to import: name → the error, for UnknownScheme."""


def _load_entrypoints(pm: pluggy.PluginManager) -> None:
    """Register every installed plugin. One that fails to import costs its own schemes,
    not everyone's: it is logged and named when its scheme is asked for."""
    for entry_point in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        if pm.get_plugin(entry_point.name) is not None or pm.is_blocked(entry_point.name):
            continue
        try:
            plugin = entry_point.load()
        except Exception as exc:
            _broken[entry_point.name] = f"{type(exc).__name__}: {exc}"
            logger.warning(
                "broker plugin %r (%s) failed to import, its schemes are unavailable: %s: %s",
                entry_point.name,
                entry_point.value,
                type(exc).__name__,
                exc,
            )
            continue
        pm.register(plugin, name=entry_point.name)


@dataclass(frozen=True, slots=True)
class SchemeRegistry:
    """Which factory connects which URL scheme, and which plugin registered it."""

    factories: dict[str, BrokerFactory]
    owners: dict[str, str]

    def factory(self, url: str) -> BrokerFactory:
        scheme = url_scheme(url)
        try:
            return self.factories[scheme]
        except KeyError:
            installed = ", ".join(sorted(self.factories)) or "none"
            package = _KNOWN_PACKAGES.get(scheme)
            hint = f" (pip install {package})" if package else ""
            broken = "".join(
                f"; plugin {name!r} failed to import: {error}" for name, error in _broken.items()
            )
            raise UnknownScheme(
                f"no broker for {scheme + '://'!r}; installed: {installed}{hint}{broken}"
            ) from None


def scheme_registry(pm: pluggy.PluginManager) -> SchemeRegistry:
    """Ask every plugin for its schemes; two plugins claiming one scheme is an error."""
    factories: dict[str, BrokerFactory] = {}
    owners: dict[str, str] = {}
    for impl in pm.hook.register_brokers.get_hookimpls():
        owner = impl.plugin_name

        def register(scheme: object, factory: object, owner: str = owner) -> None:
            if not isinstance(scheme, str) or not _SCHEME.fullmatch(scheme):
                raise ConfigurationError(
                    f"plugin {owner!r} registered an invalid scheme {scheme!r}"
                )
            if not callable(factory):
                raise ConfigurationError(
                    f"plugin {owner!r} registered a factory for {scheme!r} that is not callable"
                )
            scheme = scheme.lower()
            if scheme in owners and owners[scheme] != owner:
                raise PluginConflict(
                    f"scheme {scheme!r} is claimed by two plugins: {owners[scheme]!r} and "
                    f"{owner!r}; uninstall one of them"
                )
            factories[scheme] = cast(BrokerFactory, factory)
            owners[scheme] = owner

        impl.function(register=register)
    return SchemeRegistry(factories, owners)


_default_registry: SchemeRegistry | None = None


def _registry(plugins: pluggy.PluginManager | None) -> SchemeRegistry:
    global _default_registry
    if plugins is not None:
        return scheme_registry(plugins)
    if _default_registry is None:
        _default_registry = scheme_registry(plugin_manager())
    return _default_registry


async def connect(url: str, *, plugins: pluggy.PluginManager | None = None) -> Broker[Any]:
    """Connect to the broker the URL names, through whichever plugin owns its scheme.

    >>> broker = await pulses.connect("memory://")         # doctest: +SKIP
    >>> broker = await pulses.connect("redis://localhost")  # doctest: +SKIP
    """
    return await _registry(plugins).factory(url)(url)
