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
from bus.expr import Expression, compile_expression
from bus.functions import IronbusFunctions
from bus.mapping import Mapping, load_mapping
from bus.pipeline import Dispatch, Pipeline
from bus.schemas import SchemaRegistry, default_registry
from bus.xmldict import xml_to_dict
from bus.xref import MemoryXref, XrefStore

__all__ = [
    "Config",
    "ConfigError",
    "DecodeError",
    "DeliveryError",
    "Dispatch",
    "Event",
    "Expression",
    "IronbusError",
    "IronbusFunctions",
    "Mapping",
    "MappingError",
    "MemoryXref",
    "PermanentError",
    "Pipeline",
    "RouteConfig",
    "SchemaRegistry",
    "SchemaViolation",
    "SystemConfig",
    "TargetConfig",
    "TransientError",
    "UnknownNameError",
    "XrefStore",
    "compile_expression",
    "default_registry",
    "load_config",
    "load_mapping",
    "xml_to_dict",
]
