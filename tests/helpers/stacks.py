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

__all__ = ["environment", "linked_triangle"]


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
