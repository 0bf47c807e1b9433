"""Output helpers for the CLI: tables for humans, JSON for scripts, and a progress bar on stderr."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Sequence
from typing import Any, TextIO

import orjson

__all__ = ["Progress", "dump_json", "table"]


def dump_json(doc: Any, out: TextIO | None = None) -> None:
    """One JSON document, indented, to stdout."""
    (out or sys.stdout).write(orjson.dumps(doc, option=orjson.OPT_INDENT_2, default=str).decode() + "\n")


def table(rows: Sequence[Sequence[Any]], headers: Sequence[str], out: TextIO | None = None) -> None:
    """A plain-text table with aligned columns (cells are cut at 60 characters)."""
    out = out or sys.stdout
    cells = [[_cell(c) for c in row] for row in rows]
    widths = [len(h) for h in headers]
    for row in cells:
        widths = [max(w, len(c)) for w, c in zip(widths, row, strict=False)]
    out.write("  ".join(h.upper().ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip() + "\n")
    for row in cells:
        out.write("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=False)).rstrip() + "\n")
    if not rows:
        out.write("(none)\n")


def _cell(value: Any) -> str:
    text = "" if value is None else str(value)
    text = text.replace("\n", " ")
    return text if len(text) <= 60 else text[:57] + "..."


class Progress:
    """A progress bar on stderr for long CLI work; silent when stderr is not a terminal unless forced."""

    def __init__(self, total: int, label: str, out: TextIO | None = None, force: bool = False) -> None:
        self.total = max(total, 0)
        self.label = label
        self.done = 0
        self.out = out or sys.stderr
        self.enabled = force or self.out.isatty()
        self._started = time.monotonic()
        self._last = 0.0

    def advance(self, n: int = 1) -> None:
        self.done += n
        now = time.monotonic()
        if self.enabled and (now - self._last > 0.1 or self.done >= self.total):
            self._last = now
            self._draw(now)

    def _draw(self, now: float) -> None:
        frac = self.done / self.total if self.total else 1.0
        bar = "#" * int(frac * 30)
        rate = self.done / max(now - self._started, 1e-9)
        self.out.write(f"\r{self.label} [{bar:<30}] {self.done}/{self.total} ({rate:.0f}/s)")
        if self.done >= self.total:
            self.out.write("\n")
        self.out.flush()

    def iterate(self, items: Iterable[Any]) -> Iterable[Any]:
        for item in items:
            yield item
            self.advance()
