"""Broker plugins: discovery by entry point, schemes, conflicts and the errors users see."""

from importlib.metadata import entry_points
from types import SimpleNamespace
from typing import Any

import pluggy
import pytest

import pulses
import pulses.broker
from pulses import ConfigurationError, PluginConflict, UnknownScheme
from pulses._plugins import scheme_registry
from pulses.broker import hookimpl


def _plugin(*schemes: str, made: list[str] | None = None) -> object:
    async def factory(url: str) -> Any:
        if made is not None:
            made.append(url)
        return SimpleNamespace(url=url)

    class Plugin:
        @hookimpl
        def register_brokers(self, register: pulses.broker.Register) -> None:
            for scheme in schemes:
                register(scheme, factory)

    return Plugin()


def _manager(**plugins: object) -> pluggy.PluginManager:
    pm = pulses.plugin_manager(load_entrypoints=False)
    for name, plugin in plugins.items():
        pm.register(plugin, name=name)
    return pm


async def test_connect_picks_the_factory_registered_for_the_scheme() -> None:
    made: list[str] = []
    pm = _manager(fake=_plugin("fake", "FAKES", made=made))
    broker = await pulses.connect("fake://host/1", plugins=pm)
    assert broker.url == "fake://host/1"
    await pulses.connect("Fakes://x", plugins=pm)  # schemes are case-insensitive
    assert made == ["fake://host/1", "Fakes://x"]


@pytest.mark.parametrize("url", ["amqp://guest:guest@localhost", "postgres://u:guest@db/0"])
async def test_an_unknown_scheme_names_installed_schemes_and_suggests_no_guessed_package(
    url: str,
) -> None:
    pm = _manager(fake=_plugin("fake"))
    with pytest.raises(UnknownScheme) as info:
        await pulses.connect(url, plugins=pm)
    message = str(info.value)
    assert f"'{url.partition(':')[0]}://'" in message
    assert "installed: fake" in message
    assert "pip install" not in message  # "pulses-postgres" would be anyone's package
    assert "guest" not in message


@pytest.mark.parametrize(
    ("url", "package"),
    [
        ("rediss://localhost", "pulses-redis"),
        ("redis://localhost", "pulses-redis"),
        ("unix:///run/redis.sock", "pulses-redis"),
        ("memory://", "pulses-memory"),
    ],
)
async def test_a_shipped_scheme_without_its_plugin_names_the_package(
    url: str, package: str
) -> None:
    with pytest.raises(UnknownScheme, match=f"pip install {package}"):
        await pulses.connect(url, plugins=_manager())


async def test_two_plugins_claiming_one_scheme_is_an_error_naming_both() -> None:
    pm = _manager(first=_plugin("dup"), second=_plugin("dup"))
    with pytest.raises(PluginConflict) as info:
        await pulses.connect("dup://x", plugins=pm)
    assert "first" in str(info.value)
    assert "second" in str(info.value)


async def test_a_plugin_registering_garbage_is_named() -> None:
    class Bad:
        @hookimpl
        def register_brokers(self, register: pulses.broker.Register) -> None:
            register("not a scheme", None)  # type: ignore[arg-type]  # deliberately wrong

    with pytest.raises(ConfigurationError, match="plugin 'bad' registered an invalid scheme"):
        await pulses.connect("x://", plugins=_manager(bad=Bad()))


def test_a_misspelt_hook_is_caught_when_the_plugin_registers() -> None:
    class Typo:
        @hookimpl
        def register_broker(self, register: pulses.broker.Register) -> None:
            """Missing the s."""

    pm = _manager(typo=Typo())
    with pytest.raises(pluggy.PluginValidationError):
        pm.check_pending()


def test_every_installed_pulses_entry_point_loads_and_implements_the_hook() -> None:
    found = {ep.name: ep for ep in entry_points(group="pulses")}
    assert {"memory", "redis"} <= set(found)
    for ep in found.values():
        assert callable(getattr(ep.load(), "register_brokers", None)), ep.value


def test_the_default_manager_knows_the_installed_brokers() -> None:
    registry = scheme_registry(pulses.plugin_manager())
    assert {"memory", "redis", "rediss", "unix"} <= set(registry.factories)
    assert registry.owners["memory"] == "memory"


def test_a_plugin_that_fails_to_import_costs_only_its_own_schemes(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import importlib.metadata

    from pulses import _plugins

    installed = list(entry_points(group="pulses"))
    broken = importlib.metadata.EntryPoint("broken", "no_such_module_for_pulses", "pulses")

    def with_broken(*, group: str) -> list[importlib.metadata.EntryPoint]:
        assert group == "pulses"
        return [*installed, broken]

    monkeypatch.setattr(importlib.metadata, "entry_points", with_broken)
    monkeypatch.setattr(_plugins, "_broken", {})
    registry = scheme_registry(pulses.plugin_manager())
    assert {"memory", "redis"} <= set(registry.factories)
    assert "'broken'" in caplog.text
    assert "no_such_module_for_pulses" in caplog.text
    with pytest.raises(UnknownScheme, match="plugin 'broken' failed to import: ModuleNotFound"):
        registry.factory("broken://127.0.0.1")
