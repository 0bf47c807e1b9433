"""The ``ironbus`` command: parses arguments and calls into :mod:`bus`. No logic lives here.

Exit codes: 0 success, 1 a check failed (lint errors, failing tests, dead letters found by a strict check),
2 usage or configuration error. User errors print one line with their location, never a traceback.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from collections.abc import Callable, Sequence
from importlib import metadata
from pathlib import Path
from typing import NoReturn

from bus import commands
from bus.errors import IronbusError
from bus.supervisor import resolve_processes

__all__ = ["main"]

Handler = Callable[[argparse.Namespace], int]


class _Parser(argparse.ArgumentParser):
    """argparse with "did you mean" for a misspelt command or action (Python 3.11's argparse has none)."""

    def error(self, message: str) -> NoReturn:
        match = re.search(r"invalid choice: '([^']*)' \(choose from (.*)\)", message)
        if match:
            from bus.errors import closest

            known = re.findall(r"'([^']*)'", match.group(2))
            guesses = closest(match.group(1), known)
            hint = f"; did you mean {' or '.join(repr(g) for g in guesses)}?" if guesses else \
                f"; known: {', '.join(known)}"
            what = "command" if message.startswith(("argument COMMAND", "argument ACTION")) else "choice"
            message = f"{message.split(': invalid choice')[0]}: unknown {what} {match.group(1)!r}{hint}"
        super().error(message)


def _version() -> str:
    try:
        return metadata.version("ironbus")
    except metadata.PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown"


def _parser() -> argparse.ArgumentParser:
    # logging options are accepted before and after the subcommand
    common = _Parser(add_help=False)
    common.add_argument("--log-level", default=argparse.SUPPRESS, help="debug, info, warning (default), error")
    common.add_argument("--log-format", default=argparse.SUPPRESS, choices=["console", "json"])
    p = _Parser(prog="ironbus", description="Integration bus for CRM, SCM and SRM systems.", parents=[common])
    p.add_argument("--version", action="version", version=f"ironbus {_version()}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def cmd(name: str, handler: Handler, help: str) -> argparse.ArgumentParser:
        sp = sub.add_parser(name, help=help, description=help, parents=[common])
        sp.set_defaults(handler=handler)
        return sp

    def routes_arg(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--routes", type=Path, default=Path("routes.yaml"), help="routes file (default routes.yaml)")

    def journal_args(sp: argparse.ArgumentParser, broker: bool = False) -> None:
        sp.add_argument("--journal", default=None,
                        help="journal URL (default sqlite:///var/ironbus.sqlite, or $IRONBUS_JOURNAL)")
        if broker:
            sp.add_argument("--broker", default=None, help="amqp://... for RabbitMQ (default: embedded, or "
                                                           "$IRONBUS_BROKER)")

    sp = cmd("lint", commands.lint, "check routes.yaml against adapters, mappings and schemas")
    sp.add_argument("routes", nargs="?", type=Path, default=Path("routes.yaml"))
    sp.add_argument("--json", action="store_true")

    sp = cmd("map", commands.map_, "apply a mapping file to an input document and print the result")
    sp.add_argument("mapping", type=Path)
    sp.add_argument("input", help="JSON or YAML file, or - for stdin")
    sp.add_argument("--xref", type=Path, help="YAML/JSON file of cross references: entity -> system -> {id: canonical}")
    sp.add_argument("--validate", help="also validate the result against this canonical schema")
    routes_arg(sp)

    sp = cmd("test", commands.test, "run YAML test files (*.test.yaml) for mappings and routes")
    sp.add_argument("paths", nargs="*", type=Path, default=[Path("tests/mappings")])
    sp.add_argument("--routes", type=Path, default=None,
                    help="routes file for route tests (default: the test's 'routes:' or the nearest routes.yaml)")
    sp.add_argument("--json", action="store_true")

    sp = cmd("adapters", commands.adapters, "list installed adapters with their triggers, operations and settings")
    sp.add_argument("name", nargs="?")
    sp.add_argument("--json", action="store_true")

    sp = cmd("graph", commands.graph, "print the routes as a Mermaid flowchart")
    routes_arg(sp)

    sp = cmd("run", commands.run, "run the bus: triggers, webhooks and workers")
    routes_arg(sp)
    journal_args(sp, broker=True)
    sp.add_argument("--workers", type=int, default=None,
                    help="worker threads per process (default: 1 when every target takes a batch's calls at once, "
                         "as http does; 4 otherwise — see docs/operating.md)")
    sp.add_argument("--processes", type=resolve_processes, default=None, metavar="N|auto",
                    help="bus processes sharing the work and the webhook port (default: one per usable core; "
                         "1 with --port 0)")
    sp.add_argument("--port", type=int, default=None, help="webhook/metrics port (default 8080; 0 = any free port)")
    sp.add_argument("--host", default="127.0.0.1")
    sp.add_argument("--no-http", action="store_true", help="do not start the webhook/metrics server")
    sp.add_argument("--no-triggers", action="store_true", help="do not run poll/schedule triggers in this process")
    sp.add_argument("--until-idle", action="store_true", help="exit when the queue is empty (scripts and tests)")
    sp.add_argument("--max-seconds", type=float, default=None, help="stop after this many seconds")
    sp.add_argument("--lease", type=float, default=30.0,
                    help="seconds a claimed embedded-queue message stays claimed without renewal (default 30); "
                         "renewed while its batch is under way, so it only bounds how soon a killed process's "
                         "messages come back")
    sp.add_argument("--batch", type=int, default=None,
                    help="messages a worker takes at most at once (default: 128 with one worker, 32 otherwise; on "
                         "the embedded queue a batch must finish within --lease)")
    sp.add_argument("--console", action="store_true",
                    help="serve the operator console under /console on the webhook port (needs "
                         "$IRONBUS_CONSOLE_TOKEN, $IRONBUS_CONSOLE_READONLY_TOKEN or --console-users)")
    sp.add_argument("--console-users", type=Path, default=None, help="users file for the console (docs/console.md)")

    sp = cmd("send", commands.send, "put one event on the bus (data from a JSON/YAML file or -)")
    sp.add_argument("type", help="event type, e.g. crm.sale_changed or order.changed")
    sp.add_argument("file")
    sp.add_argument("--key")
    sp.add_argument("--sequence", type=int)
    sp.add_argument("--source", default="ironbus/cli")
    routes_arg(sp)
    journal_args(sp, broker=True)

    sp = cmd("status", commands.status, "queue depths, parked and dead deliveries, per-route counts")
    journal_args(sp, broker=True)
    sp.add_argument("--json", action="store_true")

    dlq = sub.add_parser("dlq", help="inspect and re-drive the dead-letter store", parents=[common])
    dsub = dlq.add_subparsers(dest="dlq_command", required=True, metavar="ACTION")
    for action, help_text in (("list", "list dead letters"), ("show", "show one dead letter"),
                              ("retry", "re-drive dead letters"), ("purge", "mark dead letters purged")):
        sp = dsub.add_parser(action, help=help_text, description=help_text, parents=[common])
        sp.set_defaults(handler=commands.dlq)
        journal_args(sp, broker=action == "retry")
        if action == "retry":
            sp.add_argument("--routes", type=Path, default=Path("routes.yaml"),
                            help="routes file that rebuilds follow-ups not emitted (default routes.yaml)")
        if action == "show":
            sp.add_argument("id", type=int)
        else:
            sp.add_argument("ids", nargs="*", type=int, help="dead-letter ids (default: all matching the filters)")
            sp.add_argument("--route")
            sp.add_argument("--target")
            sp.add_argument("--error", help="substring of the reason")
            sp.add_argument("--since", help="e.g. 2h, 1d, or an ISO timestamp")
            # retry streams what it re-queues, so it takes every match unless told otherwise
            sp.add_argument("--limit", type=int, default=None if action == "retry" else 100,
                            help="at most this many (default: all for retry, 100 otherwise)")
        sp.add_argument("--json", action="store_true")

    sp = cmd("replay", commands.replay, "re-deliver journaled events (by id, route, key or time window)")
    sp.add_argument("ids", nargs="*", help="event ids")
    sp.add_argument("--route", help="only events that went through this route")
    sp.add_argument("--to-route", help="deliver through this route instead of the original one")
    sp.add_argument("--key")
    sp.add_argument("--since")
    sp.add_argument("--until")
    sp.add_argument("--dry-run", action="store_true", help="print what would be delivered, deliver nothing")
    sp.add_argument("--force", action="store_true", help="repeat deliveries that already succeeded")
    sp.add_argument("--rate", type=float, default=200.0, help="events per second at most (default 200)")
    sp.add_argument("--json", action="store_true")
    routes_arg(sp)
    journal_args(sp, broker=True)

    sp = cmd("trace", commands.trace, "the causal chain of a business transaction across routes and systems")
    sp.add_argument("id", nargs="?", help="an event id (any event of the transaction)")
    sp.add_argument("--key", help="business key, e.g. an order number")
    sp.add_argument("--all", action="store_true", help="also draw transactions in which every route filtered")
    sp.add_argument("--json", action="store_true")
    journal_args(sp)

    xref = sub.add_parser("xref", help="master-data cross references", parents=[common])
    xsub = xref.add_subparsers(dest="xref_command", required=True, metavar="ACTION")
    sp = xsub.add_parser("get", help="look up an id", parents=[common])
    sp.add_argument("entity")
    sp.add_argument("system")
    sp.add_argument("id")
    sp = xsub.add_parser("set", help="link a system's id to a canonical id", parents=[common])
    sp.add_argument("entity")
    sp.add_argument("canonical")
    sp.add_argument("system")
    sp.add_argument("id")
    sp = xsub.add_parser("import", help="import links from CSV (entity,canonical_id,system,system_id) or JSON",
                         parents=[common])
    sp.add_argument("file")
    sp = xsub.add_parser("export", help="export links as CSV or JSON", parents=[common])
    sp.add_argument("--entity")
    sp.add_argument("--format", choices=["csv", "json"], default="csv")
    sp = xsub.add_parser("check", help="read master data from every system and report what is missing or unlinked",
                         parents=[common])
    sp.add_argument("--entity", action="append", help="customer, material, supplier (default: all)")
    sp.add_argument("--repair", action="store_true",
                    help="plan pushing each owner's values over drift and missing records (a dry run)")
    sp.add_argument("--apply", action="store_true", help="with --repair: queue the repairs through the sync routes")
    sp.add_argument("--broker", help="with --repair --apply: the bus's broker URL (default: the embedded queue)")
    routes_arg(sp)
    sp = xsub.add_parser("match", help="propose links between records that already exist in several systems",
                         parents=[common])
    sp.add_argument("--entity", action="append", help="customer, material, supplier (default: master_data's)")
    sp.add_argument("--apply", action="store_true", help="link the sure matches (business keys); list the rest")
    routes_arg(sp)
    for sp in xsub.choices.values():
        sp.set_defaults(handler=commands.xref)
        journal_args(sp)
        sp.add_argument("--json", action="store_true")

    sp = cmd("console", commands.console, "serve the operator console alone, over any journal (docs/console.md)")
    sp.add_argument("--port", type=int, default=8081, help="default 8081")
    sp.add_argument("--host", default="127.0.0.1")
    sp.add_argument("--users", type=Path, default=None, help="users file (docs/console.md)")
    sp.add_argument("--tracing-url", default=None, help="link to a trace, e.g. https://jaeger/trace/{trace_id}")
    sp.add_argument("--hash-password", action="store_true",
                    help="print the scrypt hash of a password (prompted, or read from stdin) for a users file")
    routes_arg(sp)
    journal_args(sp, broker=True)

    sp = cmd("journal", commands.journal, "journal maintenance")
    sp.add_argument("action", choices=["prune", "migrate"])
    sp.add_argument("--older-than", default="30d", help="prune settled events older than this (default 30d)")
    journal_args(sp)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    try:
        return _main(argv)
    except BrokenPipeError:
        # The reader went away (`ironbus trace … | head`): stop quietly, as a program killed by SIGPIPE would.
        # Point stdout at /dev/null so the interpreter's final flush does not raise a second time.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        return 141


def _main(argv: Sequence[str] | None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    from bus.logs import configure_logging

    configure_logging(getattr(args, "log_level", "warning"), getattr(args, "log_format", "console"))
    try:
        code: int = args.handler(args)
        return code
    except IronbusError as exc:
        from bus.interpolate import redact

        print(f"ironbus: {redact(str(exc))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
