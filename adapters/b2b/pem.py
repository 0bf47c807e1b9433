"""Keys and certificates in settings: inline PEM (typically ``${ENV}``) or the path of a PEM file."""

from __future__ import annotations

from pathlib import Path

from bus.errors import ConfigError

__all__ = ["PEM_DESCRIPTION", "load_pem"]

PEM_DESCRIPTION = "Inline PEM text (use ${ENV_VAR}) or the path of a PEM file."


def load_pem(value: str, setting: str) -> bytes:
    """The PEM bytes a setting names. The error names the setting and the file, never the key's content."""
    if "-----BEGIN " in value:
        return value.strip().encode("ascii", "replace") + b"\n"
    path = Path(value).expanduser()
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{setting}: cannot read PEM file {path}: {exc.strerror or exc}") from None
    if b"-----BEGIN " not in data:
        raise ConfigError(f"{setting}: {path} holds no PEM block (expected '-----BEGIN ...')")
    return data
