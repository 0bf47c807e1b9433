"""Run the ``ironbus`` command in this process and read what it printed, beside a bus running here too."""

from __future__ import annotations

import contextlib
import io

import cli
from bus.logs import configure_logging


def ironbus(*args: str) -> tuple[int, str]:
    """The exit code and standard output of ``ironbus args``.

    A stack's bus runs in the test's process and logs from its threads; its logs are sent to stderr first (as the
    command itself does once it starts), or a poll logged while stdout is redirected lands in the output read back
    (a JSON document with a log line in it, seen once under load). Not capsys either: the command configures
    logging on the sys.stderr of the moment, and a capsys stream closes after the test while the bus keeps logging.
    """
    configure_logging("warning")
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = cli.main(list(args))
    return code, out.getvalue()
