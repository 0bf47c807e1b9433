"""Overhead of the per-system protections (rate limiter + circuit breaker) on each delivery.

Baseline: the same loop calling a no-op "adapter" without protections, measured in the same run. Prints the
figures, the ratio, and ends with one JSON line.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable

from bus.protection import CircuitBreaker, RateLimiter, SystemProtection

CALLS = 200_000
THREADS = 8


def noop() -> None:
    return None


def bare(n: int) -> None:
    for _ in range(n):
        try:
            noop()
        except BaseException:
            raise


def guarded(guard: SystemProtection) -> Callable[[int], None]:
    def run(n: int) -> None:
        for _ in range(n):
            guard.admit(timeout=1.0)
            error: BaseException | None = None
            try:
                noop()
            except BaseException as exc:
                error = exc
                raise
            finally:
                guard.observe(error)

    return run


def timed(fn: Callable[[int], None], threads: int) -> float:
    per = CALLS // threads
    workers = [threading.Thread(target=fn, args=(per,)) for _ in range(threads)]
    started = time.perf_counter()
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    return (time.perf_counter() - started) / (per * threads)


def main() -> None:
    figures: dict[str, float] = {}
    for threads in (1, THREADS):
        # A limit far above the call rate, so the figure is the bookkeeping cost, not throttling.
        guard = SystemProtection("bench", RateLimiter(10**9, 1.0), CircuitBreaker(5, 30.0))
        base = timed(bare, threads)
        prot = timed(guarded(guard), threads)
        figures[f"baseline_us_{threads}t"] = round(base * 1e6, 3)
        figures[f"protected_us_{threads}t"] = round(prot * 1e6, 3)
        figures[f"overhead_us_{threads}t"] = round((prot - base) * 1e6, 3)
        print(f"{threads} thread(s): baseline {base * 1e6:.3f} us/call, protected {prot * 1e6:.3f} us/call, "
              f"overhead {(prot - base) * 1e6:.3f} us/call ({prot / base:.1f}x a no-op call)")
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
