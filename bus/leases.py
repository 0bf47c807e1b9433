"""Keeping leases alive while their work is under way.

A lease on the embedded queue ends on its own after ``lease_seconds`` so that a killed worker's messages come
back. A live worker whose batch goes to a slow target (retries, ``Retry-After``, timeouts) can need longer than
that; when the lease ran out in the middle, another worker took the same messages and delivered them a second
time. :class:`LeaseKeeper` renews, every third of a lease, every lease handed out and not yet settled (acked or
released), in one statement. Only a process that is alive renews, so a killed one's leases still expire and
nothing is lost; a delivery that takes longer than a lease is no longer delivered twice.
"""

from __future__ import annotations

import threading
import time
import weakref
from collections.abc import Callable, Sequence
from typing import Any

import structlog

__all__ = ["LeaseKeeper"]

log = structlog.get_logger(__name__)


class LeaseKeeper:
    """Renews unsettled leases in a daemon thread.

    ``extend_many(leases, seconds)`` renews leases to ``seconds`` from now and returns how many it still held;
    a lease counts as settled once its ``settled`` attribute is true. The thread starts with the first lease
    watched and stops with :meth:`close`.
    """

    def __init__(self, extend_many: Callable[[Sequence[Any], float], int], lease_seconds: float,
                 *, warn_after: float | None = None) -> None:
        self._extend_many = extend_many
        self.lease_seconds = lease_seconds
        self.interval = max(lease_seconds / 3.0, 0.05)
        self.warn_after = warn_after if warn_after is not None else 10 * lease_seconds
        self._leases: weakref.WeakKeyDictionary[Any, float] = weakref.WeakKeyDictionary()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.renewals = 0  # statements run: for tests and the curious
        self.lost = 0  # leases another consumer had taken when we tried to renew them

    def watch(self, leases: Sequence[Any]) -> None:
        """Keep these leases alive until they are settled."""
        if not leases:
            return
        now = time.monotonic()
        with self._lock:
            for lease in leases:
                self._leases[lease] = now
            if self._thread is None and not self._stop.is_set():
                self._thread = threading.Thread(target=self._run, name="ironbus-lease-keeper", daemon=True)
                self._thread.start()

    def held(self) -> int:
        with self._lock:
            return sum(1 for lease in self._leases if not getattr(lease, "settled", False))

    def _due(self) -> list[Any]:
        now = time.monotonic()
        with self._lock:
            for lease in [lease for lease in self._leases if getattr(lease, "settled", False)]:
                del self._leases[lease]
            due = list(self._leases)
            oldest = min(self._leases.values(), default=now)
        if due and now - oldest > self.warn_after:
            log.warning("queue.lease_held_long", leases=len(due), seconds=round(now - oldest, 1),
                        hint="a delivery has been under way for a long time; see ironbus status")
        return due

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            due = self._due()
            if not due:
                continue
            try:
                kept = self._extend_many(due, self.lease_seconds)
            except Exception as exc:  # noqa: BLE001 - the database may be away; the next tick tries again
                log.warning("queue.lease_renewal_failed", leases=len(due), error=str(exc))
                continue
            self.renewals += 1
            if kept < len(due):
                # Settled meanwhile, or the lease had already run out and another consumer took the message.
                self.lost += len(due) - kept

    def close(self) -> None:
        self._stop.set()
        thread = self._thread
        if thread is not None:
            thread.join(timeout=5)
