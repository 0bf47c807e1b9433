"""``${VAR}`` and ``${VAR:-default}`` interpolation, and redaction of the values it brings in.

Values that came from the environment are treated as secrets: they are remembered so that log lines and
error messages can be scrubbed of them (:func:`redact`), and an error about a missing variable names the
variable and where it was used, never a value.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Any

from bus.errors import ConfigError, Location
from bus.secrets import mask, register
from bus.yamlfile import YamlList, YamlMap

__all__ = ["interpolate", "redact"]

_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-(.*?))?\}|\$\$")


def redact(text: str) -> str:
    """``text`` with every secret masked in any encoding (see :func:`bus.secrets.mask`)."""
    return mask(text)


def _substitute(value: str, env: Mapping[str, str], where: Location | None) -> str:
    def repl(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"  # "$$" escapes a literal dollar sign
        name, default = match.group(1), match.group(2)
        if name in env:
            register(env[name])
            return env[name]
        if default is not None:
            return default
        raise ConfigError(f"environment variable ${{{name}}} is not set (and has no ':-default')", where)

    return _VAR.sub(repl, value)


def interpolate(node: Any, env: Mapping[str, str] | None = None, where: Location | None = None) -> Any:
    """A copy of ``node`` with ``${VAR}`` / ``${VAR:-default}`` replaced in every string.

    Locations recorded by :mod:`bus.yamlfile` are kept on the copy, so later errors still point at the file.
    """
    env = os.environ if env is None else env
    if isinstance(node, str):
        return _substitute(node, env, where) if "$" in node else node
    if isinstance(node, YamlMap):
        out = YamlMap()
        out.location, out.key_locations = node.location, node.key_locations
        for key, value in node.items():
            out[key] = interpolate(value, env, node.key_locations.get(key, where))
        return out
    if isinstance(node, dict):
        return {key: interpolate(value, env, where) for key, value in node.items()}
    if isinstance(node, YamlList):
        items = YamlList(interpolate(v, env, loc) for v, loc in zip(node, node.item_locations, strict=True))
        items.location, items.item_locations = node.location, node.item_locations
        return items
    if isinstance(node, list):
        return [interpolate(value, env, where) for value in node]
    return node
