"""The TLS client context adapters connect with (SMTP relays, HTTP endpoints).

Build one per system and share it: loading the CA store is the expensive part, and an ``SSLContext`` is
safe to use from many threads.
"""

from __future__ import annotations

import ssl

__all__ = ["client_context"]


def client_context(cafile: str | None = None, *, verify: bool = True) -> ssl.SSLContext:
    """A client context with the standard library's secure defaults.

    ``cafile`` is a PEM bundle of the CA(s) to trust instead of the system's store (an internal CA); it is
    loaded even when ``verify`` is False, so a wrong path fails when the system is configured. ``verify=False``
    accepts any certificate and host name: only for test relays and endpoints.
    """
    context = ssl.create_default_context(cafile=cafile)
    if not verify:
        context.check_hostname = False  # must come first: CERT_NONE is refused while it is set
        context.verify_mode = ssl.CERT_NONE
    return context
