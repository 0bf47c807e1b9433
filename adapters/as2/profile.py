"""An AS2 partner profile from settings: our station (keys) and the partner (certificate, security options).

One system (or one ``transport: {kind: as2}`` block) is one relationship: our AS2 id ``as_from`` with its key
pair, and the partner ``as_to`` with its certificate, URL and the options both sides agreed on. The security
options are symmetric, as in most AS2 products: ``sign: true`` signs what we send and refuses unsigned
messages from the partner; ``encrypt: true`` likewise for encryption.
"""

from __future__ import annotations

import hashlib
import re
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pyas2lib import Organization, Partner
from pyas2lib.constants import DIGEST_ALGORITHMS, ENCRYPTION_ALGORITHMS
from pyas2lib.exceptions import AS2Exception, ImproperlyConfigured

from adapters.b2b.pem import PEM_DESCRIPTION, load_pem
from bus.errors import ConfigError

__all__ = ["KEYS_REQUIRED", "KEY_SETTINGS", "SETTINGS_PROPERTIES", "As2Profile", "load_profile", "message_id_for"]

_DIGESTS = [d for d in DIGEST_ALGORITHMS if d != "md5"]  # MD5 MICs are refused by current AS2 products

#: The settings of an AS2 relationship, shared by the ``as2`` adapter and the ``transport: {kind: as2}`` block.
SETTINGS_PROPERTIES: dict[str, Any] = {
    "url": {"type": "string", "pattern": "^https?://", "description": "The partner's AS2 receiving URL."},
    "as_from": {"type": "string", "minLength": 1, "maxLength": 128, "description": "Our AS2 id (AS2-From)."},
    "as_to": {"type": "string", "minLength": 1, "maxLength": 128, "description": "The partner's AS2 id (AS2-To)."},
    "key": {"type": "string", "minLength": 1,
            "description": f"Our private key: signs messages and MDNs, decrypts what the partner sends. "
                           f"{PEM_DESCRIPTION}"},
    "key_password": {"type": "string", "description": "Passphrase of an encrypted private key."},
    "certificate": {"type": "string", "minLength": 1,
                    "description": f"Our certificate (give it to the partner). {PEM_DESCRIPTION}"},
    "partner_certificate": {"type": "string", "minLength": 1,
                            "description": f"The partner's certificate: verifies its signatures, encrypts to it. "
                                           f"{PEM_DESCRIPTION}"},
    "partner_ca": {"type": "string", "minLength": 1,
                   "description": f"CA certificate(s) the partner's certificate is checked against. {PEM_DESCRIPTION}"},
    "validate_certificates": {"type": "boolean", "default": True,
                              "description": "Check the partner certificate's validity and chain (a self-signed "
                                             "one is accepted as it is)."},
    "sign": {"type": "boolean", "default": True, "description": "Sign outbound; require signed inbound."},
    "encrypt": {"type": "boolean", "default": True, "description": "Encrypt outbound; require encrypted inbound."},
    "compress": {"type": "boolean", "default": False, "description": "Compress outbound (inbound: either)."},
    "digest": {"enum": _DIGESTS, "default": "sha256", "description": "Signature and MIC digest."},
    "encryption": {"enum": list(ENCRYPTION_ALGORITHMS), "default": "aes_256_cbc"},
    "signature_algorithm": {"enum": ["rsassa_pkcs1v15", "rsassa_pss"], "default": "rsassa_pkcs1v15"},
    "key_encryption": {"enum": ["rsaes_pkcs1v15", "rsaes_oaep"], "default": "rsaes_pkcs1v15"},
    "mdn": {"enum": ["sync", "async", "none"], "default": "sync",
            "description": "How the partner answers what we send: an MDN on the same connection, later to "
                           "mdn_url, or not at all."},
    "mdn_signed": {"type": "boolean", "default": True, "description": "Ask for (and require) signed MDNs."},
    "mdn_url": {"type": "string", "pattern": "^https?://",
                "description": "Where the partner posts asynchronous MDNs: this system's 'mdn' webhook, e.g. "
                               "https://bus.example.com/hooks/<system>/mdn."},
    "subject": {"type": "string", "default": "AS2 message"},
    "domain": {"type": "string", "pattern": "^[A-Za-z0-9.-]+$",
               "description": "Right-hand side of our Message-IDs (default: derived from as_from)."},
    "timeout": {"type": "number", "exclusiveMinimum": 0, "default": 60,
                "description": "Seconds to wait for the partner (a synchronous MDN can take a while)."},
    "verify_tls": {"type": "boolean", "default": True, "description": "Check the partner's HTTPS certificate."},
    "http_auth": {"type": "object", "additionalProperties": False, "required": ["username", "password"],
                  "properties": {"username": {"type": "string", "minLength": 1},
                                 "password": {"type": "string", "minLength": 1, "description": "Use ${ENV_VAR}."}},
                  "description": "HTTP Basic authentication, when the partner's AS2 server asks for it on top "
                                 "of the S/MIME signatures."},
    "tls_ca": {"type": "string", "minLength": 1,
               "description": f"CA certificate(s) the partner's HTTPS certificate is checked against, when it is "
                              f"not from a public CA. {PEM_DESCRIPTION}"},
}

#: Our key pair and the partner's certificate: needed unless signing, encryption and signed MDNs are all off.
KEY_SETTINGS = ("key", "certificate", "partner_certificate")

#: The schema clause saying so (JSON Schema ``if``/``then``), for the adapter's and the transport's schemas.
KEYS_REQUIRED: dict[str, Any] = {
    "if": {"anyOf": [
        {"properties": {"sign": {"const": True}}}, {"not": {"required": ["sign"]}},
        {"properties": {"encrypt": {"const": True}}}, {"not": {"required": ["encrypt"]}},
        {"allOf": [{"not": {"properties": {"mdn": {"const": "none"}}, "required": ["mdn"]}},
                   {"anyOf": [{"properties": {"mdn_signed": {"const": True}}},
                              {"not": {"required": ["mdn_signed"]}}]}]}]},
    "then": {"required": list(KEY_SETTINGS)},
}

_ATOM = re.compile(r"[^A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]+")


def message_id_for(key: str, domain: str) -> tuple[str, str]:
    """``(left part, full Message-ID)`` derived from a delivery's key: the same key gives the same id, so a
    retry after a lost answer is recognised by the partner as the same message."""
    left = _ATOM.sub("-", key).strip(".-") or "m"
    if len(left) > 180:
        left = hashlib.sha256(key.encode()).hexdigest()
    return left, f"{left}@{domain}"


@dataclass(frozen=True)
class As2Profile:
    """The pyas2lib objects of one relationship plus the transport options pyas2lib does not hold."""

    organization: Organization
    partner: Partner
    url: str | None
    as_from: str
    as_to: str
    domain: str
    mdn: str
    subject: str
    timeout: float
    verify_tls: bool | ssl.SSLContext
    http_auth: tuple[str, str] | None = None


def load_profile(settings: Mapping[str, Any], where: str = "settings") -> As2Profile:
    """Build the profile; :class:`~bus.errors.ConfigError` names the setting, never a key's content."""
    s = dict(settings)
    mdn = str(s.get("mdn", "sync"))
    secured = bool(s.get("sign", True)) or bool(s.get("encrypt", True)) or \
        (bool(s.get("mdn_signed", True)) and mdn != "none")
    for name in ("as_from", "as_to", *(KEY_SETTINGS if secured else ())):
        if not s.get(name):
            raise ConfigError(f"{where}/{name} is required for AS2" + (" (sign, encrypt or a signed MDN is on)"
                                                                        if name in KEY_SETTINGS else ""))
    if bool(s.get("key")) != bool(s.get("certificate")):
        raise ConfigError(f"{where}: set both key and certificate (our key pair), or neither")
    if mdn == "async" and not s.get("mdn_url"):
        raise ConfigError(f"{where}/mdn_url is required when mdn is 'async' (where the partner posts its MDNs)")
    as_from = str(s["as_from"])
    domain = str(s.get("domain") or re.sub(r"[^a-z0-9-]+", "-", as_from.lower()).strip("-") or "as2")
    own = load_pem(str(s["key"]), f"{where}/key") + load_pem(str(s["certificate"]), f"{where}/certificate") \
        if s.get("key") else None
    partner_cert = load_pem(str(s["partner_certificate"]), f"{where}/partner_certificate") \
        if s.get("partner_certificate") else None
    partner_ca = load_pem(str(s["partner_ca"]), f"{where}/partner_ca") if s.get("partner_ca") else None
    digest = str(s.get("digest", "sha256"))
    try:
        organization = Organization(as2_name=as_from, sign_key=own, sign_key_pass=s.get("key_password"),
                                    decrypt_key=own, decrypt_key_pass=s.get("key_password"),
                                    mdn_url=s.get("mdn_url"), domain=domain)
        partner = Partner(
            as2_name=str(s["as_to"]), verify_cert=partner_cert, verify_cert_ca=partner_ca, encrypt_cert=partner_cert,
            encrypt_cert_ca=partner_ca, validate_certs=bool(s.get("validate_certificates", True)),
            compress=bool(s.get("compress", False)), encrypt=bool(s.get("encrypt", True)),
            enc_alg=str(s.get("encryption", "aes_256_cbc")), sign=bool(s.get("sign", True)), digest_alg=digest,
            mdn_mode={"sync": "SYNC", "async": "ASYNC"}.get(mdn),
            mdn_digest_alg=digest if s.get("mdn_signed", True) and mdn != "none" else None,
            sign_alg=str(s.get("signature_algorithm", "rsassa_pkcs1v15")),
            key_enc_alg=str(s.get("key_encryption", "rsaes_pkcs1v15")))
        # Fail now, not on the first message, when the partner certificate is unusable (expired, wrong chain).
        if partner_cert is not None:
            partner.load_verify_cert()
    except (AS2Exception, ImproperlyConfigured) as exc:
        raise ConfigError(f"{where}: AS2 keys or certificates: {exc}") from None
    except (ValueError, TypeError, OSError) as exc:
        raise ConfigError(f"{where}: AS2 keys or certificates cannot be loaded ({type(exc).__name__}: "
                          f"{str(exc)[:200]})") from None
    return As2Profile(organization, partner, s.get("url"), as_from, str(s["as_to"]), domain, mdn,
                      str(s.get("subject", "AS2 message")), float(s.get("timeout", 60)),
                      _tls(s, where), _basic_auth(s.get("http_auth")))


def _basic_auth(value: Any) -> tuple[str, str] | None:
    if not isinstance(value, Mapping):
        return None
    return str(value["username"]), str(value["password"])


def _tls(s: Mapping[str, Any], where: str) -> bool | ssl.SSLContext:
    """What httpx verifies the partner's HTTPS certificate with: the system CAs, a given CA, or nothing."""
    if not s.get("verify_tls", True):
        return False
    if not s.get("tls_ca"):
        return True
    pem = load_pem(str(s["tls_ca"]), f"{where}/tls_ca")
    try:
        return ssl.create_default_context(cadata=pem.decode("ascii", "replace"))
    except (ssl.SSLError, ValueError) as exc:
        raise ConfigError(f"{where}/tls_ca: not a usable CA certificate ({type(exc).__name__})") from None
