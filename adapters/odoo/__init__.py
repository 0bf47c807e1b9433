"""Odoo ERP adapter (registry name ``odoo``): JSON-2 or JSON-RPC, orders, partners, products, polling.

Modules: :mod:`~adapters.odoo.adapter` (operations and triggers), :mod:`~adapters.odoo.client` (the two
protocols), :mod:`~adapters.odoo.errors` (error objects), :mod:`~adapters.odoo.orders` (order payloads),
:mod:`~adapters.odoo.inbound` (write_date polling).
"""

from __future__ import annotations

from adapters.odoo.adapter import OdooAdapter

__all__ = ["OdooAdapter"]
