"""Requests that find every worker busy wait by QoS priority (higher first), then in arrival order: the open
loop's backlog and the closed loop's gate (--max-concurrent-requests) both."""

import threading
import time

import pytest

from kvcache.runner import PriorityBacklog, PriorityGate
from kvcache.storage_io import Interrupted
from kvcache.workload import User

REQUEST = next(User(1, 0).requests())


def request(priority):
    return REQUEST.__class__(**dict(vars(REQUEST), priority=priority))


def test_the_backlog_serves_higher_priority_first_then_arrival_order():
    backlog, stop = PriorityBacklog(), threading.Event()
    for priority, arrival in ((1, 0.1), (3, 0.4), (2, 0.2), (3, 0.3), (1, 0.0)):
        assert backlog.put(request(priority), arrival, stop)
    served = [backlog.get() for _request in range(5)]
    assert [(r.priority, arrival) for r, arrival in served] == [(3, 0.3), (3, 0.4), (2, 0.2), (1, 0.0), (1, 0.1)]


def test_a_full_backlog_makes_the_user_wait_until_the_window_closes():
    backlog, stop = PriorityBacklog(maxsize=1), threading.Event()
    assert backlog.put(request(1), 0.0, stop)
    stop.set()
    assert backlog.put(request(1), 0.1, stop) is False  # gave up at the window's end instead of blocking


def wait_until(condition, seconds=10.0):
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.005)


def test_the_gate_hands_a_freed_slot_to_the_highest_priority_waiter():
    gate, stop = PriorityGate(1), threading.Event()
    gate.acquire(request(1), 0.0, stop)  # the one slot is taken
    granted = []
    lock = threading.Lock()

    def waiter(priority, arrival):
        gate.acquire(request(priority), arrival, stop)
        with lock:
            granted.append((priority, arrival))

    threads = []
    for count, (priority, arrival) in enumerate(((1, 1.0), (3, 3.0), (2, 2.0), (3, 2.5)), start=1):
        threads.append(threading.Thread(target=waiter, args=(priority, arrival)))
        threads[-1].start()
        wait_until(lambda count=count: gate.waiting() == count)
    for served in range(1, 5):
        gate.release()
        wait_until(lambda served=served: len(granted) == served)
    for thread in threads:
        thread.join(10)
    assert granted == [(3, 2.5), (3, 3.0), (2, 2.0), (1, 1.0)]
    gate.release()
    gate.acquire(request(1), 9.0, stop)  # the last slot came back to the gate: free again at once


def test_a_waiter_leaves_the_gate_when_the_window_closes():
    gate, stop = PriorityGate(1), threading.Event()
    gate.acquire(request(1), 0.0, stop)
    outcome = []

    def waiter():
        try:
            gate.acquire(request(3), 1.0, stop)
            outcome.append("granted")
        except Interrupted:
            outcome.append("interrupted")

    thread = threading.Thread(target=waiter)
    thread.start()
    wait_until(lambda: gate.waiting() == 1)
    stop.set()
    thread.join(10)
    assert outcome == ["interrupted"] and gate.waiting() == 0
    gate.release()  # the held slot returns to the gate, not to the waiter that left
    with pytest.raises(Interrupted):  # stop is set, but a free slot is taken at once
        gate.acquire(request(1), 2.0, stop)
        gate.acquire(request(1), 3.0, stop)
