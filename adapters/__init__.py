"""Adapters: one module per vendor product, plus the base contract (:mod:`adapters.base`)."""
