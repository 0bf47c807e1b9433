"""A real local SMTP server for the demo and the flow tests (aiosmtpd): it accepts every message for any recipient
and keeps it as an ``.eml`` file in a mailbox folder, so what each customer received can be read back.

``python -m demo.smtp [--port N] [--dir DIR]`` runs one in the foreground (Ctrl-C stops it).
"""

from __future__ import annotations

import argparse
import email
import email.policy
import signal
import threading
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session

from bus.stopflag import StopFlag

__all__ = ["MailServer", "Received"]


@dataclass(frozen=True)
class Received:
    """One message as delivered: envelope recipients and the parsed message."""

    recipients: tuple[str, ...]
    message: EmailMessage
    path: Path

    @property
    def subject(self) -> str:
        return str(self.message["Subject"] or "")

    @property
    def body(self) -> str:
        part = self.message.get_body(preferencelist=("plain",))
        return part.get_content().strip() if part is not None else ""


class _Mailbox:
    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.messages: list[Received] = []
        self.lock = threading.Lock()

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:  # noqa: N802 (aiosmtpd)
        raw = envelope.original_content or envelope.content or b""
        data = raw if isinstance(raw, bytes) else raw.encode()
        message = email.message_from_bytes(data, policy=email.policy.default)
        assert isinstance(message, EmailMessage)
        with self.lock:
            path = self.folder / f"{len(self.messages) + 1:04d}.eml"
            path.write_bytes(data)
            self.messages.append(Received(tuple(envelope.rcpt_tos), message, path))
        return "250 Message accepted for delivery"


class MailServer:
    """An SMTP server on 127.0.0.1 (``port=0``: a free one) that files every message in ``folder``."""

    def __init__(self, folder: Path, port: int = 0) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.mailbox = _Mailbox(folder)
        self.controller = Controller(self.mailbox, hostname="127.0.0.1", port=port or _free_port())

    @property
    def port(self) -> int:
        return int(self.controller.port)

    def start(self) -> MailServer:
        self.controller.start()
        return self

    def stop(self) -> None:
        """Stop serving; safe to call twice."""
        try:
            self.controller.stop()
        except (AssertionError, RuntimeError):
            pass  # never started, or already stopped

    def received(self, to: str | None = None) -> list[Received]:
        """Messages received so far (for recipient ``to`` only, when given)."""
        with self.mailbox.lock:
            found = list(self.mailbox.messages)
        return [m for m in found if to is None or to in m.recipients]

    def __enter__(self) -> MailServer:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _main() -> int:
    parser = argparse.ArgumentParser(prog="python -m demo.smtp", description=__doc__.split("\n")[0])
    parser.add_argument("--port", type=int, default=8025)
    parser.add_argument("--dir", type=Path, default=Path("var/mail"))
    args = parser.parse_args()
    stop = StopFlag()  # not a threading.Event set in a handler: see bus.stopflag
    signal.signal(signal.SIGTERM, stop.request)
    with MailServer(args.dir, args.port) as server:
        print(f"SMTP on 127.0.0.1:{server.port}, mailbox {args.dir}", flush=True)
        try:
            while not stop.wait(0.2):
                pass
        except KeyboardInterrupt:
            pass
    return 0


if __name__ == "__main__":
    raise SystemExit(_main())
