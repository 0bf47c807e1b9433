"""SAP S/4HANA over its published OData V2 APIs: :mod:`~adapters.sap.client` (auth, CSRF, paging, $batch),
:mod:`~adapters.sap.odata` (values and envelopes), :mod:`~adapters.sap.batch` (multipart/mixed),
:mod:`~adapters.sap.errors` (classification), :mod:`~adapters.sap.inbound` (polling, business events),
:mod:`~adapters.sap.outbound` (request bodies), :mod:`~adapters.sap.adapter` (the adapter)."""

from __future__ import annotations

from adapters.sap.adapter import SapAdapter

__all__ = ["SapAdapter"]
