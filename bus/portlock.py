"""One bus per webhook port, and bus processes that never outlive their supervisor.

The processes of one ``ironbus run --processes N`` share their port through ``SO_REUSEPORT``; that option
would let a second, unrelated ``ironbus run`` bind the same port and split the traffic with the first without
a word. So the ``ironbus run`` that owns the port first takes an exclusive lock named after it (``flock`` on a
file in the temp folder, released by the kernel when the last process holding it ends — forked children
inherit it) and then checks that nothing else listens there; a second bus fails with a message naming the
port and the process that holds it.

:func:`die_with_parent` makes a forked bus process receive SIGTERM when its supervisor dies (Linux
``PR_SET_PDEATHSIG``, with a watcher thread as a fallback elsewhere), so killing the supervisor, even with
SIGKILL, never leaves workers serving the port.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import fcntl
import os
import signal
import socket
import tempfile
import threading
from pathlib import Path

import structlog

from bus.errors import ConfigError

__all__ = ["PortClaim", "claim_port", "die_with_parent"]

log = structlog.get_logger(__name__)

_PR_SET_PDEATHSIG = 1


class PortClaim:
    """The lock on a webhook port; held until :meth:`release` or until every process holding it ended."""

    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        self.fd = fd

    def release(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def _lock_path(host: str, port: int) -> Path:
    folder = Path(os.environ.get("XDG_RUNTIME_DIR") or tempfile.gettempdir())
    safe = "".join(c if c.isalnum() else "_" for c in host)
    return folder / f"ironbus-port-{safe}-{port}.lock"


def claim_port(host: str, port: int) -> PortClaim:
    """Claim ``host:port`` for this bus; raise :class:`ConfigError` when another bus or program serves it."""
    path = _lock_path(host, port)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
        os.close(fd)
        if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            raise ConfigError(f"port {host}:{port} is already served by another ironbus run (pid {holder}); stop "
                              f"it first, or give this one another --port") from None
        raise
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    # Something other than a bus may listen there. A bind without SO_REUSEPORT fails beside any listener,
    # including the SO_REUSEPORT sockets of an older bus that holds no lock.
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    probe = socket.socket(family, socket.SOCK_STREAM)
    try:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind((host, port))
    except OSError as exc:
        os.close(fd)
        raise ConfigError(f"port {host}:{port} is already in use ({exc.strerror or exc}); is another bus or "
                          f"server running there? stop it, or give this one another --port") from None
    finally:
        probe.close()
    return PortClaim(path, fd)


def die_with_parent(parent: int, sig: int = signal.SIGTERM) -> None:
    """Have the kernel send ``sig`` to this process when its parent (pid ``parent``, read by the parent before
    the fork) dies; call first thing in a forked child."""
    armed = False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        armed = libc.prctl(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0) == 0
    except (OSError, AttributeError):
        armed = False
    if os.getppid() != parent:  # the parent died before the request took effect
        os.kill(os.getpid(), sig)
        return
    if not armed:
        def watch() -> None:
            stop = threading.Event()
            while not stop.wait(0.5):
                if os.getppid() != parent:
                    log.warning("supervisor gone; stopping this bus process", parent=parent)
                    os.kill(os.getpid(), sig)
                    return

        threading.Thread(target=watch, name="ironbus-parent-watch", daemon=True).start()
