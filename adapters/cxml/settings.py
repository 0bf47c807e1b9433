"""Settings schema of the ``cxml`` adapter."""

from __future__ import annotations

from typing import Any

from adapters.cxml.profiles import PROFILES

__all__ = ["SETTINGS_SCHEMA"]

_CREDENTIAL = {
    "type": "object", "additionalProperties": False, "required": ["identity"],
    "properties": {
        "domain": {"type": "string", "minLength": 1, "description": "Credential domain (DUNS, NetworkID …)."},
        "identity": {"type": "string", "minLength": 1, "description": "The identity in that domain."},
    },
}
_SECRET = {"type": "string", "minLength": 1, "description": "A shared secret (use ${ENV} interpolation)."}

_SUPPLIER = {
    "type": "object", "additionalProperties": False, "required": ["to"],
    "properties": {
        "url": {"type": "string", "pattern": "^https?://",
                "description": "The supplier's cXML endpoint our OrderRequests are POSTed to."},
        "to": {**_CREDENTIAL, "description": "The supplier's credential (Header/To)."},
        "shared_secret": {**_SECRET, "description": "The secret the supplier expects in our Sender credential."},
        "inbound": {
            "type": "object", "additionalProperties": False, "required": ["identity", "shared_secret"],
            "description": "The Sender credential the supplier uses when it posts confirmations, ship notices and "
                           "status updates to us.",
            "properties": {**_CREDENTIAL["properties"], "shared_secret": _SECRET},  # type: ignore[dict-item]
        },
        "extrinsics": {"type": "object", "additionalProperties": {"type": "string"},
                       "description": "Extrinsic name -> value added to every OrderRequestHeader for this supplier."},
        "required_extrinsics": {"type": "array", "items": {"type": "string"},
                                "description": "Extrinsics the supplier requires; an order without them is refused "
                                               "before it is sent."},
        "deployment_mode": {"enum": ["production", "test"], "description": "Overrides the system's mode."},
        "version": {"type": "string", "pattern": r"^1\.2\.[0-9]{3}$",
                    "description": "cXML version the supplier speaks (DOCTYPE), e.g. 1.2.050."},
    },
}

SETTINGS_SCHEMA: dict[str, Any] = {
    "type": "object", "additionalProperties": False, "required": ["from", "suppliers"],
    "properties": {
        "profile": {"enum": sorted(PROFILES), "default": "generic",
                    "description": "Network conventions: answer time limits, retry intervals, credential domain."},
        "from": {**_CREDENTIAL, "description": "Our (the buyer's) credential, Header/From."},
        "sender": {**_CREDENTIAL, "description": "Header/Sender credential when it differs from 'from' (e.g. a "
                                                 "network hub)."},
        "user_agent": {"type": "string", "description": "Header/Sender/UserAgent."},
        "deployment_mode": {"enum": ["production", "test"], "default": "production",
                            "description": "Request/@deploymentMode of outbound requests."},
        "payload_domain": {"type": "string", "pattern": "^[A-Za-z0-9.-]+$", "default": "ironbus.local",
                           "description": "Domain part of the payloadIDs we issue."},
        "version": {"type": "string", "pattern": r"^1\.2\.[0-9]{3}$", "default": "1.2.050",
                    "description": "cXML version written in the DOCTYPE."},
        "timeout": {"type": "number", "exclusiveMinimum": 0,
                    "description": "Seconds to wait for a supplier's Response (default from the profile)."},
        "retry_after": {"type": "number", "minimum": 0,
                        "description": "Delay before retrying after a 5xx answer (default from the profile)."},
        "verify_tls": {"type": "boolean", "default": True, "description": "Check the supplier's certificate."},
        "max_bytes": {"type": "integer", "minimum": 1024, "default": 10485760,
                      "description": "Largest inbound document accepted."},
        "bill_to": {"type": "object", "description": "Our billing Address (xmldict shape: Name, PostalAddress …), "
                                                     "written as BillTo when a mapping gives none (the DTD requires "
                                                     "one)."},
        "dtd": {"type": "string", "description": "Path of a local cXML DTD to validate inbound documents against "
                                                 "(optional; our own checks always run)."},
        "suppliers": {"type": "object", "minProperties": 1, "additionalProperties": _SUPPLIER,
                      "description": "Suppliers by name (the name a mapping's 'supplier' gives)."},
    },
}
