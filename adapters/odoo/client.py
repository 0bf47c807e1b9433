"""Calling Odoo model methods over the JSON-2 API (Odoo 19+) or the older ``/jsonrpc`` (Odoo <= 18).

JSON-2: ``POST /json/2/<model>/<method>`` with ``Authorization: bearer <API key>``, ``X-Odoo-Database``
and a JSON object of named arguments (``ids``, ``context`` and the method's own parameters); the answer is
the bare return value, errors are real HTTP statuses with Odoo's error object.

JSON-RPC: ``POST /jsonrpc`` with ``{"service": "object", "method": "execute_kw", "args": [db, uid, key,
model, method, args, kwargs]}``, after ``common.authenticate`` gave the user id; errors come back as HTTP 200
with ``{"error": {...}}``. Recordset methods take the ids as the first positional argument, everything else
goes as keyword arguments, so one call shape (:meth:`OdooClient.call`) serves both.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import structlog

from adapters.http import Auth, HttpClient
from adapters.http.settings import make_transport, parse_client_settings
from adapters.odoo.errors import OdooErrors, error_from_object
from bus.errors import PermanentError, TransientError

__all__ = ["OdooClient", "Protocol"]

log = structlog.get_logger(__name__)

Protocol = Literal["json2", "jsonrpc"]


class _Bearer(Auth):
    """Odoo writes the scheme in lower case in its docs; HTTP schemes are case-insensitive, we follow them."""

    def __init__(self, key: str) -> None:
        self.key = key

    def apply(self, headers: dict[str, str], params: dict[str, str]) -> object:
        headers["Authorization"] = f"bearer {self.key}"
        return None


class OdooClient:
    """One Odoo database. Thread-safe: the HTTP client is, and the JSON-RPC user id is set once under a lock."""

    def __init__(self, system: str, settings: Mapping[str, Any]) -> None:
        self.system = system
        self.protocol: Protocol = settings.get("protocol", "json2")
        self.database = str(settings.get("database") or "")
        self._key = str(settings["api_key"])
        self._login = str(settings.get("login") or "")
        self.context: dict[str, Any] = dict(settings.get("context") or {})
        cs = parse_client_settings(settings)
        headers = {"Accept": "application/json", "User-Agent": "ironbus"}
        if self.database and self.protocol == "json2":
            headers["X-Odoo-Database"] = self.database
        self.http = HttpClient(str(settings["url"]), make_transport(cs),
                               _Bearer(self._key) if self.protocol == "json2" else None, cs.policy, headers,
                               classify=OdooErrors(cs.policy) if self.protocol == "json2" else None)
        self._uid: int | None = None
        self._ids = itertools.count(1)
        self._lock = threading.Lock()

    # -- public ----------------------------------------------------------------------------------------
    def login(self) -> None:
        """JSON-RPC: authenticate once (the user id goes with every call). JSON-2 needs no login."""
        if self.protocol == "jsonrpc":
            self._user_id()

    def call(self, model: str, method: str, ids: Sequence[int] | None = None,
             headers: Mapping[str, str] | None = None, **params: Any) -> Any:
        """Run ``model.method`` with named ``params`` (on ``ids`` for a recordset method); its return value."""
        what = f"{self.system}: {model}.{method}"
        if self.protocol == "json2":
            body: dict[str, Any] = dict(params)
            if ids is not None:
                body["ids"] = list(ids)
            if self.context:
                body["context"] = {**self.context, **(body.get("context") or {})}
            response = self.http.request("POST", f"/json/2/{model}/{method}", json=body, headers=headers,
                                         what=what)
            try:
                return response.json()
            except ValueError:
                raise TransientError(f"{what}: Odoo answered HTTP {response.status} without JSON") from None
        args: list[Any] = [list(ids)] if ids is not None else []
        if self.context:
            params = {**params, "context": {**self.context, **(params.get("context") or {})}}
        return self._rpc("object", "execute_kw",
                         [self.database, self._user_id(), self._key, model, method, args, params], what, headers)

    def version(self) -> Any:
        """The server version (``common.version`` or ``/web/version``); used by health checks."""
        if self.protocol == "jsonrpc":
            return self._rpc("common", "version", [], f"{self.system}: common.version")
        response = self.http.request("GET", "/web/version", what=f"{self.system}: /web/version")
        return response.json()

    def close(self) -> None:
        self.http.close()

    # -- JSON-RPC ------------------------------------------------------------------------------------------
    def _user_id(self) -> int:
        with self._lock:
            if self._uid is None:
                if not self._login:
                    raise PermanentError(f"{self.system}: settings/login is needed with protocol 'jsonrpc'")
                uid = self._rpc("common", "authenticate", [self.database, self._login, self._key, {}],
                                f"{self.system}: common.authenticate")
                if not isinstance(uid, int) or isinstance(uid, bool) or uid <= 0:
                    raise PermanentError(f"{self.system}: Odoo refused the login {self._login!r} on database "
                                         f"{self.database!r} (wrong login, API key or database)")
                self._uid = uid
            return self._uid

    def _rpc(self, service: str, method: str, args: list[Any], what: str,
             headers: Mapping[str, str] | None = None) -> Any:
        request = {"jsonrpc": "2.0", "method": "call", "id": next(self._ids),
                   "params": {"service": service, "method": method, "args": args}}
        response = self.http.request("POST", "/jsonrpc", json=request, headers=headers, what=what)
        try:
            doc = response.json()
        except ValueError:
            raise TransientError(f"{what}: Odoo answered HTTP {response.status} without JSON") from None
        if not isinstance(doc, dict):
            raise PermanentError(f"{what}: Odoo's JSON-RPC answer is not an object")
        error = doc.get("error")
        if isinstance(error, dict):
            data = error.get("data") if isinstance(error.get("data"), dict) else {}
            if error.get("code") == 100:  # "Odoo Session Expired": authenticate again on the next call
                with self._lock:
                    self._uid = None
                raise TransientError(f"{what}: Odoo session expired")
            return _raise(error_from_object(data or {"name": str(error.get("message") or "error")}, None, what))
        return doc.get("result")


def _raise(error: Exception) -> Any:
    raise error
