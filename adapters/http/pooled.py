"""The default HTTP transport: :class:`PooledTransport` keeps a bounded pool of keep-alive connections per
origin, shared by every worker thread, speaking HTTP/1.1 through :mod:`adapters.http.wire`, and sends a wave
of independent requests at once (:meth:`PooledTransport.send_many`). Failed exchanges become
:class:`~bus.errors.TransientError`; the request and response values are :mod:`adapters.http.transport`'s.
"""

from __future__ import annotations

import re
import ssl
import threading
import time
from collections.abc import Sequence
from urllib.parse import urlsplit

from adapters.http.transport import PoolLimits, Request, Response, Timeouts, traced
from adapters.http.wire import ConnectionDropped, Http11Connection, ProtocolError
from adapters.tls import client_context
from bus import telemetry
from bus.errors import TransientError

__all__ = ["PooledTransport"]


class _Origin:
    """The connections to one scheme://host:port. LIFO reuse keeps the pool warm with few sockets."""

    def __init__(self, scheme: str, host: str, port: int, limits: PoolLimits, timeouts: Timeouts,
                 context: ssl.SSLContext | None) -> None:
        self.scheme, self.host, self.port = scheme, host, port
        self.limits, self.timeouts, self.context = limits, timeouts, context
        self.idle: list[tuple[Http11Connection, float]] = []
        self.lock = threading.Lock()
        self.slots = threading.BoundedSemaphore(limits.max_connections)
        self.opened = 0  # connections ever opened: exposed for tests and metrics

    def acquire(self, fresh: bool = False) -> tuple[Http11Connection, bool]:
        """A connection and whether it was reused; ``fresh`` skips (and closes) the idle ones."""
        if not self.slots.acquire(timeout=self.timeouts.pool):
            raise TransientError(f"no free connection to {self.host}:{self.port} within {self.timeouts.pool}s "
                                 f"(pool of {self.limits.max_connections} busy)")
        return self._connection(fresh)

    def try_acquire(self) -> tuple[Http11Connection, bool] | None:
        """Like :meth:`acquire`, but None at once when every connection of the pool is in use."""
        return self._connection(False) if self.slots.acquire(blocking=False) else None

    def _connection(self, fresh: bool) -> tuple[Http11Connection, bool]:
        now = time.monotonic()
        stale: list[Http11Connection] = []
        found: Http11Connection | None = None
        with self.lock:
            while self.idle:
                conn, since = self.idle.pop()
                if not fresh and now - since < self.limits.keepalive:
                    found = conn
                    break
                stale.append(conn)
            if found is None:
                self.opened += 1
        for conn in stale:
            conn.close()
        if found is not None:
            return found, True
        https = self.scheme == "https"
        return Http11Connection(self.host, self.port, connect_timeout=self.timeouts.connect,
                                read_timeout=self.timeouts.read, context=self.context if https else None,
                                default_port=443 if https else 80), False

    def describe(self, method: str, path: str) -> str:
        """How error messages name a request: without the query, which may carry a credential."""
        return f"{method} {self.scheme}://{self.host}:{self.port}{path}"

    def release(self, conn: Http11Connection, reusable: bool) -> None:
        if reusable:
            with self.lock:
                self.idle.append((conn, time.monotonic()))
        else:
            conn.close()
        self.slots.release()

    def close(self) -> None:
        with self.lock:
            idle, self.idle = self.idle, []
        for conn, _ in idle:
            conn.close()


# A reused keep-alive connection the server closed while it sat idle fails like this before any response
# byte arrives. Sending once more on a fresh connection is what browsers and urllib3 do; every bus delivery
# carries an Idempotency-Key, so even the rare case where the server did see the request is safe.
_STALE = (ConnectionDropped, BrokenPipeError, ConnectionResetError, ConnectionAbortedError)
# What an exchange on a connection can fail with (TimeoutError and the SSL errors are OSErrors too).
_FAILURES = (*_STALE, OSError, ProtocolError)

# An absolute URL as urlsplit reads it: "scheme://authority", the path, the query (a fragment is not sent).
# URLs this does not fit (an upper-case scheme, leading blanks, the tabs and line breaks urlsplit strips)
# go through urlsplit itself.
_URL = re.compile(r"(https?://[^/?#]*)([^?#]*)(?:\?([^#]*))?")
_MAX_PREFIXES = 256  # distinct "scheme://authority" prefixes remembered; a system has one or two


class PooledTransport:
    """Thread-safe pooled HTTP/1.1 keep-alive transport (sockets and :mod:`adapters.http.wire`)."""

    def __init__(self, timeouts: Timeouts | None = None, limits: PoolLimits | None = None,
                 verify: bool | str = True) -> None:
        self.timeouts = timeouts or Timeouts()
        self.limits = limits or PoolLimits()
        # verify=False never loaded a bundle here (the setting is a bool or a path, not both)
        self.context = client_context(verify if isinstance(verify, str) else None, verify=verify is not False)
        self._origins: dict[tuple[str, str, int], _Origin] = {}
        self._prefixes: dict[str, _Origin] = {}
        self._lock = threading.Lock()

    def _origin(self, scheme: str, host: str, port: int) -> _Origin:
        key = (scheme, host, port)
        origin = self._origins.get(key)
        if origin is None:
            with self._lock:
                origin = self._origins.setdefault(
                    key, _Origin(scheme, host, port, self.limits, self.timeouts, self.context))
        return origin

    def _origin_of(self, url: str, scheme: str, host: str | None, port: int | None) -> _Origin:
        if scheme not in ("http", "https") or not host:
            raise ValueError(f"not an absolute http(s) URL: {url!r}")
        return self._origin(scheme, host, port or (443 if scheme == "https" else 80))

    def _resolve(self, url: str) -> tuple[_Origin, str, str]:
        """The origin, path and request target of an absolute URL.

        Only the ``scheme://authority`` prefix needs urlsplit (host, port, IDNA and IPv6 checks), and a system
        sends every request to one or two prefixes: each is parsed once and remembered.
        """
        match = _URL.match(url)
        if match is None or "\n" in url or "\r" in url or "\t" in url:
            parts = urlsplit(url)
            origin = self._origin_of(url, parts.scheme.lower(), parts.hostname, parts.port)
            return origin, parts.path, (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        prefix, path, query = match.groups()
        known = self._prefixes.get(prefix)
        if known is None:
            parts = urlsplit(prefix)
            known = self._origin_of(url, parts.scheme, parts.hostname, parts.port)
            if len(self._prefixes) < _MAX_PREFIXES:
                self._prefixes[prefix] = known
        return known, path, (path or "/") + (f"?{query}" if query else "")

    def connections_opened(self) -> int:
        """How many connections this transport has opened so far (all origins)."""
        return sum(o.opened for o in self._origins.values())

    def send(self, request: Request) -> Response:
        if telemetry.enabled:
            request = traced(request)
        origin, path, target = self._resolve(request.url)
        for attempt in (1, 2):
            # A server that dropped one idle connection has usually dropped them all: retry on a new one.
            conn, reused = origin.acquire(fresh=attempt == 2)
            reusable = False
            phase = "connect"
            try:
                if conn.sock is None:
                    conn.connect()
                phase = "send"
                conn.send_request(request.method, target, request.headers, request.body, request.static_headers)
                phase = "read"
                response = conn.read_response(request.method)
                reusable = response.keep_alive
                return Response(response.status, response.headers, response.body, request.url)
            except _FAILURES as exc:
                if isinstance(exc, _STALE) and reused and attempt == 1:
                    continue
                raise self._failure(exc, origin, request.method, path, phase) from None
            finally:
                origin.release(conn, reusable)
        raise AssertionError("unreachable: the second attempt always returns or raises")

    def send_many(self, requests: Sequence[Request]) -> list[Response | TransientError | ValueError]:
        """Send several independent requests at once; one response or error per request, in order.

        Each goes on its own pooled connection, and a wave of them is written before any response is read: the
        server works on them together and this thread waits once per wave instead of once per request (on a
        busy host that also saves a context switch per request). A request the pool has no free connection
        for, or whose reused connection turns out to be closed, is sent alone with :meth:`send` — the results
        are what sending them one by one would give, except that a request :meth:`send` would refuse with
        ValueError (not an http(s) URL, a header with a line break) gets that ValueError as its result: the
        others of its wave, maybe written already, are still answered.
        """
        results: list[Response | TransientError | ValueError | None] = [None] * len(requests)
        todo = list(range(len(requests)))
        while todo:
            wave: list[tuple[int, _Origin, Http11Connection, bool, str]] = []
            alone: list[int] = []
            try:
                for i in todo:
                    request = requests[i]
                    try:
                        origin, path, target = self._resolve(request.url)
                    except ValueError as exc:
                        results[i] = exc
                        continue
                    got = origin.try_acquire()
                    if got is None:
                        alone.append(i)
                        continue
                    conn, reused = got
                    try:
                        if conn.sock is None:
                            conn.connect()
                        conn.send_request(request.method, target, request.headers, request.body,
                                          request.static_headers)
                    except _FAILURES as exc:
                        phase = "connect" if conn.sock is None else "send"  # before release() closes it
                        origin.release(conn, False)
                        if isinstance(exc, _STALE) and reused:
                            alone.append(i)  # send() retries it on a fresh connection
                        else:
                            results[i] = self._failure(exc, origin, request.method, path, phase)
                        continue
                    except ValueError as exc:  # a header with a line break: nothing was written
                        origin.release(conn, True)
                        results[i] = exc
                        continue
                    except BaseException:
                        origin.release(conn, False)
                        raise
                    wave.append((i, origin, conn, reused, path))
            except BaseException:
                # Anything else ends the call, but the wave's connections go back to the pool first: each would
                # otherwise hold its slot for good.
                for _, origin, conn, _, _ in wave:
                    origin.release(conn, False)  # written but never read: not reusable
                raise
            for i, origin, conn, reused, path in wave:
                reusable = False
                try:
                    response = conn.read_response(requests[i].method)
                    reusable = response.keep_alive
                    results[i] = Response(response.status, response.headers, response.body, requests[i].url)
                except _FAILURES as exc:
                    if isinstance(exc, _STALE) and reused:
                        alone.append(i)  # closed while idle, before any response byte: as send() does
                    else:
                        results[i] = self._failure(exc, origin, requests[i].method, path, "read")
                finally:
                    origin.release(conn, reusable)
            if not wave and alone:  # the pool is busy with other threads: wait for it with one request
                i = alone.pop(0)
                try:
                    results[i] = self.send(requests[i])
                except (TransientError, ValueError) as exc:
                    results[i] = exc
            todo = alone
        done = [r for r in results if r is not None]
        assert len(done) == len(results), "every request ends with a response or an error"
        return done

    def _failure(self, exc: BaseException, origin: _Origin, method: str, path: str, phase: str) -> TransientError:
        """The delivery error a failed exchange becomes (every one is worth retrying later)."""
        where = origin.describe(method, path)
        if isinstance(exc, _STALE):
            return TransientError(f"{where}: connection lost during {phase}: {exc!r}")
        if isinstance(exc, TimeoutError):
            return TransientError(f"{where}: {phase} timed out after "
                                  f"{self.timeouts.connect if phase == 'connect' else self.timeouts.read}s")
        if isinstance(exc, ssl.SSLCertVerificationError):
            # Transient on purpose: deliveries park until the certificate or verify_tls is fixed, then flow.
            return TransientError(f"{where}: TLS certificate not trusted ({exc.verify_message}); fix the server "
                                  "certificate, or set verify_tls to a CA bundle")
        if isinstance(exc, ProtocolError):
            return TransientError(f"{where}: unreadable response: {exc}")
        return TransientError(f"{where}: {phase} failed: {exc!r}")

    def close(self) -> None:
        with self._lock:
            origins = list(self._origins.values())
        for origin in origins:
            origin.close()
