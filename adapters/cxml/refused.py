"""Refused cXML requests as the bus keeps them (dead letters): the document without its secrets.

A refused request is kept as it arrived — an XML bomb stays text, never parsed with entities — except that
every ``SharedSecret`` and ``CredentialMac`` value is replaced by ``***``: a dead letter is read by operators
and must not hold a supplier's secret, right or wrong. Such a copy cannot be authenticated again, so a re-read
(:meth:`CxmlAdapter.reprocess`) takes the supplier a refusal after authentication named, and refuses to guess
one for a request that failed before it.
"""

from __future__ import annotations

import re

__all__ = ["masked"]

_SECRET = re.compile(rb"(<\s*(?:[\w.-]+:)?(SharedSecret|CredentialMac)\b[^>]*>)(.*?)(<\s*/\s*(?:[\w.-]+:)?\2\s*>)",
                     re.DOTALL | re.IGNORECASE)
# an opening tag not followed by the masked value (unclosed, the document cut off): everything after it goes
_OPEN_SECRET = re.compile(rb"(<\s*(?:[\w.-]+:)?(?:SharedSecret|CredentialMac)\b[^>]*(?<!/)>)(?!\*\*\*<).*",
                          re.DOTALL | re.IGNORECASE)


def masked(body: bytes) -> bytes:
    """``body`` with the values of its secret elements replaced by ``***`` (an unclosed one: the rest cut)."""
    out = _SECRET.sub(lambda m: m.group(1) + b"***" + m.group(4), body)
    return _OPEN_SECRET.sub(lambda m: m.group(1) + b"*** (cut)", out)
