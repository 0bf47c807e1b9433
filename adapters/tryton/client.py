"""A small, thread-safe JSON-RPC client for one Tryton database, with errors translated for the bus.

Wire format (trytond 8.2): ``POST <url>/<db>/rpc/`` with ``{"id", "method", "params"}``; server-level calls
(``common.server.version``) go to ``POST <url>/rpc/``. A session comes from ``common.db.login`` and is sent
as ``Authorization: Session base64(user:uid:token)``. Every model call takes the user context as its last
positional parameter; we send the full ``get_preferences(true)`` result, since writes need at least
``company`` (the "User in companies" rule).

Error translation (the bus never sees an httpx or Tryton exception):

* HTTP 401 → log in again and retry once; a second 401 → :class:`PermanentError` (authentication);
* HTTP 429 (login lock-out) → :class:`TransientError` with ``retry_after`` (header, else 300 s);
* HTTP 5xx, 408, 423, connection refused/reset, timeouts → :class:`TransientError` (a restarting server
  simply delays the flow);
* HTTP 200 with ``error``: ``UserError``/``UserWarning``/``LoginException`` and bare ``KeyError`` text
  (unknown model or field) → :class:`PermanentError` with Tryton's message; ``ConcurrencyException``,
  "database is locked", timeouts → :class:`TransientError`;
* any other 4xx → :class:`PermanentError`.
"""

from __future__ import annotations

import base64
import itertools
import threading
from collections.abc import Mapping, Sequence
from typing import Any

import httpx
import orjson
import structlog

from adapters.http.errors import parse_retry_after
from adapters.tryton.codec import decode, encode
from bus.errors import PermanentError, TransientError

__all__ = ["TrytonClient", "TrytonWarning", "classify_rpc_error"]

log = structlog.get_logger(__name__)

#: Seconds trytond locks a login out after too many failures ([session] timeout window).
LOGIN_LOCKOUT = 300.0
_TRANSIENT_WORDS = ("concurren", "database is locked", "locked", "timeout", "timed out", "could not serialize",
                    "deadlock")
_TRANSIENT_KINDS = {"ConcurrencyException", "RateLimitException", "TimeOutException"}


class TrytonWarning(PermanentError):
    """Tryton asked the user to confirm a warning (``UserWarning``); ``name`` identifies it.

    Permanent by default: only a caller that knows the warning is harmless (see ``accept_warning``) retries.
    """

    def __init__(self, message: str, name: str) -> None:
        self.name = name
        super().__init__(message)


def classify_rpc_error(method: str, error: Any) -> PermanentError | TransientError:
    """The bus error for the ``error`` member of an HTTP-200 JSON-RPC response."""
    kind = ""
    message = ""
    if isinstance(error, list | tuple) and error:
        kind = str(error[0])
        detail = error[1] if len(error) > 1 else ""
        if kind in {"UserError", "UserWarning", "LoginException"} and isinstance(detail, list | tuple):
            # UserError: (message, description, domain); UserWarning: (name, message, description).
            parts = detail[1:3] if kind == "UserWarning" else detail[:2]
            message = " ".join(str(p) for p in parts if p)
        elif kind in _TRANSIENT_KINDS:
            message = str(detail) if detail else kind
        else:
            # A plain Python exception on the server: (str(exc), traceback). A bare KeyError text such as
            # "'party.nosuch'" means an unknown model or field.
            message = kind
    else:
        message = str(error)
    text = f"{method}: {kind + ': ' if kind in {'UserError', 'UserWarning', 'LoginException'} else ''}{message}"
    if kind in _TRANSIENT_KINDS or any(word in message.lower() for word in _TRANSIENT_WORDS):
        return TransientError(text)
    if kind == "UserWarning" and isinstance(error[1], list | tuple) and error[1]:
        return TrytonWarning(text, str(error[1][0]))
    if message.startswith("'") and message.endswith("'"):
        return PermanentError(f"{method}: unknown model or field {message}")
    return PermanentError(text)


def _retry_after(response: httpx.Response, default: float) -> float:
    seconds = parse_retry_after(response.headers.get("retry-after"))
    return default if seconds is None else seconds


class _Unauthorized(Exception):
    """Internal: the session was refused (HTTP 401)."""


class TrytonClient:
    """JSON-RPC to one Tryton database as one user. Safe to share between threads.

    ``call()`` logs in on first use; ``context`` is the user's preferences (company, language …), which
    ``company`` overrides when given.
    """

    def __init__(self, url: str, database: str, user: str, password: str, *, timeout: float = 30.0,
                 company: int | None = None, transport: httpx.BaseTransport | None = None) -> None:
        self.url = url.rstrip("/")
        self.database = database
        self.user = user
        self._password = password
        self.company = company
        self._http = httpx.Client(timeout=timeout, transport=transport,
                                  headers={"Content-Type": "application/json"})
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self._auth: str | None = None
        self._uid = 0
        self._session_gen = 0
        self._context: dict[str, Any] = {}

    # -- session ---------------------------------------------------------------------------------------
    @property
    def context(self) -> dict[str, Any]:
        """The context sent with every model call (a copy)."""
        self._ensure_session()
        return dict(self._context)

    def login(self) -> None:
        """Open a session and load the user's context. Raises PermanentError on bad credentials."""
        with self._lock:
            self._login_locked()

    def _login_locked(self) -> None:
        try:
            result = self._post(f"/{self.database}/rpc/", "common.db.login",
                                [self.user, {"password": self._password}, "en"], auth=None)
        except _Unauthorized:
            raise PermanentError(f"tryton {self.database}: login refused for user {self.user!r} "
                                 "(wrong user or password)") from None
        uid, token = result[0], result[1]
        self._uid = int(uid)
        self._auth = "Session " + base64.b64encode(f"{self.user}:{uid}:{token}".encode()).decode("ascii")
        try:
            prefs = self._post(f"/{self.database}/rpc/", "model.res.user.get_preferences", [True, {}],
                               auth=self._auth)
        except _Unauthorized:
            raise PermanentError(f"tryton {self.database}: new session refused at once") from None
        context = dict(prefs) if isinstance(prefs, Mapping) else {}
        if self.company is not None:
            context["company"] = self.company
        self._context = context
        self._session_gen += 1
        log.info("tryton.login", database=self.database, user=self.user, company=context.get("company"))

    def refresh_context(self) -> None:
        """Reload the user's preferences (after a change of company, for instance)."""
        prefs = self.call("model.res.user.get_preferences", True, context={})
        context = dict(prefs) if isinstance(prefs, Mapping) else {}
        if self.company is not None:
            context["company"] = self.company
        with self._lock:
            self._context = context

    def accept_warning(self, warning: TrytonWarning) -> None:
        """Record that the user confirmed ``warning`` (what the GUI's "Yes" does); the retried call passes."""
        self.create("res.user.warning", [{"user": self._uid, "name": warning.name, "always": False}])

    def logout(self) -> None:
        """End the session on the server (best effort); the next call logs in again."""
        with self._lock:
            auth, self._auth = self._auth, None
        if auth is None:
            return
        try:
            self._post(f"/{self.database}/rpc/", "common.db.logout", [], auth=auth)
        except (_Unauthorized, TransientError, PermanentError):
            pass

    def _ensure_session(self) -> tuple[str, int]:
        with self._lock:
            if self._auth is None:
                self._login_locked()
            assert self._auth is not None
            return self._auth, self._session_gen

    def _relogin(self, stale_gen: int) -> None:
        with self._lock:
            # Another thread may have logged in again already: do not stampede the login (rate-limited).
            if self._session_gen == stale_gen or self._auth is None:
                self._auth = None
                self._login_locked()

    def close(self) -> None:
        self._http.close()

    # -- calls -----------------------------------------------------------------------------------------
    def server(self, method: str, *params: Any) -> Any:
        """A server-level call without session or context (``common.server.version`` …)."""
        try:
            return self._post("/rpc/", method, list(params), auth=None)
        except _Unauthorized:
            raise PermanentError(f"tryton: {method} refused (401)") from None

    def call(self, method: str, *params: Any, context: Mapping[str, Any] | None = None) -> Any:
        """Call ``method`` with ``params`` plus the context (the user's, updated with ``context``).

        Re-logs in once on 401. Returns the decoded result (Decimal, date, datetime … restored).
        """
        auth, gen = self._ensure_session()
        for attempt in (1, 2):
            ctx = dict(self._context)
            if context:
                ctx.update(context)
            try:
                return self._post(f"/{self.database}/rpc/", method, [*params, ctx], auth=auth)
            except _Unauthorized:
                if attempt == 2:
                    break
                log.info("tryton.relogin", database=self.database, method=method)
                self._relogin(gen)
                auth, gen = self._ensure_session()
        raise PermanentError(f"tryton {self.database}: {method} refused (HTTP 401) even after a fresh login")

    def _post(self, path: str, method: str, params: list[Any], auth: str | None) -> Any:
        request_id = next(self._ids)  # itertools.count is atomic under the GIL; ids only need uniqueness
        body = orjson.dumps({"id": request_id, "method": method, "params": encode(params)})
        headers = {"Authorization": auth} if auth else {}
        try:
            response = self._http.post(self.url + path, content=body, headers=headers)
        except httpx.TimeoutException as exc:
            raise TransientError(f"tryton {self.database}: {method} timed out ({type(exc).__name__})") from None
        except httpx.TransportError as exc:
            raise TransientError(f"tryton {self.database}: {method}: cannot reach {self.url} ({exc})") from None
        status = response.status_code
        if status == 401:
            raise _Unauthorized()
        if status == 429:
            raise TransientError(f"tryton {self.database}: {method}: too many requests (login locked out)",
                                 retry_after=_retry_after(response, LOGIN_LOCKOUT))
        if status >= 500 or status in (408, 423):
            raise TransientError(f"tryton {self.database}: {method}: HTTP {status}",
                                 retry_after=_retry_after(response, 0) or None)
        if status != 200:
            raise PermanentError(f"tryton {self.database}: {method}: HTTP {status} {response.text[:200].strip()}")
        try:
            payload = orjson.loads(response.content)
        except orjson.JSONDecodeError:
            raise PermanentError(f"tryton {self.database}: {method}: response is not JSON") from None
        if not isinstance(payload, dict):
            raise PermanentError(f"tryton {self.database}: {method}: unexpected response {payload!r:.200}")
        if "error" in payload and payload["error"] is not None:
            raise classify_rpc_error(method, payload["error"])
        return decode(payload.get("result"))

    # -- conveniences ----------------------------------------------------------------------------------
    def model(self, model: str, method: str, *params: Any, context: Mapping[str, Any] | None = None) -> Any:
        """``model.<model>.<method>(*params, context)``."""
        return self.call(f"model.{model}.{method}", *params, context=context)

    def search(self, model: str, domain: Sequence[Any], *, limit: int | None = None,
               order: Sequence[tuple[str, str]] | None = None) -> list[int]:
        ids: list[int] = self.model(model, "search", list(domain), 0, limit, _order(order))
        return ids

    def search_read(self, model: str, domain: Sequence[Any], fields: Sequence[str], *, limit: int | None = None,
                    order: Sequence[tuple[str, str]] | None = None,
                    context: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = self.model(model, "search_read", list(domain), 0, limit, _order(order),
                                                list(fields), context=context)
        return rows

    def read(self, model: str, ids: Sequence[int], fields: Sequence[str]) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = self.model(model, "read", list(ids), list(fields))
        return rows

    def create(self, model: str, values: Sequence[Mapping[str, Any]]) -> list[int]:
        ids: list[int] = self.model(model, "create", [dict(v) for v in values])
        return ids

    def write(self, model: str, ids: Sequence[int], values: Mapping[str, Any]) -> None:
        self.model(model, "write", list(ids), dict(values))

    def wizard(self, name: str, states: Sequence[str], *, data: Mapping[str, Any] | None = None,
               context: Mapping[str, Any] | None = None) -> list[Any]:
        """Run wizard ``name`` through the transition ``states`` in order; returns each execute result.

        Transitions can be executed directly, skipping the view states a GUI would show.
        """
        session_id, _start, _end = self.call(f"wizard.{name}.create", context=context)
        results: list[Any] = []
        try:
            for state in states:
                results.append(self.call(f"wizard.{name}.execute", session_id, dict(data or {}), state,
                                         context=context))
        finally:
            try:
                self.call(f"wizard.{name}.delete", session_id, context=context)
            except (TransientError, PermanentError) as exc:  # the wizard session expires by itself
                log.warning("tryton.wizard_delete_failed", wizard=name, error=str(exc))
        return results


def _order(order: Sequence[tuple[str, str]] | None) -> list[list[str]] | None:
    return [[field, direction] for field, direction in order] if order else None
