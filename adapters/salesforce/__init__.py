"""Salesforce: the ``salesforce`` adapter (REST and composite writes, CDC over the Pub/Sub API, outbound
messages, SOQL polling). Modules: :mod:`~adapters.salesforce.auth` (JWT bearer / client credentials),
:mod:`~adapters.salesforce.errors` (error codes, API budget), :mod:`~adapters.salesforce.rest` (writes),
:mod:`~adapters.salesforce.cdc` (Pub/Sub API, Avro, bitmaps), :mod:`~adapters.salesforce.outbound` (SOAP),
:mod:`~adapters.salesforce.query` (SOQL polling)."""

from __future__ import annotations

from adapters.salesforce.adapter import SalesforceAdapter

__all__ = ["SalesforceAdapter"]
