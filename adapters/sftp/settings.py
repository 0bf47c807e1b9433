"""Settings of an SFTP partner: the JSON Schema properties, the pinned host key and the login key."""

from __future__ import annotations

import base64
import binascii
import io
from typing import Any

import paramiko
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes

from adapters.b2b.pem import PEM_DESCRIPTION
from bus.errors import ConfigError

__all__ = ["SETTINGS_PROPERTIES", "load_private_key", "parse_host_key"]

_KEY_TYPES = ("ssh-ed25519", "ssh-rsa", "rsa-sha2-256", "rsa-sha2-512", "ecdsa-sha2-nistp256",
              "ecdsa-sha2-nistp384", "ecdsa-sha2-nistp521")

#: The settings of an SFTP partner, shared by the ``sftp`` adapter and the ``transport: {kind: sftp}`` block.
SETTINGS_PROPERTIES: dict[str, Any] = {
    "host": {"type": "string", "minLength": 1, "description": "SFTP server host name or address."},
    "port": {"type": "integer", "minimum": 1, "maximum": 65535, "default": 22},
    "user": {"type": "string", "minLength": 1, "description": "Login name."},
    "password": {"type": "string", "minLength": 1, "description": "Password login (use ${ENV_VAR})."},
    "key": {"type": "string", "minLength": 1,
            "description": f"Private key for key login (OpenSSH or PEM format). {PEM_DESCRIPTION}"},
    "key_password": {"type": "string", "description": "Passphrase of an encrypted private key."},
    "host_key": {"anyOf": [{"type": "string", "minLength": 1},
                           {"type": "array", "minItems": 1, "items": {"type": "string", "minLength": 1}}],
                 "description": "The server's public host key(s), as a known_hosts line or '<type> <base64>' "
                                "(ssh-keyscan -p PORT HOST). Any other key is refused."},
    "outbox": {"type": "string", "minLength": 1, "description": "Remote folder documents for the partner are "
                                                               "uploaded to (the partner's inbox)."},
    "inbox": {"type": "string", "minLength": 1, "description": "Remote folder the partner leaves documents "
                                                              "in for us (the partner's outbox)."},
    "processed": {"type": "string", "minLength": 1, "default": "processed",
                  "description": "Where fetched documents are moved once the bus has them (relative to the "
                                 "inbox unless absolute). Created when missing."},
    "patterns": {"type": "array", "minItems": 1, "items": {"type": "string", "minLength": 1}, "default": ["*"],
                 "description": "File name patterns to fetch (fnmatch)."},
    "settle": {"type": "number", "minimum": 0, "default": 2,
               "description": "Leave files modified in the last N seconds: the partner may still write them."},
    "max_files": {"type": "integer", "minimum": 1, "maximum": 10000, "default": 100,
                  "description": "Documents fetched per poll."},
    "max_size": {"type": "integer", "minimum": 1, "default": 50 * 1024 * 1024,
                 "description": "Larger remote files are skipped with a warning (bytes)."},
    "timeout": {"type": "number", "exclusiveMinimum": 0, "default": 30,
                "description": "Seconds for connecting and for each server answer."},
}


def parse_host_key(line: str) -> paramiko.PKey:
    """A public key from a known_hosts line (``[host]:port type base64``) or ``type base64``."""
    fields = line.split()
    while fields and fields[0] not in _KEY_TYPES:
        fields.pop(0)  # host patterns and markers come before the key type
    if len(fields) < 2:
        raise ConfigError(f"host_key {line[:60]!r}: expected '<type> <base64>' with a type of "
                          f"{', '.join(_KEY_TYPES[:2])}, ...")
    try:
        return paramiko.PKey.from_type_string(fields[0], base64.b64decode(fields[1]))
    except (binascii.Error, ValueError, paramiko.SSHException) as exc:
        raise ConfigError(f"host_key {line[:60]!r}: not a valid {fields[0]} key ({exc})") from None


def load_private_key(pem: bytes, password: str | None) -> paramiko.PKey:
    """A login key from OpenSSH, PKCS#8 or traditional PEM text (RSA, ECDSA or Ed25519), encrypted or not.

    cryptography reads every format; paramiko's key classes read OpenSSH's, so the key is handed over in that
    format, in memory. Errors name the setting and the problem, never the key."""
    secret = password.encode() if password else None
    key: PrivateKeyTypes
    try:
        if b"OPENSSH PRIVATE KEY" in pem:
            key = serialization.load_ssh_private_key(pem, secret)
        else:
            key = serialization.load_pem_private_key(pem, secret)
    except TypeError:
        raise ConfigError("settings/key is encrypted: set key_password" if secret is None
                          else "settings/key is not encrypted: remove key_password") from None
    except (ValueError, UnsupportedAlgorithm):
        raise ConfigError("settings/key: not a readable private key (expected OpenSSH or PEM text of an RSA, "
                          "ECDSA or Ed25519 key), or key_password is wrong") from None
    if not isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey):
        raise ConfigError(f"settings/key: {type(key).__name__} keys are not supported (use RSA, ECDSA or Ed25519)")
    text = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                             serialization.NoEncryption()).decode("ascii")
    kinds: list[tuple[type, type[paramiko.PKey]]] = [
        (rsa.RSAPrivateKey, paramiko.RSAKey), (ec.EllipticCurvePrivateKey, paramiko.ECDSAKey),
        (ed25519.Ed25519PrivateKey, paramiko.Ed25519Key)]
    for crypto_type, kind in kinds:
        if isinstance(key, crypto_type):
            return kind.from_private_key(io.StringIO(text))
    raise ConfigError(f"settings/key: {type(key).__name__} keys are not supported (use RSA, ECDSA or Ed25519)")
