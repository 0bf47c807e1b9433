"""Microsoft Dynamics 365 / Dataverse: the ``dynamics`` adapter over the Web API (OData v4). Modules:
:mod:`~adapters.dynamics.adapter`, :mod:`~adapters.dynamics.batch` ($batch), :mod:`~adapters.dynamics.errors`."""

from __future__ import annotations

from adapters.dynamics.adapter import DynamicsAdapter

__all__ = ["DynamicsAdapter"]
