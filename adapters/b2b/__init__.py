"""What the B2B document adapters share: the transport contract (AS2, SFTP, a local folder)."""

from adapters.b2b.transport import (
    KINDS,
    DirectoryTransport,
    InboundDocument,
    OutboundDocument,
    Receipt,
    Transport,
    open_transport,
    transport_schema,
)

__all__ = [
    "KINDS",
    "DirectoryTransport",
    "InboundDocument",
    "OutboundDocument",
    "Receipt",
    "Transport",
    "open_transport",
    "transport_schema",
]
