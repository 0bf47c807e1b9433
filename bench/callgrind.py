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

__all__ = ["instructions"]


def instructions(driver: str, runs: dict[tuple[str, int], Path], folder: Path) -> dict[tuple[str, int], int]:
    """Total instructions of ``driver`` (Python source, run as ``driver.py WORKDIR N``) for each ``(side, N)`` of
    ``runs``, with that side's tree first on ``PYTHONPATH``. All run at once (callgrind itself is single-threaded);
    a fixed hash seed keeps set and dict orders, hence the counts, the same from run to run."""
    (folder / "driver.py").write_text(driver)
    procs = {}
    for (side, n), tree in runs.items():
        work = folder / f"cg-{side}-{n}"
        work.mkdir()
        procs[(side, n)] = subprocess.Popen(
            ["valgrind", "--tool=callgrind", f"--callgrind-out-file={work / 'out'}", sys.executable,
             str(folder / "driver.py"), str(work), str(n)], cwd=work, stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE, env={**os.environ, "PYTHONPATH": str(tree), "PYTHONHASHSEED": "0"})
    found: dict[tuple[str, int], int] = {}
    for key, proc in procs.items():
        _, err = proc.communicate()
        if proc.returncode != 0:
            raise RuntimeError(f"callgrind run {key} failed (exit code {proc.returncode}): {err.decode()[-2000:]}")
        out = folder / f"cg-{key[0]}-{key[1]}" / "out"
        found[key] = next(int(line.split()[1]) for line in out.read_text().splitlines()
                          if line.startswith("totals:"))
    return found
