"""Live Tryton stacks for the flow tests: environment variables restored afterwards, and a triangle whose master
data is provisioned and linked before the bus starts."""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

from demo.masterdata import Codes, provision
from demo.stack import Stack
from tests.helpers.services import skip_or_fail
from tryton import tryton_env

__all__ = ["environment", "journal_at_failure", "linked_triangle"]

# Deliveries still on their way (or stopped) when a flow test gave up: what it waited for is usually behind one.
_UNSETTLED = ("pending", "parked", "dead", "invalid", "stale")


@contextmanager
def environment(names: Sequence[str], set_to: Mapping[str, str] | None = None) -> Iterator[None]:
    """Set ``set_to`` for the block, and give every variable of ``names`` (and ``set_to``) its old value after."""
    keys = [*names, *(set_to or {})]
    saved = {name: os.environ.get(name) for name in keys}
    os.environ.update(set_to or {})
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def journal_at_failure(stack: Stack) -> str:
    """What a failing flow test's report shows of the stack's journal: ``ironbus status``, the deliveries not
    settled (with their last error) and the notices written, so a failure seen once in CI can be explained."""
    from bus.journal.consoledata import SearchQuery, search
    from tests.helpers.inprocess_cli import ironbus

    _, status = ironbus("status", "--journal", stack.journal_url)
    lines = []
    if stack.runtime is not None:
        journal = stack.runtime.journal
        events = {row["id"]: row for state in _UNSETTLED for row in search(journal, SearchQuery(status=state)).rows}
        for d in journal.deliveries_for_events(list(events)):
            if d.status in _UNSETTLED:
                event = events[d.event_id]
                lines.append(f"{event['key']} | {event['type']} | {d.route} | {d.target} | {d.status} | "
                             f"{d.attempts} | {d.parks} | {d.last_error}")
    unsettled = "\n".join(lines) or "(none)"
    notices = sorted(p.name for p in stack.notifications())
    return (f"{status}\nunsettled deliveries (key | type | route | target | status | attempts | parks | error):\n"
            f"{unsettled}\nnotices written: {', '.join(notices) or '(none)'}\n")


@contextmanager
def linked_triangle(work: Path, *more: Codes, env: Mapping[str, str] | None = None) -> Iterator[Stack]:
    """A running triangle on live Tryton: the demo's master data plus ``more``, provisioned in every database and
    linked in the xref before the bus starts. Skips (fails under IRONBUS_REQUIRE_SERVICES=1) without trytond."""
    if not tryton_env.installed():
        skip_or_fail("trytond is not installed (pip install -e '.[tryton]')")
    with environment(("TRYTON_URL", "IRONBUS_OUTBOX"), env):
        triangle = Stack(work, workers=3)
        try:
            triangle.start_tryton()
            links = triangle.provision()
            for codes in more:
                links += provision(triangle.adapters, codes)
            triangle.links = links
            triangle.import_xref(links)
            triangle.start_bus()
            yield triangle
        finally:
            triangle.stop()
