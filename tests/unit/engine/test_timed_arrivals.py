"""The dispatcher of timed arrivals (replays, --request-rate) holds a bounded number of requests, however
fast its source yields them: a replay waits for room instead of queueing passes ahead without end."""

import itertools
import threading
import time

from kvcache import runner
from kvcache.models import BUILTIN_MODELS
from kvcache.mpi import LocalComm
from kvcache.run_config import make_config
from kvcache.workload import User

LIMIT = 5


def wait_until(condition, seconds=10.0):
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.005)


def test_the_dispatcher_waits_for_room_and_a_served_request_makes_some(tmp_path, monkeypatch):
    monkeypatch.setattr(runner, "MAX_QUEUED_REQUESTS", LIMIT)
    config = make_config("run", model="tiny-1b", gpu_mem_gb=0, cpu_mem_gb=0, cache_dir=str(tmp_path))
    run = runner.RankRun(
        config, BUILTIN_MODELS["tiny-1b"], LocalComm(), str(tmp_path), "buffered", 1 << 30, "simulated"
    )
    try:
        yielded = []
        # Requests of distinct users, at once: none waits for its user, only for room.
        users = (next(User(1, u).requests()) for u in itertools.count())
        arrivals = ((None, request) for request in users if not yielded.append(request))
        backlog, done = runner.PriorityBacklog(), threading.Event()
        (dispatcher,), hand_on = run._timed_arrivals(backlog, done, arrivals)  # noqa: SLF001 - the unit under test
        thread = threading.Thread(target=dispatcher, daemon=True)
        thread.start()
        wait_until(lambda: len(yielded) == LIMIT + 1)  # the one past the limit waits for room
        time.sleep(0.3)
        assert len(yielded) == LIMIT + 1
        request, _arrival = backlog.get()
        hand_on(request)  # served: room for one more
        wait_until(lambda: len(yielded) == LIMIT + 2)
        run.stop.set()
        thread.join(10)
        assert done.is_set() and not thread.is_alive()
    finally:
        run.close()
