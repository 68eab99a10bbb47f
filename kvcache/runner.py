"""One rank's benchmark: users and workers that turn requests into tier I/O inside one measured window.

What one request does, step by step, is serve() (the README's "Request pipeline"); how requests arrive
is the user loop: closed (a user waits for its reply), open (kv-cache.py's users, who do not wait) or
Poisson arrivals (--request-rate). Requests that find every worker busy wait by QoS priority, then in
arrival order.
"""

import collections
import heapq
import itertools
import math
import queue
import random
import threading
import time
from typing import Dict, List, Optional

from kvcache import precondition, replay
from kvcache.datasize import rag_chunk_tokens
from kvcache.metrics import TIERS, Metrics
from kvcache.models import Model
from kvcache.progress import Progress
from kvcache.storage_io import BufferPool, FileIO, Interrupted, PatternSource
from kvcache.tiers import Mover, TierManager, build_tiers
from kvcache.units import MIB
from kvcache.workload import Arrivals, RagCorpus, Request, Settings, User, entry_bytes, rag_doc_tokens

CONTROL_TICK_S = 0.1
JOIN_TIMEOUT_S = 30.0
MAX_OPEN_LOOP_WORKERS = 500  # kv-cache.py serves its users with min(users, 500) workers
MAX_QUEUED_REQUESTS = 10_000  # per rank; a user whose request finds the queue full waits for room
# --decode-only's entries, written before the window as kv-cache.py does: this many per user, of this size.
DECODE_ENTRIES_PER_USER = 10
DECODE_ENTRY_TOKENS = 2048


def rank_seed(seed: int, rank: int) -> int:
    """Each rank draws its own workload and data: rank N uses seed + N (the result lists every rank's)."""
    return seed + rank


def decode_entry_key(index: int) -> str:
    """--decode-only's entry `index`: turn 0 of a user's conversation, a turn no request writes."""
    return f"u{index // DECODE_ENTRIES_PER_USER}c{index % DECODE_ENTRIES_PER_USER}t0"


def decode_rereads(generation_tokens: int, batch_size: int) -> int:
    """Whole-entry re-reads of decode: one per batch of generated tokens, at least one (0: none)."""
    return max(1, math.ceil(generation_tokens / batch_size)) if batch_size else 0


class PriorityBacklog:
    """Requests waiting for a worker: higher QoS priority first, then in arrival order."""

    def __init__(self, maxsize: int = MAX_QUEUED_REQUESTS):
        self._queue: queue.PriorityQueue = queue.PriorityQueue(maxsize)
        self._order = itertools.count()

    def put(self, request: Request, arrival: float, stop: threading.Event) -> bool:
        """Queue a request; False when the window closed while waiting for room."""
        item = (-request.priority, arrival, next(self._order), request)
        while True:
            try:
                self._queue.put(item, timeout=CONTROL_TICK_S)
                return True
            except queue.Full:
                if stop.is_set():
                    return False

    def get(self):
        """(request, arrival), or raises queue.Empty after a control tick with nothing queued."""
        _priority, arrival, _order, request = self._queue.get(timeout=CONTROL_TICK_S)
        return request, arrival


class PriorityGate:
    """At most `limit` requests served at once (closed loop with --max-concurrent-requests): a waiting request
    of a higher QoS priority goes first, then the one that arrived first, as in the open loop's queue."""

    def __init__(self, limit: int):
        self._free = limit
        self._waiting: list = []  # heap of (-priority, arrival, order, granted event)
        self._lock = threading.Lock()
        self._order = itertools.count()

    def acquire(self, request: Request, arrival: float, stop: threading.Event) -> None:
        """Wait for a slot; raises Interrupted when the window closes first."""
        with self._lock:
            if self._free and not self._waiting:
                self._free -= 1
                return
            item = (-request.priority, arrival, next(self._order), threading.Event())
            heapq.heappush(self._waiting, item)
        granted = item[3]
        while not granted.wait(CONTROL_TICK_S):
            if stop.is_set():
                with self._lock:
                    if granted.is_set():
                        self._hand_on()  # the slot came just now: pass it on
                    else:
                        self._waiting.remove(item)
                        heapq.heapify(self._waiting)
                raise Interrupted()

    def release(self) -> None:
        with self._lock:
            self._hand_on()

    def waiting(self) -> int:
        with self._lock:
            return len(self._waiting)

    def _hand_on(self) -> None:
        if self._waiting:
            heapq.heappop(self._waiting)[3].set()
        else:
            self._free += 1


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
        trace=None,
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
        self.rank_dir, self.fileio, self.storage_capacity = rank_dir, FileIO(io_engine), storage_capacity
        self.tiers = build_tiers(
            config, self.metrics, mover, rank_dir, self.fileio, storage_capacity, gpu_backend, trace
        )
        self.manager = TierManager(self.tiers, self.metrics, self.stop, promote=config.promote)
        self.decode_keys: List[str] = []  # --decode-only: the entries written before the window and still held
        self.progress = progress
        self.corpus = None
        if config.enable_rag:
            chunk = rag_chunk_tokens(config, model)
            self.corpus = RagCorpus(self.seed, config.rag_num_docs, rag_doc_tokens(config, model), chunk)
        self.settings = Settings.from_config(config, self.corpus)
        self.per_token_s = config.workload.seconds_per_token(config.generation_mode)
        self.think = config.performance_profile == "latency"
        # --max-concurrent-allocs: entries being placed (with the demotions that make room) and written at once.
        self.allocs = threading.Semaphore(config.max_concurrent_allocs) if config.max_concurrent_allocs else None
        self._admitted = 0
        self._admit_lock = threading.Lock()
        self._failure: Optional[str] = None
        self._failure_lock = threading.Lock()
        self.remote_failure = None
        self.interrupted_by: Optional[str] = None
        self.timeseries: List[dict] = []
        # What a mode (a replay, preconditioning, the I/O trace) reports for this rank: the result's `modes`.
        self.reports: Dict[str, dict] = {}
        # The pipeline step the calling thread is in (Prefill or Decode), for the I/O trace's Phase column.
        self.phase = trace.phase if trace is not None else threading.local()
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

    def _wait_for(self, semaphore: threading.Semaphore) -> None:
        while not semaphore.acquire(timeout=CONTROL_TICK_S):
            if self.stop.is_set():
                raise Interrupted()

    def _write(self, key: str, tokens: int) -> Optional[str]:
        """Write a new entry of `tokens` tokens (1/TP of the model's bytes); see TierManager.write_new."""
        nbytes = entry_bytes(tokens, self.model.bytes_per_token, self.config.tensor_parallel)
        if self.allocs is None:
            return self.manager.write_new(key, nbytes, self.pattern)
        if not self.allocs.acquire(blocking=False):
            self.metrics.count("allocation_waits")  # --max-concurrent-allocs held this write back
            self._wait_for(self.allocs)
        try:
            return self.manager.write_new(key, nbytes, self.pattern)
        finally:
            self.allocs.release()

    def serve(self, request: Request, arrival: float) -> None:
        """One request, as kv-cache.py's pipeline intends it (the README's "Request pipeline")."""
        config, manager = self.config, self.manager
        started = time.perf_counter()
        self.metrics.begin_request()
        self.phase.name = "Prefill"
        reads = not config.prefill_only  # a prefill node writes KV and never reads it back
        if not config.decode_only:  # a decode node prefills nothing: its entries were written before the window
            # 1. The shared system prompt: read on a hit; the first request to use it writes it, once.
            if request.prefix_key and not reads:
                self._write(request.prefix_key, request.prefix_tokens)  # a no-op once written
            elif request.prefix_key and manager.read(request.prefix_key) is None:
                if self._write(request.prefix_key, request.prefix_tokens) is None:
                    manager.read(request.prefix_key, count_lookup=False)  # another request wrote it first
            # 2. Multi-turn: the earlier turns of the conversation, oldest first.
            for key in request.earlier_keys if reads else ():
                manager.read(key)
            # 3. Prefill: the new context.
            self._write(request.key, request.context_tokens)
            # 4. RAG: the retrieved chunks (a chunk not yet ingested is a miss).
            for key in request.rag_keys if reads else ():
                manager.read(key)
        ttft = time.perf_counter() - arrival
        # 5. Decode: the entry, then whole re-reads per decode batch; none for very long contexts.
        self.phase.name = "Decode"
        long_context = config.long_context_tokens
        if config.decode_only:
            self._decode(self._decode_entry(request), request.generation_tokens)
            ttft = time.perf_counter() - arrival  # a decode node's first token needs its entry loaded
        elif reads and not (long_context and request.context_tokens + request.prefix_tokens >= long_context):
            if not self._decode(request.key, request.generation_tokens):
                self._write(request.key, request.context_tokens)
        # 6. Generation time.
        if self.per_token_s and self.stop.wait(request.generation_tokens * self.per_token_s):
            raise Interrupted()
        e2e = time.perf_counter() - arrival
        self.metrics.record_request(
            request.qos,
            config.workload.qos(request.qos).p95_target_ms,
            started - arrival,
            ttft,
            e2e,
            0 if config.decode_only else request.context_tokens + request.prefix_tokens,
            request.generation_tokens,
        )

    def _decode_entry(self, request: Request) -> str:
        """--decode-only: the written entry a request reads, drawn from the seed and the request alone."""
        draw = random.Random(f"kvcache:{self.seed}:decode:{request.key}")
        return self.decode_keys[draw.randrange(len(self.decode_keys))]

    def _decode(self, key: str, generation_tokens: int) -> bool:
        """Read an entry, then once more per decode batch; False on a miss (nothing read)."""
        if self.manager.read(key) is None:
            return False
        for _batch in range(decode_rereads(generation_tokens, self.config.decode_batch_size)):
            self.manager.read(key, count_lookup=False)
        return True

    def _user(self, user_id: int) -> User:
        return User(self.seed, user_id, self.settings)

    def _closed_loop_user(self, user_id: int, slots: Optional[PriorityGate]):
        user = self._user(user_id)

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
                slots.acquire(request, arrival, self.stop)
                try:
                    self.serve(request, arrival)
                finally:
                    slots.release()

        return body

    def _worker(self, backlog: PriorityBacklog, arrivals_done: threading.Event, after=None):
        def body():
            while not self.stop.is_set():
                try:
                    request, arrival = backlog.get()
                except queue.Empty:
                    if arrivals_done.is_set():
                        return
                    continue
                try:
                    self.serve(request, arrival)
                finally:
                    if after is not None:
                        after(request)

        return body

    def _open_loop_users(self, backlog: PriorityBacklog, arrivals_done: threading.Event):
        """kv-cache.py's users: each asks again after its think time, whether or not its reply came."""
        remaining = [self.config.num_users]
        lock = threading.Lock()

        def user_body(user_id):
            def body():
                try:
                    for request in self._user(user_id).requests():
                        if self.stop.wait(request.think_seconds if self.think else 0):
                            return
                        if not self._admit() or not backlog.put(request, time.perf_counter(), self.stop):
                            return
                finally:
                    with lock:
                        remaining[0] -= 1
                        if not remaining[0]:
                            arrivals_done.set()

            return body

        return [user_body(u) for u in range(self.config.num_users)]

    def _poisson_arrivals(self):
        """(offset, request) of --request-rate: Poisson arrivals, each of a random user's next request."""
        streams = [self._user(u).requests() for u in range(self.config.num_users)]
        for at, user_id in Arrivals(self.seed, self.config.request_rate, len(streams)):
            request = next(streams[user_id], None)  # a user's stream never ends; None only to satisfy pylint
            if request is None:
                return
            yield at, request

    def _timed_arrivals(self, backlog: PriorityBacklog, arrivals_done: threading.Event, arrivals):
        """A dispatcher that queues each (offset in seconds from the window start, request) of `arrivals` at
        its time (None: at once, paced only by the backlog's room), and the hand-on for the workers.

        A user (or replayed conversation: Request.user) has one request in flight, as a real one would: a
        turn that arrives while the previous one is served waits, in order (its wait counts in queue_wait),
        instead of missing its context."""
        users_lock = threading.Condition()
        busy = set()
        waiting = collections.defaultdict(collections.deque)
        # Requests handed on and not yet served, queued or waiting for their user. The dispatcher keeps them
        # below the backlog's size, so memory stays bounded however fast a replay reads, and a worker's
        # hand-on never finds the backlog full.
        pending = [0]

        def room() -> bool:
            with users_lock:
                while pending[0] >= MAX_QUEUED_REQUESTS:
                    if self.stop.is_set():
                        return False
                    users_lock.wait(CONTROL_TICK_S)
                pending[0] += 1
                return True

        def dispatcher():
            try:
                origin = time.perf_counter()
                for at, request in arrivals:
                    delay = 0.0 if at is None else max(0.0, origin + at - time.perf_counter())
                    if self.stop.wait(delay) or not room():
                        return
                    if not self._admit():
                        return
                    item = (request, time.perf_counter())
                    with users_lock:
                        if request.user in busy:
                            waiting[request.user].append(item)
                            continue
                        busy.add(request.user)
                    if not backlog.put(*item, self.stop):
                        return
            finally:
                arrivals_done.set()

        def hand_on(request):  # this user's next waiting turn, in order, goes to the workers
            with users_lock:
                pending[0] -= 1
                users_lock.notify()
                queued = waiting.get(request.user)
                if not queued:
                    busy.discard(request.user)
                    waiting.pop(request.user, None)
                    return
                item = queued.popleft()
            backlog.put(*item, self.stop)

        return [dispatcher], hand_on

    def _start_workers(self) -> List[threading.Thread]:
        config = self.config
        bodies = []
        if self.corpus is not None:
            bodies.append(self._ingest)
        if replay.kind(config) is not None:
            backlog, arrivals_done = PriorityBacklog(), threading.Event()
            report = self.reports.setdefault(replay.kind(config), {})
            arrivals = replay.arrivals(config, self.comm.rank, self.comm.size, self.settings, report)
            sources, after = self._timed_arrivals(backlog, arrivals_done, arrivals)
            workers = config.max_concurrent_requests or min(config.num_users, MAX_OPEN_LOOP_WORKERS)
            bodies += sources + [self._worker(backlog, arrivals_done, after)] * workers
        elif config.request_rate > 0 or config.user_loop == "open":
            backlog, arrivals_done = PriorityBacklog(), threading.Event()
            if config.request_rate > 0:
                sources, after = self._timed_arrivals(backlog, arrivals_done, self._poisson_arrivals())
                workers = config.max_concurrent_requests or config.num_users
            else:
                sources, after = self._open_loop_users(backlog, arrivals_done), None
                workers = config.max_concurrent_requests or min(config.num_users, MAX_OPEN_LOOP_WORKERS)
            bodies += sources + [self._worker(backlog, arrivals_done, after)] * workers
        else:
            limit = config.max_concurrent_requests
            slots = PriorityGate(limit) if 0 < limit < config.num_users else None
            bodies += [self._closed_loop_user(u, slots) for u in range(config.num_users)]
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

    def _ingest(self) -> None:
        """RAG ingest: every document's chunks are written, in order, as the window begins."""
        for doc in range(len(self.corpus.doc_tokens)):
            for key, tokens in self.corpus.chunks(doc):
                if self.stop.is_set():
                    return
                self._write(key, tokens)
                self.metrics.count("rag_chunks_ingested")

    # -- before the window ------------------------------------------------------------------
    def prepare(self, say) -> None:
        """The work before the start barrier: preconditioning, then --decode-only's entries; `say` prints a
        line of progress. Never raises: an error (or a stop) fails the rank, and the others learn it."""
        try:
            if self.config.precondition:
                report = self.reports.setdefault("precondition", {})
                precondition.fill(
                    self.config, self.rank_dir, self.fileio, self.pool, self.storage_capacity, self.stop,
                    self._remote_failed, report, say,
                )  # fmt: skip
            if self.config.decode_only:
                self._write_decode_entries(say)
        except Interrupted:
            pass  # a signal, or another rank failed: said by failure / remote_failure
        except Exception as exc:  # noqa: BLE001 - an error before the window fails the rank, with its message
            self._fail(f"before the window: {type(exc).__name__}: {exc}")
        if self.failure is not None:
            self.comm.report_failure(self.failure)

    def _remote_failed(self) -> bool:
        failure = self.comm.poll_failure()
        if failure is not None:
            self.remote_failure = failure
        return failure is not None

    def _write_decode_entries(self, say) -> None:
        """--decode-only: users x 10 entries of 2048 tokens through the normal placement, as kv-cache.py
        writes them; the window's metrics then start afresh, so none of this is counted in it."""
        count = self.config.num_users * DECODE_ENTRIES_PER_USER
        nbytes = entry_bytes(DECODE_ENTRY_TOKENS, self.model.bytes_per_token, self.config.tensor_parallel)
        say(f"decode-only: writing {count} entries of {DECODE_ENTRY_TOKENS} tokens before the window")
        started = time.perf_counter()
        self.phase.name = "Prefill"  # what writing them is, for the I/O trace
        keys = [decode_entry_key(index) for index in range(count)]
        for key in keys:
            if self.stop.is_set():
                raise Interrupted()
            self.manager.write_new(key, nbytes, self.pattern)
        # Later entries may have evicted earlier ones from a small storage tier: read only those held.
        self.decode_keys = [key for key in keys if key in self.manager.entries]
        elapsed = time.perf_counter() - started
        self.reports["decode_only"] = {
            "entries_written": count,
            "entries_held": len(self.decode_keys),
            "bytes_written": sum(self.metrics.bytes[f"{tier}.write"] for tier in TIERS),
            "elapsed_s": round(elapsed, 3),
        }
        if not self.decode_keys:
            raise RuntimeError("no tier holds any of the entries written for --decode-only")
        self._restart_metrics()

    def _restart_metrics(self) -> None:
        """A fresh Metrics for the window, for the manager and every tier; the entries the tiers hold stay
        counted as held (and as the peak so far)."""
        fresh = Metrics()
        for tier in TIERS:
            held = self.metrics.counters[f"entries.{tier}"]
            fresh.counters[f"entries.{tier}"] = fresh.counters[f"peak_entries.{tier}"] = held
        self.metrics = self.manager.metrics = fresh
        for tier in self.tiers:
            tier.metrics = fresh

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
