"""The operator console as an ASGI application, and the mount that serves it beside the webhook app.

``ironbus run --console`` puts it under ``/console`` on the webhook port (:func:`mount`); ``ironbus console``
serves it alone, reading any journal. Every page needs a session (see :mod:`bus.webconsole.auth`); every
POST needs the session's CSRF token and, where it changes something, the operator role, and is audited.
"""

from __future__ import annotations

import asyncio
import hmac
import re
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from importlib import resources
from typing import Any

import orjson
import structlog
from jinja2 import Environment, PackageLoader, select_autoescape

from adapters.base import Adapter
from bus.config import Config
from bus.errors import IronbusError
from bus.webconsole.auth import Auth, Session
from bus.webconsole.context import ConsoleContext
from bus.webconsole.http import HttpError, Receive, Request, Response, Scope, Send, redirect

__all__ = ["ConsoleApp", "ConsoleContext", "mount"]

log = structlog.get_logger(__name__)

COOKIE = "ib_console"
_STATIC = {"htmx-2.0.11.min.js": "text/javascript; charset=utf-8", "console.css": "text/css; charset=utf-8",
           "console.js": "text/javascript; charset=utf-8", "htmx-LICENSE.txt": "text/plain; charset=utf-8"}


Handler = Callable[["ConsoleApp", Request, Session], Response]


class ConsoleApp:
    """The console's ASGI app, served under ``prefix``."""

    def __init__(self, context: ConsoleContext, auth: Auth, prefix: str = "/console") -> None:
        from bus.webconsole import views

        self.context = context
        self.auth = auth
        self.throttle = Throttle()
        # the console's journal reads get their own threads: a slow page never waits for, nor delays, the
        # webhook app's work on the default executor
        self.pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="ironbus-console")
        self.prefix = prefix.rstrip("/")
        self.templates = Environment(loader=PackageLoader("bus.webconsole", "templates"),
                                     autoescape=select_autoescape(default=True, default_for_string=True))
        self.templates.filters.update(ts=_ts, ago=_ago, pretty=_pretty)
        self.routes: list[tuple[str, re.Pattern[str], Handler, bool]] = [
            (method, re.compile(f"^{pattern}$"), handler, operator)
            for method, pattern, handler, operator in views.ROUTES]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope.get("type") != "http":
            return
        try:
            request = await Request.read(scope, receive, self.prefix)
            response = await asyncio.get_running_loop().run_in_executor(self.pool, self.handle, request)
        except HttpError as exc:
            response = self.error(exc.status, exc.message)
        except Exception as exc:  # a bug or a journal outage costs one error page, never the server
            log.error("console request failed", path=str(scope.get("path"))[:200],
                      error=f"{type(exc).__name__}: {exc}", exc_info=True)
            response = self.error(500, "the console could not answer; see the bus log")
        await response.send(send)

    def handle(self, request: Request) -> Response:
        """Route one request (runs in a worker thread: the journal is blocking)."""
        if request.path.startswith("/static/"):
            return self.static(request.path[len("/static/"):])
        if request.path == "/login":
            return self.login(request)
        session = self.auth.session(request.cookies.get(COOKIE)) or \
            self.auth.bearer(request.headers.get("authorization"))
        if session is None:
            if request.method == "GET":
                return redirect(f"{self.prefix}/login")
            return self.error(401, "log in first")
        bearer = COOKIE not in request.cookies and session is not None
        for method, pattern, handler, operator in self.routes:
            match = pattern.match(request.path)
            if match is None or method != request.method:
                continue
            if method == "POST":
                self.check_post(request, session, bearer)
                if operator and not session.operator:
                    return self.error(403, "this action needs the operator role; you are read-only")
            request.query.update({k: [v] for k, v in match.groupdict().items()})
            try:
                return handler(self, request, session)
            except IronbusError as exc:
                return self.error(400, str(exc))
            except HttpError as exc:
                return self.error(exc.status, exc.message)
        return self.error(404, f"no page at {self.prefix}{request.path[:200]}")

    def check_post(self, request: Request, session: Session, bearer: bool) -> None:
        """CSRF: the session's token in the form or the X-CSRF-Token header (htmx), and a same-origin
        ``Origin`` when the browser sends one. A bearer-token client (no cookie) cannot be forged by a page."""
        if bearer:
            return
        origin = request.headers.get("origin")
        if origin and origin != "null" and origin.split("://", 1)[-1] != request.headers.get("host", ""):
            raise HttpError(403, "cross-origin form refused")
        presented = request.field("csrf") or request.headers.get("x-csrf-token", "")
        if not presented or not hmac.compare_digest(presented.encode(), session.csrf.encode()):
            raise HttpError(403, "missing or wrong CSRF token; reload the page and try again")

    # -- pages ---------------------------------------------------------------------------------------------
    def render(self, template: str, session: Session | None, status: int = 200, **values: Any) -> Response:
        page = self.templates.get_template(template).render(prefix=self.prefix, session=session, **values)
        return Response(page.encode(), status)

    def error(self, status: int, message: str) -> Response:
        return self.render("error.html", None, status, code=status, message=message)

    def login(self, request: Request) -> Response:
        if request.method == "GET":
            return self.render("login.html", None, users=bool(self.auth.users))
        if self.throttle.blocked(request.remote):
            return self.error(429, "too many failed logins from your address; wait a minute")
        session = self.auth.login(request.field("user").strip(), request.field("secret"))
        if session is None:
            self.throttle.failed(request.remote)
            log.warning("console login refused", user=request.field("user")[:64], remote=request.remote)
            return self.render("login.html", None, 401, users=bool(self.auth.users), failed=True)
        secure = "; Secure" if request.scheme == "https" or request.headers.get("x-forwarded-proto") == "https" else ""
        cookie = f"{COOKIE}={self.auth.cookie(session)}; Path={self.prefix}; HttpOnly; SameSite=Strict{secure}"
        log.info("console login", user=session.user, role=session.role, remote=request.remote)
        return Response(b"", 303, "text/plain", [(b"location", f"{self.prefix}/search".encode()),
                                                 (b"set-cookie", cookie.encode())])

    def static(self, name: str) -> Response:
        kind = _STATIC.get(name)
        if kind is None:
            return Response(b"not found", 404, "text/plain")
        data = resources.files("bus.webconsole").joinpath("static", name).read_bytes()
        return Response(data, 200, kind, [(b"cache-control", b"public, max-age=86400")])


class Throttle:
    """At most ``limit`` failed logins per address in ``window`` seconds: guessing a token or a password by
    brute force through the console is refused (429) long before it could succeed."""

    def __init__(self, limit: int = 10, window: float = 60.0) -> None:
        self.limit, self.window = limit, window
        self._failures: dict[str, list[float]] = {}
        self._lock = threading.Lock()

    def _recent(self, remote: str, now: float) -> list[float]:
        recent = [t for t in self._failures.get(remote, []) if now - t < self.window]
        if recent:
            self._failures[remote] = recent
        else:
            self._failures.pop(remote, None)
        return recent

    def blocked(self, remote: str) -> bool:
        with self._lock:
            return len(self._recent(remote, time.monotonic())) >= self.limit

    def failed(self, remote: str) -> None:
        with self._lock:
            now = time.monotonic()
            if len(self._failures) > 10_000:  # many addresses: forget the old ones rather than grow
                for key in list(self._failures):
                    self._recent(key, now)
            self._recent(remote, now)
            self._failures.setdefault(remote, []).append(now)


def mount(inner: Any, console: ConsoleApp | None) -> Any:
    """``inner`` (the webhook app) with the console routed under its prefix; ``inner`` itself without one."""
    if console is None:
        return inner
    prefix = console.prefix

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        path = str(scope.get("path") or "")
        if scope.get("type") == "http" and (path == prefix or path.startswith(prefix + "/")):
            await console(scope, receive, send)
        else:
            await inner(scope, receive, send)

    return app


def _ts(epoch: float | None) -> str:
    if epoch is None:
        return ""
    return datetime.fromtimestamp(epoch).astimezone().strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]


def _ago(epoch: float | None) -> str:
    if epoch is None:
        return ""
    seconds = max(time.time() - epoch, 0.0)
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds / size:.0f} {unit} ago"
    return f"{seconds:.0f} s ago"


def _pretty(value: Any) -> str:
    return orjson.dumps(value, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS, default=str).decode()


def for_runtime(inner: Any, runtime: Any, auth: Auth, tracing_url: str | None = None,
                adapters: Callable[[Config], Mapping[str, Adapter]] | None = None) -> Any:
    """``ironbus run --console``: the console over the running bus's journal, queue and live protections;
    ``tracing_url`` (default ``$IRONBUS_CONSOLE_TRACING_URL``) links a transaction to its trace."""
    import os

    link = tracing_url if tracing_url is not None else os.environ.get("IRONBUS_CONSOLE_TRACING_URL", "")
    context = ConsoleContext(journal=runtime.journal, routes=runtime.config.path, queue=runtime.queue,
                             snapshot=runtime.protections.snapshot, tracing_url=link, adapters=adapters)
    return mount(inner, ConsoleApp(context, auth))
