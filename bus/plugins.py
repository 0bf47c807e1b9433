"""Finding adapters: the entry-point group ``ironbus.adapters``, loaded lazily by name.

Only the adapters that routes.yaml names are imported, so a broken or slow-to-import plug-in that is not
used cannot stop the bus. Built-in adapters register through the same group as third-party ones.
"""

from __future__ import annotations

from functools import cache
from importlib.metadata import EntryPoint, entry_points

from adapters.base import Adapter
from bus.errors import ConfigError, Location, UnknownNameError

__all__ = ["GROUP", "adapter_names", "load_adapter_class", "register"]

GROUP = "ironbus.adapters"
_registered: dict[str, type[Adapter]] = {}


@cache
def _entry_points() -> dict[str, EntryPoint]:
    return {ep.name: ep for ep in entry_points(group=GROUP)}


def register(name: str, cls: type[Adapter]) -> None:
    """Register an adapter class in-process (tests, embedding); entry points are the normal way."""
    _registered[name] = cls


def adapter_names() -> list[str]:
    """Every installed adapter name, sorted."""
    return sorted(set(_entry_points()) | set(_registered))


def load_adapter_class(name: str, location: Location | None = None) -> type[Adapter]:
    """Import and return the adapter class registered as ``name``."""
    if name in _registered:
        return _registered[name]
    ep = _entry_points().get(name)
    if ep is None:
        raise UnknownNameError("adapter", name, adapter_names(), location)
    try:
        cls = ep.load()
    except Exception as exc:  # a plug-in's import error must become a readable config error
        raise ConfigError(f"adapter {name!r} ({ep.value}) failed to import: {exc}", location) from None
    if not (isinstance(cls, type) and issubclass(cls, Adapter)):
        raise ConfigError(f"adapter {name!r} ({ep.value}) is not a subclass of adapters.base.Adapter", location)
    return cls
