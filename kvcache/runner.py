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
from typing import Dict, List, Optional, Tuple

from kvcache import autoscaler, live_view, precondition, replay
from kvcache.datasize import rag_chunk_tokens
from kvcache.metrics import SERIES, TIERS, Metrics, decode, merge, percentile_block
from kvcache.models import Model
from kvcache.storage_io import BufferPool, FileIO, Interrupted, PatternSource
from kvcache.tiers import Mover, TierManager, build_tiers
from kvcache.units import mib_bytes
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


def autoscaler_search(config, ranks: int):
    """The autoscaler's search for this run (rank 0 runs it)."""
    return autoscaler.Autoscaler.for_config(config, ranks, autoscaler.qos_targets_ms(config))


def pool_step(index: int, users_per_rank: int, ranks: List[dict]) -> "autoscaler.StepMeasure":
    """The fleet's step from every rank's (RankRun.step_report): bytes and requests summed, bandwidth over the
    span from the first rank's start to the last one's end (IOR style), each class's p95 from pooled histograms,
    and the first failed rank's failure."""
    t_start, t_end = min(r["t_start_s"] for r in ranks), max(r["t_end_s"] for r in ranks)
    span = max(t_end - t_start, 1e-9)
    classes = sorted({name for r in ranks for name in r["qos_e2e"]})
    p95 = {
        name: percentile_block(merge(decode(r["qos_e2e"][name]) for r in ranks if name in r["qos_e2e"]))["p95"]
        for name in classes
    }
    failed = first_failure(ranks)
    return autoscaler.StepMeasure(
        step=index,
        t_start_s=round(t_start, 3),
        t_end_s=round(t_end, 3),
        users_per_rank=users_per_rank,
        ranks=len(ranks),
        requests=sum(r["requests"] for r in ranks),
        read_bytes_per_s=round(sum(r["read_bytes"] for r in ranks) / span, 3),
        write_bytes_per_s=round(sum(r["write_bytes"] for r in ranks) / span, 3),
        p95_ms=p95,
        failed=None if failed is None else f"rank {failed[0]}: {failed[1]}",
    )


def first_failure(ranks: List[dict]) -> Optional[Tuple[int, str]]:
    """(rank, error) of the first rank whose step report carries a failure, or None."""
    return next(((r["rank"], r["failed"]) for r in ranks if r["failed"]), None)


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
        progress=None,
        trace=None,
    ):
        self.config = config
        self.model = model
        self.comm = comm
        self.seed = rank_seed(config.seed, comm.rank)
        self.metrics = Metrics()
        self.stop = threading.Event()
        self.pool = BufferPool(config.io_depth, mib_bytes(config.io_chunk_mib), self.seed.to_bytes(8, "little"))
        self.pattern = PatternSource(self.pool)
        mover = Mover(self.pool, self.stop)
        self.rank_dir, self.fileio, self.storage_capacity = rank_dir, FileIO(io_engine), storage_capacity
        self.tiers = build_tiers(
            config, self.metrics, mover, rank_dir, self.fileio, storage_capacity, gpu_backend, trace
        )
        self.manager = TierManager(self.tiers, self.metrics, self.stop, promote=config.promote)
        self.decode_keys: List[str] = []  # --decode-only: the entries written before the window and still held
        self.progress = progress  # kvcache.progress.for_rank: what this rank shows while it runs, or None
        # Set before the window when rank 0 shows the fleet: every rank then sends it its samples.
        self.fleet_progress = False
        self._fleet_sent_at = -live_view.REFRESH_S
        # The host's device counters (kvcache.device_sampler), read at each sample: on the first rank of a host only.
        self.device = None
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
        self.window_cpu_s: Optional[float] = None  # the process's CPU (user + sys, every thread) in the window
        self.window_offsets = (0.0, 0.0)  # seconds from the shared start barrier: comparable across hosts
        # The user pool: users below active_users make requests, the others park (autoscaling changes the count).
        self.autoscaling = bool(config.enable_autoscaling)
        self.active_users = autoscaler.start_users(config) if self.autoscaling else config.num_users
        self._users_changed = threading.Condition()
        self._threads: List[threading.Thread] = []
        self._user_body = None  # user id -> thread body, to start users while the window runs
        self._worker_body = None  # the open loop's worker, to add workers as users are added
        self._users_started = self._workers_started = 0
        self.users_timeline: List[list] = []  # [seconds from the window start, users] at each change
        self.search = autoscaler_search(config, comm.size) if self.autoscaling and comm.rank == 0 else None
        self.autoscaling_outcome: Optional[dict] = None  # rank 0: the search's result block

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
            # After a signal an error is its consequence (the signal watch removes the files under the run):
            # the rank's failure stays "interrupted by ...".
            if self._failure is None and self.interrupted_by is None:
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
                if not self._active(user_id) or not self._admit():
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
                if self.stop.is_set():  # the window closed while this worker waited: nothing more is served
                    if after is not None:
                        after(request)
                    return
                try:
                    self.serve(request, arrival)
                finally:
                    if after is not None:
                        after(request)

        return body

    def _active(self, user_id: int) -> bool:
        """Whether user `user_id` may make its next request: at once while it is active; a parked one waits
        until it is active again. False when the window closes first."""
        if user_id < self.active_users:
            return True
        with self._users_changed:
            while user_id >= self.active_users:
                if self.stop.is_set():
                    return False
                self._users_changed.wait(CONTROL_TICK_S)
        return True

    def _open_loop_users(self, backlog: PriorityBacklog, arrivals_done: threading.Event):
        """kv-cache.py's users: each asks again after its think time, whether or not its reply came.
        Returns the body of user `user_id`'s thread; the arrivals are done when every started user has ended."""
        remaining = [0]
        lock = threading.Lock()

        def user_body(user_id):
            with lock:
                remaining[0] += 1  # counted before its thread starts, so the arrivals cannot seem done early

            def body():
                try:
                    for request in self._user(user_id).requests():
                        if self.stop.wait(request.think_seconds if self.think else 0):
                            return
                        if not self._active(user_id) or not self._admit():
                            return
                        if not backlog.put(request, time.perf_counter(), self.stop):
                            return
                finally:
                    with lock:
                        remaining[0] -= 1
                        if not remaining[0]:
                            arrivals_done.set()

            return body

        return user_body

    def _open_loop_workers(self, users: int) -> int:
        return self.config.max_concurrent_requests or min(users, MAX_OPEN_LOOP_WORKERS)

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
                # Once the window closed, `request` may have been cut short before it wrote its turn: the next
                # one would miss that context, so nothing is handed on.
                if not queued or self.stop.is_set():
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
            workers = self._open_loop_workers(config.num_users)
            bodies += sources + [self._worker(backlog, arrivals_done, after)] * workers
        elif config.request_rate > 0:
            backlog, arrivals_done = PriorityBacklog(), threading.Event()
            sources, after = self._timed_arrivals(backlog, arrivals_done, self._poisson_arrivals())
            workers = config.max_concurrent_requests or config.num_users
            bodies += sources + [self._worker(backlog, arrivals_done, after)] * workers
        elif config.user_loop == "open":
            backlog, arrivals_done = PriorityBacklog(), threading.Event()
            self._user_body = self._open_loop_users(backlog, arrivals_done)
            self._worker_body = self._worker(backlog, arrivals_done)
            users, workers = self.active_users, self._open_loop_workers(self.active_users)
            self._users_started, self._workers_started = users, workers
            bodies += [self._user_body(u) for u in range(users)] + [self._worker_body] * workers
        else:
            limit = config.max_concurrent_requests
            most = config.autoscaler_max_users if self.autoscaling else config.num_users  # the users that may run
            slots = PriorityGate(limit) if 0 < limit < most else None
            self._user_body = lambda user_id: self._closed_loop_user(user_id, slots)
            self._users_started = self.active_users
            bodies += [self._user_body(u) for u in range(self.active_users)]
        self._spawn(bodies, "--num-users")

    def _spawn(self, bodies, lower: str) -> None:
        """Start a thread for each body (after those already started); a host that refuses one fails the rank."""
        for count, body in enumerate(bodies):
            name = f"kvcache-w{len(self._threads)}"
            thread = threading.Thread(target=self._guarded(body), name=name, daemon=True)
            try:
                thread.start()
            except RuntimeError as exc:  # "can't start new thread": too many users for this host's limits
                self._fail(f"started only {count} of {len(bodies)} worker threads: {exc}; lower {lower}")
                return
            self._threads.append(thread)

    def set_users(self, count: int) -> None:
        """The autoscaler's count: users below it are active, the others park once their request in flight
        is done. Users never started start now, and the open loop's workers grow with them (never shrink)."""
        with self._users_changed:
            self.active_users = count
            self._users_changed.notify_all()
        bodies = [self._user_body(u) for u in range(self._users_started, count)]
        self._users_started = max(self._users_started, count)
        if self._worker_body is not None:
            workers = self._open_loop_workers(count)
            bodies += [self._worker_body] * max(0, workers - self._workers_started)
            self._workers_started = max(self._workers_started, workers)
        self._spawn(bodies, "--autoscaler-max-users")

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
        with self._failure_lock:
            if self.interrupted_by is None:
                self.interrupted_by = signal_name
        self.stop.set()

    def wait_for_workers(self, timeout: float) -> None:
        """Give the worker threads up to `timeout` seconds to stop (after interrupt()); callable from any thread."""
        deadline = time.perf_counter() + timeout
        for thread in list(self._threads):
            thread.join(max(0.0, deadline - time.perf_counter()))

    def measure(self, sync: float) -> None:
        """Runs the window [sync, sync + duration]; `sync` is perf_counter() when this rank left the start
        barrier, the moment every rank shares. Never raises for worker errors. With autoscaling the window is
        the autoscaler's steps (stepped_window)."""
        interval = self.config.stats_interval
        origin = sync
        self.window_start = time.time() - (time.perf_counter() - sync)
        cpu_start = time.process_time()
        self.metrics.step_snapshot()  # the first step counts from the window start
        if self.device:
            self.device.start(origin)
        self._start_workers()
        self._last_sample = (origin, dict(self.metrics.bytes), 0)  # (when, bytes, requests) of the last sample
        self._next_sample = origin + interval
        if self.autoscaling:
            self.stepped_window(origin)
        else:
            self._timed_window(origin)
        self.stop.set()
        self.wait_for_workers(JOIN_TIMEOUT_S)
        stuck = [t.name for t in self._threads if t.is_alive()]
        if stuck:
            self._fail(f"{len(stuck)} worker threads did not stop within {JOIN_TIMEOUT_S:.0f} s of the window end")
        now = time.perf_counter()
        self.window_cpu_s = round(time.process_time() - cpu_start, 6)
        self.window_end = self.window_start + (now - origin)
        self.window_offsets = (0.0, now - origin)
        self._remove_cut_short()
        if now - self._last_sample[0] > interval / 2:
            self._sample(now, origin)
        if self.device:
            self.device.finish(now)
        if self.progress:
            self.progress.done()
        if self.failure is not None:
            self.comm.report_failure(self.failure)

    def _timed_window(self, origin: float) -> None:
        """--duration from the start, left early on a failure here or on another rank, or when no thread runs."""
        deadline = origin + self.config.duration
        while True:
            now = time.perf_counter()
            if now >= deadline or self.stop.is_set() or not any(t.is_alive() for t in self._threads):
                return
            failure = self.comm.poll_failure()
            if failure is not None:
                self.remote_failure = failure
                return
            self._tick(now, origin, deadline)

    def stepped_window(self, origin: float) -> None:
        """The autoscaler's window: floor(--duration / --autoscaler-step-s) steps from the shared start. At each
        step's end every rank sends rank 0 its step (step_report), rank 0 decides from the pooled step and
        broadcasts the Decision, and every rank applies its count: the same collectives, in the same order, on
        every rank. A failure or a signal here does not leave the window: the step carries it to the next
        exchange, whose Decision then stops every rank together. The window ends after a stopping Decision or
        the last step."""
        step_s = self.config.autoscaler_step_s
        steps = math.floor(self.config.duration / step_s + 1e-9)  # 1e-9: 3 / 1.5 is 2 steps, whatever rounding
        self.users_timeline.append([0.0, self.active_users])
        step_start = 0.0
        for index in range(steps):
            step_end = origin + (index + 1) * step_s
            now = time.perf_counter()
            while now < step_end:
                self._tick(now, origin, step_end)
                now = time.perf_counter()
            self._sample_if_due(now, origin)  # a sample due now belongs to this step's users, not the next's
            decision, failure = self._exchange(self.step_report(step_start, now - origin), index)
            step_start = now - origin
            if failure is not None and failure[0] != self.comm.rank:
                self.remote_failure = failure
            if decision.stop or index == steps - 1:
                break
            if decision.users_per_rank != self.active_users:
                self.set_users(decision.users_per_rank)
                self.users_timeline.append([round(time.perf_counter() - origin, 3), decision.users_per_rank])
        if self.search is not None:
            self.autoscaling_outcome = self.search.outcome("window")  # a Decision that stopped keeps its reason

    def step_report(self, t_start_s: float, t_end_s: float) -> dict:
        """This rank's step for rank 0: its span, storage bytes, completed requests, per-class end-to-end
        histograms (encoded) and its failure."""
        step = self.metrics.step_snapshot()
        return {
            "rank": self.comm.rank,
            "t_start_s": t_start_s,
            "t_end_s": t_end_s,
            "read_bytes": step["bytes"]["storage.read"],
            "write_bytes": step["bytes"]["storage.write"],
            "requests": step["requests"],
            "qos_e2e": step["qos_e2e"],
            "failed": self.failure,
        }

    def _exchange(self, report: dict, index: int):
        """The step's collectives: gather the reports on rank 0, which decides; every rank gets (the Decision,
        the first failed rank's (rank, error) or None)."""
        reports = self.comm.gather(report)
        answer = None
        if self.comm.rank == 0:
            answer = (self.search.decide(pool_step(index, self.active_users, reports)), first_failure(reports))
        return self.comm.bcast(answer)

    def _tick(self, now: float, origin: float, until: float) -> None:
        """A time-series sample when one is due, the progress shown, then sleep for a control tick at most (not
        past `until`)."""
        self._sample_if_due(now, origin)
        if self.progress:
            if self.fleet_progress:
                for rank, point in self.comm.poll_progress():
                    self.progress.fleet_point(rank, point)
            self.progress.tick(now - origin)
        time.sleep(min(CONTROL_TICK_S, max(0.0, min(until, self._next_sample) - now)))

    def _sample_if_due(self, now: float, origin: float) -> None:
        if now < self._next_sample:
            return
        self._sample(now, origin)
        if not self.autoscaling:
            self._next_sample = now + self.config.stats_interval
            return
        # Autoscaling: samples on a grid from the start, as the steps are, so that the sample due at a step's end
        # (taken before its exchange) shows that step's users, not the next step's.
        while self._next_sample <= now:
            self._next_sample += self.config.stats_interval

    def _sample(self, now: float, origin: float) -> None:
        last_at, last_bytes, last_requests = self._last_sample
        totals, requests, p95 = self.metrics.sample()
        span = max(now - last_at, 1e-9)
        elapsed = now - origin
        point = {
            "t_s": round(elapsed, 3),
            "requests": requests,
            "requests_per_s": round((requests - last_requests) / span, 3),
        }
        for name, bandwidth_field, p95_field in SERIES:
            point[bandwidth_field] = round((totals[name] - last_bytes[name]) / span)
            point[p95_field] = p95[name]
        if self.autoscaling:
            point["users"] = self.active_users
        self.timeseries.append(point)
        if self.device:
            self.device.sample(now, elapsed)
        self._last_sample = (now, totals, requests)
        if self.progress:
            self.progress.update(elapsed, point)
        # As often as the view redraws, not every sample: --stats-interval may be far shorter.
        if self.fleet_progress and self.comm.rank != 0 and elapsed - self._fleet_sent_at >= live_view.REFRESH_S:
            self.comm.send_progress(point)
            self._fleet_sent_at = elapsed

    @property
    def failure(self) -> Optional[str]:
        if self.interrupted_by and self._failure is None:
            return f"interrupted by {self.interrupted_by}"
        return self._failure

    def _remove_cut_short(self) -> None:
        for tier in self.tiers:
            tier.remove_cut_short()

    def close(self) -> None:
        if self.progress:
            self.progress.done()  # the terminal back to normal, whatever ended the run
        self._remove_cut_short()  # a run stopped outside its window (a signal in setup) leaves them too
        self.pool.close()
