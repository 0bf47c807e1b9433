"""Generic HTTP delivery: the ``http`` adapter and the client vendor adapters build on.

Modules: :mod:`~adapters.http.transport` (sending), :mod:`~adapters.http.pooled` (pooling),
:mod:`~adapters.http.auth` (credentials, OAuth2), :mod:`~adapters.http.errors` (status -> transient/permanent),
:mod:`~adapters.http.client` (one system's client), :mod:`~adapters.http.template` (URL templates),
:mod:`~adapters.http.settings` (schema), :mod:`~adapters.http.adapter` (the adapter).
"""

from __future__ import annotations

from adapters.http.adapter import HttpAdapter, outcome_from_response
from adapters.http.auth import ApiKeyAuth, Auth, BasicAuth, BearerAuth, OAuth2ClientCredentials, auth_from_settings
from adapters.http.client import HttpClient, join_url
from adapters.http.errors import ErrorPolicy, error_for_response, parse_retry_after
from adapters.http.pooled import PooledTransport
from adapters.http.transport import HttpxTransport, PoolLimits, Request, Response, Timeouts, Transport

__all__ = [
    "ApiKeyAuth",
    "Auth",
    "BasicAuth",
    "BearerAuth",
    "ErrorPolicy",
    "HttpAdapter",
    "HttpClient",
    "HttpxTransport",
    "OAuth2ClientCredentials",
    "PoolLimits",
    "PooledTransport",
    "Request",
    "Response",
    "Timeouts",
    "Transport",
    "auth_from_settings",
    "error_for_response",
    "join_url",
    "outcome_from_response",
    "parse_retry_after",
]
