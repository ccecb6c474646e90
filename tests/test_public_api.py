"""The public surface: what each public module exports, and the names its objects report.

The rules:

- ``__all__`` is complete: every public attribute of a public module (no leading ``_``,
  not a module) is in its ``__all__``, unless it is an import from outside the project
  (``Path``, ``Sequence``) or a name another public module exports (``MemoryBroker``
  used by ``pulses_memory.testing``); and every name in ``__all__`` exists.
- Every class and function in an ``__all__`` reports a public module as its
  ``__module__``: the module itself, or the public module that defines it and lists it
  in its own ``__all__`` (``pulses.Broker`` is ``pulses.broker.Broker``). Reprs,
  ``help()``, tracebacks and pickles then name a path users can import.
- Plugin API names that ``pulses`` exported before ``pulses.broker`` existed still work
  from ``pulses`` for one release, with a ``DeprecationWarning`` naming the new path.
"""

from __future__ import annotations

import importlib
import inspect
import pickle
import re
from types import ModuleType

import pytest

import pulses
import pulses.broker

PUBLIC_MODULES = (
    "pulses",
    "pulses.broker",
    "pulses.testing",
    "pulses.testing.conformance",
    "pulses.prometheus",
    "pulses_memory",
    "pulses_memory.testing",
    "pulses_redis",
    "pulses_redis.testing",
)
PROJECT_PACKAGES = ("pulses", "pulses_memory", "pulses_redis")

MOVED_TO_BROKER = (
    "DEFAULT_KEY_WINDOW_MS",
    "BrokerFactory",
    "Capabilities",
    "Consumer",
    "Reclaimed",
    "Register",
    "Subscription",
    "check_codec",
    "check_keys",
    "check_name",
    "check_publish",
    "check_streams",
    "check_window",
    "decode_fields",
    "encode_fields",
    "hookimpl",
    "message_id_of",
    "redelivery_fields",
)


def _module(name: str) -> ModuleType:
    return importlib.import_module(name)


def _exports(module: ModuleType) -> list[str]:
    names: list[str] = module.__all__
    return names


def _home(obj: object) -> str | None:
    """The module an object says it comes from; None for plain values (ints, aliases)."""
    if inspect.isclass(obj) or inspect.isfunction(obj):
        return obj.__module__
    return None


def _is_public_home(module: str, name: str, obj: object) -> bool:
    return module in PUBLIC_MODULES and getattr(_module(module), name, None) is obj


@pytest.mark.parametrize("name", PUBLIC_MODULES)
def test_every_name_in_all_exists(name: str) -> None:
    module = _module(name)
    missing = [export for export in _exports(module) if not hasattr(module, export)]
    assert missing == []
    assert len(set(_exports(module))) == len(_exports(module)), "a name is listed twice"


@pytest.mark.parametrize("name", PUBLIC_MODULES)
def test_all_lists_every_public_attribute(name: str) -> None:
    module = _module(name)
    unlisted = []
    for attribute in dir(module):
        obj = getattr(module, attribute)
        if attribute.startswith("_") or isinstance(obj, ModuleType):
            continue
        if attribute in _exports(module):
            continue
        home = getattr(obj, "__module__", None)
        if isinstance(home, str) and home != name:
            foreign = home.partition(".")[0] not in PROJECT_PACKAGES
            if foreign or _is_public_home(home, attribute, obj):
                continue
        unlisted.append(attribute)
    assert unlisted == [], f"{name} has public names missing from __all__"


@pytest.mark.parametrize("name", PUBLIC_MODULES)
def test_every_export_names_its_public_module(name: str) -> None:
    module = _module(name)
    wrong = {}
    for export in _exports(module):
        obj = getattr(module, export)
        home = _home(obj)
        if home is None or home == name:
            continue
        if not _is_public_home(home, export, obj):
            wrong[export] = home
    assert wrong == {}, f"{name} exports names whose __module__ is not a public home"


def test_names_shared_by_the_application_and_plugin_apis_are_defined_in_the_plugin_api() -> None:
    shared = sorted(set(pulses.__all__) & set(pulses.broker.__all__))
    assert shared == [
        "Broker",
        "ConsumerInfo",
        "DeadLetterRecord",
        "GroupStats",
        "StreamAdmin",
        "StreamStats",
        "TrimStats",
    ]
    for export in shared:
        assert getattr(pulses, export) is getattr(pulses.broker, export)
        assert getattr(pulses, export).__module__ == "pulses.broker"


@pytest.mark.parametrize("name", MOVED_TO_BROKER)
def test_a_moved_name_still_works_from_pulses_with_a_warning_naming_its_new_home(
    name: str,
) -> None:
    message = f"pulses.{name} is deprecated; import it from pulses.broker"
    with pytest.warns(DeprecationWarning, match=re.escape(message)) as caught:
        old = getattr(pulses, name)
    assert old is getattr(pulses.broker, name)
    assert [str(w.message) for w in caught] == [message]
    assert caught[0].filename == __file__, "the warning points at the caller"
    assert name not in pulses.__all__
    assert name not in dir(pulses)


def test_from_pulses_import_of_a_moved_name_warns_too() -> None:
    with pytest.warns(DeprecationWarning, match=r"pulses\.Capabilities is deprecated"):
        from pulses import Capabilities
    assert Capabilities is pulses.broker.Capabilities


def test_an_unknown_name_is_an_attribute_error_without_a_warning() -> None:
    with pytest.raises(AttributeError, match="module 'pulses' has no attribute 'Nope'"):
        pulses.Nope  # type: ignore[attr-defined]  # noqa: B018
    assert not hasattr(pulses, "__wrapped__")


def test_public_values_pickle_by_their_public_path() -> None:
    retry = pulses.Retry(after_ms=5)
    data = pickle.dumps(retry)
    assert b"pulses._" not in data
    assert pickle.loads(data) == retry
