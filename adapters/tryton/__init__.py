"""Tryton ERP adapter: JSON-RPC client, typed-value codec, poll triggers and sale/purchase operations."""

from __future__ import annotations

from adapters.tryton.adapter import TrytonAdapter

__all__ = ["TrytonAdapter"]
