"""SignalWatch: SIGINT/SIGTERM reach a thread of its own, and the previous wakeup fd comes back."""

import os
import signal
import threading

from kvcache.signal_watch import SignalWatch


def test_a_signal_reaches_the_watch_thread_and_the_wakeup_fd_is_restored():
    seen = []
    arrived = threading.Event()

    def on_signal(signum):
        seen.append((signum, threading.current_thread().name))
        arrived.set()

    previous = signal.signal(signal.SIGTERM, lambda *_: None)  # the C-level handler only runs with a Python one
    before = signal.set_wakeup_fd(-1)
    signal.set_wakeup_fd(before)
    try:
        with SignalWatch(on_signal):
            os.kill(os.getpid(), signal.SIGTERM)
            assert arrived.wait(5.0)
        after = signal.set_wakeup_fd(-1)
        signal.set_wakeup_fd(after)
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert seen == [(signal.SIGTERM, "kvcache-signal-watch")]
    assert after == before


def test_other_signals_do_not_call_back():
    seen = []
    previous = signal.signal(signal.SIGUSR1, lambda *_: None)
    try:
        with SignalWatch(seen.append):
            os.kill(os.getpid(), signal.SIGUSR1)
            signal.raise_signal(signal.SIGUSR1)  # delivered and handled before the block ends
    finally:
        signal.signal(signal.SIGUSR1, previous)
    assert seen == []
