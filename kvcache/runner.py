"""One rank's benchmark: users and workers that turn requests into tier I/O inside one measured window."""

import collections
import queue
import threading
import time
from typing import List, Optional

from kvcache.metrics import Metrics
from kvcache.models import Model
from kvcache.progress import Progress
from kvcache.storage_io import BufferPool, FileIO, Interrupted, PatternSource
from kvcache.tiers import Mover, TierManager, build_tiers
from kvcache.units import MIB
from kvcache.workload import GENERATION_SECONDS_PER_TOKEN, QOS_CLASSES, Arrivals, Request, User

CONTROL_TICK_S = 0.1
JOIN_TIMEOUT_S = 30.0
QOS_TARGET_MS = {q.name: q.ttft_target_ms for q in QOS_CLASSES}


def rank_seed(seed: int, rank: int) -> int:
    """Each rank draws its own workload and data: rank N uses seed + N (the result lists every rank's)."""
    return seed + rank


class RankRun:
    """Everything one rank does between the start barrier and the end of its window."""

    def __init__(
        self,
        config,
        model: Model,
        comm,
        rank_dir: str,
        io_engine: str,
        storage_capacity: int,
        gpu_backend: str,
        progress: Optional[Progress] = None,
    ):
        self.config = config
        self.model = model
        self.comm = comm
        self.seed = rank_seed(config.seed, comm.rank)
        self.metrics = Metrics()
        self.stop = threading.Event()
        self.pool = BufferPool(config.io_depth, config.io_chunk_mib * MIB, self.seed.to_bytes(8, "little"))
        self.pattern = PatternSource(self.pool)
        mover = Mover(self.pool, self.stop)
        self.tiers = build_tiers(
            config, self.metrics, mover, rank_dir, FileIO(io_engine), storage_capacity, gpu_backend
        )
        self.manager = TierManager(self.tiers, self.metrics, self.stop, promote=config.promote)
        self.progress = progress
        self.per_token_s = GENERATION_SECONDS_PER_TOKEN[config.generation_mode]
        self.think = config.performance_profile == "latency"
        self._admitted = 0
        self._admit_lock = threading.Lock()
        self._failure: Optional[str] = None
        self._failure_lock = threading.Lock()
        self.remote_failure = None
        self.interrupted_by: Optional[str] = None
        self.timeseries: List[dict] = []
        self.window_start = self.window_end = None
        self.window_offsets = (0.0, 0.0)  # seconds from the shared start barrier: comparable across hosts

    # -- workers ---------------------------------------------------------------------------
    def _admit(self) -> bool:
        limit = self.config.max_requests
        with self._admit_lock:
            if self.stop.is_set() or (limit and self._admitted >= limit):
                return False
            self._admitted += 1
            return True

    def _fail(self, message: str) -> None:
        with self._failure_lock:
            if self._failure is None:
                self._failure = message
        self.stop.set()

    def _guarded(self, body):
        def run():
            try:
                body()
            except Interrupted:
                pass  # the window closed mid-operation: expected, the partial op is not recorded
            except Exception as exc:  # noqa: BLE001 - any worker error fails the rank, with its message
                self._fail(f"{type(exc).__name__}: {exc}")

        return run

    def serve(self, request: Request, arrival: float) -> None:
        started = time.perf_counter()
        self.metrics.begin_request()
        bpt = self.model.bytes_per_token
        manager = self.manager
        if request.prefix_key:
            if manager.read(request.prefix_key) is None:
                # First user of this system prompt writes it; one that lost the race reads it instead.
                if manager.write_new(request.prefix_key, request.prefix_tokens * bpt, self.pattern) is None:
                    manager.read(request.prefix_key, count_lookup=False)
        if request.previous_key:
            manager.read(request.previous_key)
        manager.write_new(request.key, request.context_tokens * bpt, self.pattern)
        ttft = time.perf_counter() - arrival
        manager.read(request.key, count_lookup=False)  # decode reads the context it just cached
        if self.per_token_s and self.stop.wait(request.generation_tokens * self.per_token_s):
            raise Interrupted()
        e2e = time.perf_counter() - arrival
        self.metrics.record_request(
            request.qos,
            QOS_TARGET_MS[request.qos],
            started - arrival,
            ttft,
            e2e,
            request.context_tokens,
            request.generation_tokens,
        )

    def _closed_loop_user(self, user_id: int, slots: Optional[threading.Semaphore]):
        user = User(self.seed, user_id, not self.config.disable_multi_turn, not self.config.disable_prefix_caching)

        def body():
            for request in user.requests():
                if self.think and self.stop.wait(request.think_seconds):
                    return
                if not self._admit():
                    return
                arrival = time.perf_counter()
                if slots is None:
                    self.serve(request, arrival)
                    continue
                while not slots.acquire(timeout=CONTROL_TICK_S):
                    if self.stop.is_set():
                        return
                try:
                    self.serve(request, arrival)
                finally:
                    slots.release()

        return body

    def _open_loop(self, backlog: "queue.Queue", dispatch_done: threading.Event):
        users = [
            User(self.seed, u, not self.config.disable_multi_turn, not self.config.disable_prefix_caching)
            for u in range(self.config.num_users)
        ]
        streams = [u.requests() for u in users]
        # A user has one request in flight, as a real one would: a turn that arrives while the previous
        # one is served waits, in order (its wait counts in queue_wait), instead of missing its context.
        users_lock = threading.Lock()
        busy = [False] * len(users)
        waiting = [collections.deque() for _user in users]
        arrivals = Arrivals(self.seed, self.config.request_rate, len(users))

        def dispatcher():
            try:
                origin = time.perf_counter()
                for at, user_id in arrivals:
                    if self.stop.wait(max(0.0, origin + at - time.perf_counter())) or not self._admit():
                        return
                    item = (next(streams[user_id]), time.perf_counter())
                    with users_lock:
                        if busy[user_id]:
                            waiting[user_id].append(item)
                        else:
                            busy[user_id] = True
                            backlog.put(item)
            finally:
                dispatch_done.set()

        def worker():
            while not self.stop.is_set():
                try:
                    request, arrival = backlog.get(timeout=CONTROL_TICK_S)
                except queue.Empty:
                    if dispatch_done.is_set():
                        return
                    continue
                try:
                    self.serve(request, arrival)
                finally:
                    with users_lock:  # hand this user's next waiting turn, in order, to the workers
                        if waiting[request.user]:
                            backlog.put(waiting[request.user].popleft())
                        else:
                            busy[request.user] = False

        return dispatcher, worker

    def _start_workers(self) -> List[threading.Thread]:
        config = self.config
        bodies = []
        if config.request_rate > 0:
            dispatch_done = threading.Event()
            dispatcher, worker = self._open_loop(queue.Queue(), dispatch_done)
            bodies.append(dispatcher)
            bodies += [worker] * (config.max_concurrent_requests or config.num_users)
        else:
            limit = config.max_concurrent_requests
            slots = threading.Semaphore(limit) if 0 < limit < config.num_users else None
            bodies = [self._closed_loop_user(u, slots) for u in range(config.num_users)]
        threads = []
        for index, body in enumerate(bodies):
            thread = threading.Thread(target=self._guarded(body), name=f"kvcache-w{index}", daemon=True)
            try:
                thread.start()
            except RuntimeError as exc:  # "can't start new thread": too many users for this host's limits
                self._fail(f"started only {index} of {len(bodies)} worker threads: {exc}; lower --num-users")
                break
            threads.append(thread)
        return threads

    # -- the window ------------------------------------------------------------------------
    def interrupt(self, signal_name: str) -> None:
        """SIGINT/SIGTERM: close the window now; the run is reported as failed and cleaned up."""
        self.interrupted_by = signal_name
        self.stop.set()

    def measure(self, sync: float) -> None:
        """Runs the window [sync, sync + duration]; `sync` is perf_counter() when this rank left the start
        barrier, the moment every rank shares. Never raises for worker errors."""
        duration = self.config.duration
        interval = self.config.stats_interval
        origin = sync
        self.window_start = time.time() - (time.perf_counter() - sync)
        deadline = origin + duration
        threads = self._start_workers()
        last_sample_at, last_bytes, last_requests = origin, dict(self.metrics.bytes), 0
        next_sample = origin + interval
        while True:
            now = time.perf_counter()
            if now >= deadline or self.stop.is_set() or not any(t.is_alive() for t in threads):
                break
            failure = self.comm.poll_failure()
            if failure is not None:
                self.remote_failure = failure
                break
            if now >= next_sample:
                last_bytes, last_requests = self._sample(now - origin, now - last_sample_at, last_bytes, last_requests)
                last_sample_at, next_sample = now, now + interval
            time.sleep(min(CONTROL_TICK_S, max(0.0, min(deadline, next_sample) - now)))
        self.stop.set()
        join_deadline = time.perf_counter() + JOIN_TIMEOUT_S
        for thread in threads:
            thread.join(max(0.0, join_deadline - time.perf_counter()))
        stuck = [t.name for t in threads if t.is_alive()]
        if stuck:
            self._fail(f"{len(stuck)} worker threads did not stop within {JOIN_TIMEOUT_S:.0f} s of the window end")
        now = time.perf_counter()
        self.window_end = self.window_start + (now - origin)
        self.window_offsets = (0.0, now - origin)
        if now - last_sample_at > interval / 2:
            self._sample(now - origin, now - last_sample_at, last_bytes, last_requests)
        if self.progress:
            self.progress.done()
        if self.failure is not None:
            self.comm.report_failure(self.failure)

    def _sample(self, elapsed, span, last_bytes, last_requests):
        totals, requests, read_p95 = self.metrics.sample()
        span = max(span, 1e-9)
        point = {
            "t_s": round(elapsed, 3),
            "requests": requests,
            "requests_per_s": round((requests - last_requests) / span, 3),
            "storage_read_bytes_per_s": round((totals["storage.read"] - last_bytes["storage.read"]) / span),
            "storage_write_bytes_per_s": round((totals["storage.write"] - last_bytes["storage.write"]) / span),
            "storage_read_p95_ms": read_p95,
        }
        self.timeseries.append(point)
        if self.progress:
            self.progress.update(elapsed, self.config.duration, point)
        return totals, requests

    @property
    def failure(self) -> Optional[str]:
        if self.interrupted_by and self._failure is None:
            return f"interrupted by {self.interrupted_by}"
        return self._failure

    def close(self) -> None:
        self.pool.close()
