"""``ironbus console``: the operator console alone, over any journal; and ``hash-password`` for users files."""

from __future__ import annotations

import argparse
import getpass
import os
import sys
from pathlib import Path

from bus.errors import ConfigError
from bus.journal import Journal
from bus.queue.open import open_queue
from bus.runtime import broker_url, journal_url, open_adapters
from bus.stopflag import StopFlag
from bus.webconsole import Auth, ConsoleApp, ConsoleContext, hash_password, mount
from bus.webconsole.http import Receive, Scope, Send, redirect
from bus.webhooks import WebhookServer

__all__ = ["console", "console_auth"]


def console_auth(users: Path | None) -> Auth:
    """Credentials from ``$IRONBUS_CONSOLE_TOKEN`` / ``$IRONBUS_CONSOLE_READONLY_TOKEN`` and a users file."""
    return Auth.from_env(users)


def console(args: argparse.Namespace) -> int:
    if args.hash_password:
        password = getpass.getpass("password: ") if sys.stdin.isatty() else sys.stdin.readline().rstrip("\n")
        if len(password) < 10:
            raise ConfigError("a console password needs 10 characters or more")
        print(hash_password(password))
        return 0
    auth = console_auth(args.users)
    journal = Journal(journal_url(args.journal))
    queue = open_queue(broker_url(args.broker), journal)
    routes = args.routes if args.routes.is_file() else None
    link = args.tracing_url or os.environ.get("IRONBUS_CONSOLE_TRACING_URL", "")
    context = ConsoleContext(journal=journal, routes=routes, queue=queue, tracing_url=link, adapters=open_adapters)
    app = mount(_root, ConsoleApp(context, auth))
    server = WebhookServer(app, args.host, args.port)
    stop = StopFlag()  # not a threading.Event: see bus.stopflag
    stop.install()
    server.start()
    print(f"ironbus: console on {server.url}/console (journal {journal.url}"
          + (f", routes {routes}" if routes else ", no routes file") + "). Ctrl-C stops.", file=sys.stderr, flush=True)
    try:
        while not stop.wait(0.2):
            pass
    finally:
        server.stop()
        queue.close()
        journal.close()
    return 0


async def _root(scope: Scope, receive: Receive, send: Send) -> None:
    """Everything outside /console: the root sends a browser to the console, anything else is 404."""
    if scope.get("type") != "http":
        return
    if scope.get("path") in ("/", ""):
        await redirect("/console/search", 302).send(send)
        return
    from bus.webconsole.http import Response

    await Response(b"not found", 404, "text/plain").send(send)
