"""A stop signal never hangs the process that receives it (bus.stopflag)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

from bus.stopflag import StopFlag

ROOT = Path(__file__).resolve().parents[2]

# The main thread waits on the flag in a loop while another thread sends it SIGTERM thousands of times: every
# signal runs the handler in the middle of some wait. A handler that took a lock the waiting main thread can hold
# (threading.Event.set) hung here within a few hundred signals.
_POUNDED = textwrap.dedent("""
    import signal, threading, time
    from bus.stopflag import StopFlag

    flag = StopFlag()
    flag.install()
    main = threading.main_thread().ident

    def pound():
        for _ in range(800):
            signal.pthread_kill(main, signal.SIGTERM)
            time.sleep(0.00005)

    sender = threading.Thread(target=pound)
    sender.start()
    waits = 0
    while sender.is_alive():
        flag.wait(0.0001)
        waits += 1
    sender.join()
    print("stopped" if flag.is_set() else "not set", waits)
""")


def test_signals_arriving_during_every_wait_never_hang_the_process() -> None:
    done = subprocess.run([sys.executable, "-c", _POUNDED], cwd=ROOT, capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, done.stderr[-2000:]
    word, waits = done.stdout.split()
    assert word == "stopped" and int(waits) > 0


def test_the_flag_is_set_by_the_signal_and_the_old_handlers_come_back() -> None:
    flag = StopFlag()
    previous = flag.install()
    try:
        assert not flag.wait(0.0)
        os.kill(os.getpid(), signal.SIGINT)  # the handler runs before the next bytecode of this thread
        assert flag.wait(5.0) and flag.is_set()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    assert signal.getsignal(signal.SIGINT) is previous[signal.SIGINT]
