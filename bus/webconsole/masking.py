"""Systems' settings as the console shows them: every secret masked, whatever its name or source."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from bus.interpolate import redact

__all__ = ["MASK", "masked"]

MASK = "••••••"
# names that hold a credential in some adapter's settings (password, client_secret, api_key, token, …)
_SECRET = re.compile(r"pass|secret|token|key|auth|credential|signature|cookie|private|cert|session|pin\b",
                     re.IGNORECASE)
# URLs with user:password@
_USERINFO = re.compile(r"(?<=://)[^/@\s:]+:[^/@\s]+@")


def masked(value: Any, name: str = "") -> Any:
    """A copy of ``value`` (settings) with secret-named values masked, interpolated ``${ENV}`` values redacted
    and passwords in URLs hidden. Containers under a secret name are masked whole."""
    if name and _SECRET.search(name):
        return MASK if value not in (None, "", {}, []) else value
    if isinstance(value, Mapping):
        return {str(k): masked(v, str(k)) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [masked(v, name) for v in value]
    if isinstance(value, str):
        return _USERINFO.sub(f"{MASK}@", redact(value))
    return value
