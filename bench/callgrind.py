"""Counting instructions with ``valgrind --tool=callgrind``: one driver script run over several source trees.

Instructions do not move with other users of the machine, so two trees compared this way show a difference of a
few percent that wall-clock or CPU-time pairs on a shared machine cannot. Shared by ``bench/instructions.py`` and
``bench/otel_overhead.py``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

__all__ = ["RUNTIME", "instructions"]

#: The start of a driver: a ``Runtime`` on the embedded default in the work folder (``sys.argv[1]``; the journal
#: ``$BENCH_JOURNAL`` when set), one route from a stub CRM to a stub SCM, not started — with leases of a day the
#: lease keeper never wakes, so no thread runs on a timer and the count does not depend on how slow valgrind is.
#: ``n`` is ``sys.argv[2]``. The collector is set as ``ironbus run`` sets it once started (bus.gcsettings), and
#: the driving thread keeps its journal connection as a worker thread does (bus.journal.keptconn).
RUNTIME = '''
import sys, textwrap
from pathlib import Path
from bus.envelope import Event
from bus.logs import configure_logging
from bus.runtime import Runtime, RuntimeOptions
configure_logging("warning")  # as `ironbus run` does
folder, n = Path(sys.argv[1]), int(sys.argv[2])
(folder / "routes.yaml").write_text(textwrap.dedent("""\\
    systems:
      crm: {adapter: stub}
      scm: {adapter: stub}
    routes:
      - name: demand
        from: crm.order_changed
        key: number
        to: [scm.update_demand]
    """))
import os
runtime = Runtime(folder / "routes.yaml", journal=os.environ.get("BENCH_JOURNAL") or f"sqlite:///{folder}/j.sqlite",
                  options=RuntimeOptions(workers=1, batch_size=64, port=None, triggers=False, lease_seconds=86400))
for name, adapter in runtime.adapters.items():
    adapter.bind_store(runtime.journal.adapter_store(name))
    adapter.open()
try:  # what `ironbus run` does once started (bus.gcsettings); a baseline from before it has none
    from bus.gcsettings import settle_for_serving
except ImportError:
    settle_for_serving = lambda: False
settle_for_serving()
try:  # the worker below runs in this thread: it keeps its connection, as a worker thread of `ironbus run` does
    from bus.journal.keptconn import kept_connections
    kept_connections().__enter__()
except ImportError:
    pass
'''


def instructions(driver: str, runs: dict[tuple[str, int], Path], folder: Path,
                 env: dict[tuple[str, int], dict[str, str]] | None = None) -> dict[tuple[str, int], int]:
    """Total instructions of ``driver`` (Python source, run as ``driver.py WORKDIR N``) for each ``(side, N)`` of
    ``runs``, with that side's tree first on ``PYTHONPATH``. All run at once (callgrind itself is single-threaded);
    a fixed hash seed keeps set and dict orders, hence the counts, the same from run to run. ``env``: extra
    environment variables of each run."""
    (folder / "driver.py").write_text(driver)
    procs = {}
    for (side, n), tree in runs.items():
        work = folder / f"cg-{side}-{n}"
        work.mkdir()
        procs[(side, n)] = subprocess.Popen(
            ["valgrind", "--tool=callgrind", f"--callgrind-out-file={work / 'out'}", sys.executable,
             str(folder / "driver.py"), str(work), str(n)], cwd=work, stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE, env={**os.environ, "PYTHONPATH": str(tree), "PYTHONHASHSEED": "0",
                                                  **(env or {}).get((side, n), {})})
    found: dict[tuple[str, int], int] = {}
    for key, proc in procs.items():
        _, err = proc.communicate()
        if proc.returncode != 0:
            raise RuntimeError(f"callgrind run {key} failed (exit code {proc.returncode}): {err.decode()[-2000:]}")
        out = folder / f"cg-{key[0]}-{key[1]}" / "out"
        found[key] = next(int(line.split()[1]) for line in out.read_text().splitlines()
                          if line.startswith("totals:"))
    return found
