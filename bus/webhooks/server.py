"""Serving the webhook app with uvicorn in a background thread, inside ``ironbus run``.

The server gets its own thread and event loop so the worker's threads never wait on HTTP and a slow client
never delays a delivery. The listening socket is bound in the caller's thread, so "address in use" is
raised by :meth:`WebhookServer.start` itself, and ``port=0`` yields the chosen port in :attr:`port` at once.
"""

from __future__ import annotations

import math
import socket
import threading
import time
from typing import Any

import structlog
import uvicorn

from bus.errors import ConfigError

__all__ = ["WebhookServer"]

log = structlog.get_logger(__name__)


class WebhookServer:
    """Run an ASGI app on ``host:port`` in a daemon thread; ``start()`` / ``stop()`` (also a context manager).

    ``stop()`` is graceful: the socket stops accepting, requests in flight get up to ``graceful_timeout``
    seconds to finish (so a request whose ingest already ran still gets its 202), then connections close.
    """

    def __init__(self, app: Any, host: str = "127.0.0.1", port: int = 8080, *, graceful_timeout: float = 10.0,
                 backlog: int = 2048, http: str = "auto", loop: str = "auto") -> None:
        self.app = app
        # "auto" picks httptools and uvloop when installed (several times cheaper per request than h11).
        self.http = http
        self.loop = loop
        self.host = host
        self._requested_port = port
        self.graceful_timeout = graceful_timeout
        self.backlog = backlog
        self._socket: socket.socket | None = None
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._port: int | None = None

    @property
    def port(self) -> int:
        """The bound port (the one the OS chose when 0 was asked); only valid after :meth:`start`."""
        if self._port is None:
            raise RuntimeError("WebhookServer.port is known only after start()")
        return self._port

    @property
    def url(self) -> str:
        """Base URL of the server, e.g. ``http://127.0.0.1:8080``."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self, timeout: float = 10.0) -> None:
        """Bind, start serving, and return once the server accepts connections.

        Raises :class:`~bus.errors.ConfigError` when the address cannot be bound (in use, bad host) and
        :class:`RuntimeError` when the server does not come up within ``timeout`` seconds.
        """
        if self.running:
            raise RuntimeError("WebhookServer is already running")
        sock = self._bind()
        config = uvicorn.Config(self.app, lifespan="off", log_config=None, access_log=False, server_header=False,
                                # the app applies its own trust_proxy policy to X-Forwarded-*: uvicorn must not
                                # rewrite scheme and client first (and the middleware costs on every request)
                                proxy_headers=False,
                                timeout_graceful_shutdown=math.ceil(self.graceful_timeout), backlog=self.backlog,
                                http=self.http, loop=self.loop)
        server = uvicorn.Server(config)
        thread = threading.Thread(target=self._serve, args=(server, sock), name="ironbus-webhooks", daemon=True)
        self._socket, self._server, self._thread = sock, server, thread
        thread.start()
        deadline = time.monotonic() + timeout
        while not server.started:
            if not thread.is_alive():
                self._cleanup()
                raise RuntimeError(f"webhook server on {self.host}:{self._port} stopped during startup")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"webhook server on {self.host}:{self._port} did not start within {timeout}s")
            time.sleep(0.005)
        log.info("webhook server listening", host=self.host, port=self._port)

    def _bind(self) -> socket.socket:
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        # proto must be IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY on accepted connections only when the
        # socket says it is TCP, and without it Nagle + delayed ACK add ~40 ms to every response.
        sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if self._requested_port and hasattr(socket, "SO_REUSEPORT"):
                # several `ironbus run` processes on one host share the port; the kernel spreads connections
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            sock.bind((self.host, self._requested_port))
        except OSError as exc:
            sock.close()
            raise ConfigError(f"webhook server cannot listen on {self.host}:{self._requested_port}: "
                              f"{exc.strerror or exc}") from None
        self._port = int(sock.getsockname()[1])
        return sock

    @staticmethod
    def _serve(server: uvicorn.Server, sock: socket.socket) -> None:
        try:
            server.run(sockets=[sock])
        except BaseException as exc:  # SystemExit from uvicorn's startup included: report, then end the thread
            log.error("webhook server stopped with an error", error=f"{type(exc).__name__}: {exc}")

    def stop(self, timeout: float | None = None) -> None:
        """Stop gracefully and wait for the thread; safe to call twice or before :meth:`start`."""
        server, thread = self._server, self._thread
        if server is None or thread is None:
            return
        server.should_exit = True
        wait = self.graceful_timeout + 5.0 if timeout is None else timeout
        thread.join(wait)
        if thread.is_alive():
            log.warning("webhook server did not stop gracefully; forcing", waited=wait)
            server.force_exit = True
            thread.join(5.0)
        self._cleanup()
        log.info("webhook server stopped", host=self.host, port=self._port)

    def _cleanup(self) -> None:
        if self._socket is not None:
            self._socket.close()
        self._socket = self._server = self._thread = None

    def __enter__(self) -> WebhookServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
