"""ironbus: the routing core. Knows no vendor; adapters plug in through :mod:`adapters.base`."""

from __future__ import annotations

from bus.config import Config, RouteConfig, SystemConfig, TargetConfig, load_config
from bus.envelope import Event
from bus.errors import (
    ConfigError,
    DecodeError,
    DeliveryError,
    IronbusError,
    MappingError,
    PermanentError,
    SchemaViolation,
    TransientError,
    UnknownNameError,
)

__all__ = [
    "Config",
    "ConfigError",
    "DecodeError",
    "DeliveryError",
    "Event",
    "IronbusError",
    "MappingError",
    "PermanentError",
    "RouteConfig",
    "SchemaViolation",
    "SystemConfig",
    "TargetConfig",
    "TransientError",
    "UnknownNameError",
    "load_config",
]
