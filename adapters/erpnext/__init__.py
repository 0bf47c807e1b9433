"""ERPNext / Frappe adapter (registry name ``erpnext``): REST resources and methods with token auth.

Modules: :mod:`~adapters.erpnext.adapter` (operations and triggers), :mod:`~adapters.erpnext.client` (REST calls,
error bodies), :mod:`~adapters.erpnext.documents` (orders, submit/cancel/amend, master data),
:mod:`~adapters.erpnext.inbound` (modified polling, webhooks).
"""

from __future__ import annotations

from adapters.erpnext.adapter import ErpnextAdapter

__all__ = ["ErpnextAdapter"]
