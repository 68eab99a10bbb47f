"""SIGINT/SIGTERM seen by a thread of its own, even while the main thread waits inside an MPI call.

Python runs a signal handler in the main thread between bytecodes, so a rank blocked in a collective on a peer
that was killed never runs it. mpirun then sends the ranks left SIGTERM and, a second later
(odls_base_sigkill_timeout), SIGKILL: without this watch their run directories stayed behind. With
signal.set_wakeup_fd the interpreter's C-level handler writes the signal's number to a pipe at once, and the
thread reading that pipe can act within that second.
"""

import os
import signal
import threading
from typing import Callable

WATCHED = (signal.SIGINT, signal.SIGTERM)


class SignalWatch:
    """While open, calls `on_signal(signum)` from its own thread for every SIGINT/SIGTERM the process gets.

    The Python handlers for those signals must be installed (not SIG_DFL/SIG_IGN): only then does the C-level
    handler run and write to the wakeup pipe. Open and close it in the main thread (set_wakeup_fd's rule)."""

    def __init__(self, on_signal: Callable[[int], None]):
        self.on_signal = on_signal
        self._read_fd = self._write_fd = -1
        self._previous_fd = -1
        self._thread = None

    def __enter__(self) -> "SignalWatch":
        self._read_fd, self._write_fd = os.pipe()
        os.set_blocking(self._write_fd, False)  # set_wakeup_fd's requirement: a full pipe must never block
        self._previous_fd = signal.set_wakeup_fd(self._write_fd, warn_on_full_buffer=False)
        self._thread = threading.Thread(target=self._watch, name="kvcache-signal-watch", daemon=True)
        self._thread.start()
        return self

    def _watch(self) -> None:
        watched = {int(s) for s in WATCHED}
        while True:
            try:
                data = os.read(self._read_fd, 64)
            except InterruptedError:
                continue
            except OSError:
                return
            if not data:
                return  # __exit__ closed the write end
            for signum in data:
                if signum in watched:
                    self.on_signal(signum)

    def __exit__(self, *_exc) -> None:
        signal.set_wakeup_fd(self._previous_fd)
        os.close(self._write_fd)
        self._thread.join(timeout=5.0)  # it ends at EOF, or once a callback under way returns
        os.close(self._read_fd)
