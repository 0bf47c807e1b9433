"""AS2: documents to and from a trading partner (the ``as2`` adapter and transport kind), built on pyas2lib."""

from adapters.as2._compat import harden, install

install()  # before anything imports pyas2lib (and with it oscrypto): see _compat
harden()

from adapters.as2.adapter import As2Adapter  # noqa: E402
from adapters.as2.transport import As2Transport  # noqa: E402

__all__ = ["As2Adapter", "As2Transport"]
