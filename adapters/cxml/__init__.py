"""cXML adapter (registry name ``cxml``): OrderRequest to suppliers over HTTPS; ConfirmationRequest,
ShipNoticeRequest and StatusUpdateRequest from them on a webhook, answered with a cXML Response.

Modules: :mod:`~adapters.cxml.adapter` (operation, trigger, answers), :mod:`~adapters.cxml.document` (write,
safe read, our checks), :mod:`~adapters.cxml.profiles` (Coupa and Ariba conventions),
:mod:`~adapters.cxml.settings` (settings schema).
"""

from __future__ import annotations

from adapters.cxml.adapter import CxmlAdapter

__all__ = ["CxmlAdapter"]
