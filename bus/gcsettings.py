"""Garbage-collector settings for a long-running bus process (``ironbus run``).

CPython's cyclic collector runs a young collection every 700 net allocations of container objects and, every
so often, a full collection that walks every tracked object of the process. A started bus holds a few hundred
thousand long-lived objects (modules, compiled mappings and schemas, SQLAlchemy's and the adapters' state), and
every event allocates dozens of dicts, lists and tuples (its JSON, its envelope, its rows). Measured on the
durable path (``bench/instructions.py``'s driver, 20,000 events): the collector took 13–15 µs of the
100–130 µs per event, most of it in full collections of 40–50 ms each — which also showed as latency spikes.

After start-up, :func:`settle_for_serving` moves everything alive into the permanent generation
(``gc.freeze``): full collections then walk only what was allocated since, and the start-up objects, which
live as long as the process, are never walked again. The young generation's threshold goes from 700 to
:data:`YOUNG_THRESHOLD`: a batch of events is mostly freed by reference counting when it is settled, so
collecting every 700 allocations found little. Together about 3 µs per event remained.

Nothing is freed later for it: reference counting frees acyclic objects at once as always, and cycles created
after start-up are still collected. ``IRONBUS_GC=default`` keeps Python's own settings (to compare, or should
a plug-in rely on them).
"""

from __future__ import annotations

import gc
import os

import structlog

__all__ = ["YOUNG_THRESHOLD", "settle_for_serving"]

log = structlog.get_logger(__name__)

#: Net container allocations between young collections (CPython's default is 700).
YOUNG_THRESHOLD = 10_000
#: Young collections per middle one, middle ones per full one (CPython: 10 and 10).
OLDER_THRESHOLDS = (20, 100)


def settle_for_serving() -> bool:
    """Freeze what start-up allocated and collect less often; returns False when ``IRONBUS_GC=default``
    asks for Python's own settings. Call once, in the serving process, after the runtime has started."""
    if (os.environ.get("IRONBUS_GC") or "").strip().lower() == "default":
        return False
    gc.collect()  # start-up's own garbage goes now rather than into the permanent generation
    gc.freeze()
    gc.set_threshold(YOUNG_THRESHOLD, *OLDER_THRESHOLDS)
    log.debug("gc.settled", frozen=gc.get_freeze_count(), thresholds=gc.get_threshold())
    return True
