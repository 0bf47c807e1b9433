"""HubSpot CRM adapter (registry name ``hubspot``): deals, notes, search polling and v3-signed webhooks.

Modules: :mod:`~adapters.hubspot.adapter` (operations and triggers), :mod:`~adapters.hubspot.errors` (429
policies, error bodies), :mod:`~adapters.hubspot.inbound` (search paging, webhook events).
"""

from __future__ import annotations

from adapters.hubspot.adapter import BulkFailure, HubspotAdapter, hubspot_properties

__all__ = ["BulkFailure", "HubspotAdapter", "hubspot_properties"]
