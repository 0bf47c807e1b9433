"""What a console page works with: the journal, the routes, the queue, the systems (:class:`ConsoleContext`),
and the app that renders it (:class:`Console`, the shape of :class:`bus.webconsole.app.ConsoleApp` the views
use, so views need not import the app that imports them)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from adapters.base import Adapter
from bus.config import Config, load_config
from bus.errors import ConfigError
from bus.journal import Journal
from bus.queue.base import Queue
from bus.webconsole.auth import Session
from bus.webconsole.http import Response

__all__ = ["Console", "ConsoleContext"]


@dataclass
class ConsoleContext:
    """What the console reads and acts on. ``queue`` re-drives dead letters (``open_queue`` gives one to a
    standalone console); ``snapshot`` is the running bus's live protections (else the journal's copy)."""

    journal: Journal
    routes: Path | None = None
    queue: Queue | None = None
    snapshot: Callable[[], dict[str, Any]] | None = None
    tracing_url: str = ""  # e.g. https://jaeger.example/trace/{trace_id}
    #: builds (not opens) one adapter per configured system: ``bus.runtime.open_adapters``, handed in by whoever
    #: serves the console (the console does not import the runtime that serves it)
    adapters: Callable[[Config], Mapping[str, Adapter]] | None = None

    def open_adapters(self, config: Config) -> dict[str, Adapter]:
        """Fresh adapter instances of ``config``'s systems (to open, use and close)."""
        if self.adapters is None:
            raise ConfigError("this console was started without a way to reach the systems")
        return dict(self.adapters(config))

    def __post_init__(self) -> None:
        self._config: tuple[float, Config] | None = None
        self._lock = threading.Lock()

    def config(self) -> Config | None:
        """The current routes (re-read when the file changed), or None without a routes file."""
        if self.routes is None or not self.routes.is_file():
            return None
        mtime = self.routes.stat().st_mtime
        with self._lock:
            if self._config is None or self._config[0] != mtime:
                self._config = (mtime, load_config(self.routes))
            return self._config[1]


class Console(Protocol):
    """The app as a view sees it."""

    context: ConsoleContext
    prefix: str

    def render(self, template: str, session: Session | None, status: int = 200, **values: Any) -> Response: ...
