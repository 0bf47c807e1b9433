"""The whole iron triangle in one process: a trytond with crm/scm/srm, master data, xref, and the bus.

Used by ``python -m demo`` and by ``tests/flows``. The bus runs in-process (:class:`bus.runtime.Runtime`) on the
shipped ``routes.yaml`` with the embedded journal and queue; the routes file reads the Tryton URL and the outbox
folder from ``TRYTON_URL`` and ``IRONBUS_OUTBOX``, which :meth:`Stack.start_bus` sets.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import structlog

import cli
from adapters.tryton import TrytonAdapter
from bus.config import load_config
from bus.journal import Journal
from bus.runtime import Runtime, RuntimeOptions
from bus.tracing import build_trace, render_trace
from demo.masterdata import Codes, XrefLink, create_in_owners, provision, write_xref_csv
from demo.smtp import MailServer
from tryton import tryton_env

__all__ = ["REPO", "Stack", "wait_for"]

log = structlog.get_logger(__name__)

REPO = Path(__file__).resolve().parent.parent
T = TypeVar("T")


def wait_for(what: str, probe: Callable[[], T | None], timeout: float, *, interval: float = 0.25,
             progress: Callable[[str], None] | None = None) -> T:
    """Call ``probe`` until it returns something truthy (returned) or ``timeout`` seconds pass (TimeoutError)."""
    deadline = time.monotonic() + timeout
    started = time.monotonic()
    last_report = started
    while True:
        value = probe()
        if value:
            return value
        now = time.monotonic()
        if now > deadline:
            raise TimeoutError(f"gave up after {timeout:.0f} s waiting for {what}")
        if progress is not None and now - last_report >= 5:
            progress(f"   … still waiting for {what} ({now - started:.0f} s)")
            last_report = now
        time.sleep(interval)  # a poll interval between checks of a condition with a deadline


class Stack:
    """A trytond (``crm``, ``scm``, ``srm``), adapters to each database, and an in-process bus."""

    def __init__(self, work: Path, *, routes: Path = REPO / "routes.yaml", workers: int = 3) -> None:
        self.work = work
        self.routes = routes
        self.workers = workers
        self.outbox = work / "outbox"
        self.journal_url = f"sqlite:///{work / 'journal.sqlite'}"
        self.server: tryton_env.TrytonServer | None = None
        self.adapters: dict[str, TrytonAdapter] = {}
        self.runtime: Runtime | None = None
        self.links: list[XrefLink] = []
        self.mail: MailServer | None = None

    # -- Tryton ------------------------------------------------------------------------------------------------
    def start_tryton(self) -> tryton_env.TrytonServer:
        """Fresh copies of the cached, provisioned template, and one trytond serving them (free port)."""
        self.server = tryton_env.start(("crm", "scm", "srm"), run_dir=self.work / "tryton")
        for db in ("crm", "scm", "srm"):
            adapter = TrytonAdapter(db, {"url": self.server.url, "database": db, "user": tryton_env.ADMIN_USER,
                                         "password": tryton_env.ADMIN_PASSWORD})
            adapter.open()
            self.adapters[db] = adapter
        return self.server

    def provision(self, codes: Codes | None = None) -> list[XrefLink]:
        """Master data in every database (through the adapter's operations); returns the xref links."""
        self.links = provision(self.adapters, codes or Codes())
        return self.links

    def provision_through_bus(self, codes: Codes | None = None, timeout: float = 60.0,
                              say: Callable[[str], None] = lambda _: None) -> list[XrefLink]:
        """Create the master data in its owners only and let the running bus sync and link it (the shipped
        ``master_data:`` and sync routes); returns the links the bus wrote."""
        assert self.runtime is not None, "start_bus() first"
        xref = self.runtime.journal.xref

        def linked(entity: str, canonical: str, system: str) -> str:
            return wait_for(f"{entity} {canonical} linked in {system}",
                            lambda: xref.reverse(entity, system, canonical), timeout, progress=say)

        create_in_owners(self.adapters, linked, codes or Codes(), say)
        self.links = [XrefLink(r.entity, r.canonical_id, r.system, r.system_id)
                      for r in self.runtime.journal.xref_rows()]
        return self.links

    def system_id(self, entity: str, system: str) -> int:
        """The id ``system`` gives the provisioned ``entity`` (customer, supplier, material)."""
        return next(int(x.system_id) for x in self.links if x.entity == entity and x.system == system)

    def import_xref(self, links: list[XrefLink]) -> Path:
        """Write the links as CSV and load them with ``ironbus xref import`` (the operator's way)."""
        path = write_xref_csv(links, self.work / "xref.csv")
        code = cli.main(["xref", "import", str(path), "--journal", self.journal_url])
        if code != 0:
            raise RuntimeError(f"ironbus xref import {path} failed with exit code {code}")
        return path

    # -- mail ------------------------------------------------------------------------------------------------------
    def start_smtp(self) -> MailServer:
        """A local SMTP server (free port) whose mailbox is ``<work>/mail``; start it before the bus."""
        self.mail = MailServer(self.work / "mail").start()
        return self.mail

    # -- the bus -----------------------------------------------------------------------------------------------
    def start_bus(self, routes: Path | None = None) -> Runtime:
        """Load ``routes.yaml`` against this stack's server and outbox, and start the bus in-process."""
        assert self.server is not None, "start_tryton() first"
        os.environ["TRYTON_URL"] = self.server.url
        os.environ["IRONBUS_OUTBOX"] = str(self.outbox)
        config = load_config(routes or self.routes)
        if self.mail is not None and "mail" in config.systems:
            # the shipped routes send customer e-mail through the `mail` system: to this stack's SMTP server
            mail = config.systems["mail"]
            config = dataclasses.replace(config, systems={**config.systems, "mail": dataclasses.replace(
                mail, settings={**mail.settings, "host": "127.0.0.1", "port": self.mail.port})})
        self.runtime = Runtime(config, journal=self.journal_url,
                               options=RuntimeOptions(workers=self.workers, port=None, triggers=True))
        self.runtime.start()
        return self.runtime

    def stop_bus(self) -> None:
        if self.runtime is not None:
            self.runtime.stop()
            self.runtime = None

    def journal(self) -> Journal:
        """A journal handle of its own (the runtime's stays the runtime's); close it after use."""
        return Journal(self.journal_url)

    def trace(self, key: str) -> str:
        journal = self.journal()
        try:
            return render_trace(build_trace(journal, key=key))
        finally:
            journal.close()

    def notifications(self) -> list[Path]:
        return sorted(self.outbox.glob("*.json")) if self.outbox.is_dir() else []

    # -- teardown ----------------------------------------------------------------------------------------------
    def stop(self) -> None:
        """Stop the bus, close the adapters, stop trytond. Safe to call twice and after a failed start."""
        try:
            self.stop_bus()
        finally:
            for adapter in self.adapters.values():
                try:
                    adapter.close()
                except Exception as exc:  # closing is best effort; the server may already be gone
                    log.debug("adapter close failed", system=adapter.system, error=str(exc))
            self.adapters.clear()
            try:
                if self.server is not None:
                    self.server.stop()
                    self.server = None
            finally:
                if self.mail is not None:
                    self.mail.stop()
                    self.mail = None
