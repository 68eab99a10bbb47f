"""`kvcache run`: validation, then the collective protocol every rank follows (one rank without MPI).

setup (run directory, I/O engine probe) -> barrier -> window -> gather on rank 0 -> result on disk
-> every rank cleans its namespace -> exit code agreed by all ranks.
"""

import logging
import math
import os
import shutil
import signal
import sys
import threading
import time
import traceback
from dataclasses import dataclass
from typing import List, Optional, Tuple

from kvcache import autoscaler, export, host_audit, io_trace, latency_tracing, live_view, precondition, replay
from kvcache.baseline_result import baseline_mismatches, load_baseline
from kvcache.break_even import break_even_block
from kvcache.cachedir import LIVE, UNCHECKED, RunDirectory, other_run_warnings, other_runs, validate_cache_dir
from kvcache.datasize import AUTO_STORAGE_SHARE, check_parallelism, largest_entry_bytes
from kvcache.device_counters import find_source
from kvcache.device_sampler import DeviceSampler
from kvcache.environment import describe_environment, mount_info
from kvcache.errors import UsageError
from kvcache.host_probe import available_memory_bytes
from kvcache.launcher import describe_launcher
from kvcache.metrics import Metrics
from kvcache.models import Model, Registry
from kvcache.mpi import open_comm
from kvcache.output import check_output_path, write_json_atomically
from kvcache.progress import debug_prefix, for_rank, setup_line, shows
from kvcache.result import build_result
from kvcache.runner import RankRun, autoscaler_search, rank_seed
from kvcache.signal_watch import WATCHED, SignalWatch
from kvcache.storage_io import direct_io_supported
from kvcache.summary import format_summary
from kvcache.tiers import choose_gpu_backend
from kvcache.units import GIB, mib_bytes

MEMORY_FILESYSTEMS = ("tmpfs", "ramfs")


# How long the signal watch lets the workers finish their I/O before it removes the files under them: well inside
# the second mpirun leaves between SIGTERM and SIGKILL.
WORKERS_STOP_S = 0.4
XLSX_OUTPUT = "--xlsx-output"  # kv-cache.py's flag for the workbook beside the result


@dataclass(frozen=True)
class RankPlan:
    """What the checks before the run decided for this rank (the same answers the run then relies on)."""

    model: Model
    gpu_backend: str
    cache_dir: str
    storage_capacity: int  # bytes of the storage tier for this rank
    first_rank_on_host: bool  # the rank that looks at the cache dir's other runs for its host
    baseline: Optional[dict] = None  # --baseline: this host's `kvcache baseline` JSON, checked


def validate_run(config, models) -> Tuple[Model, str]:
    """Checks whose answer is the same on every rank (the options themselves). Returns (model, GPU backend)."""
    model = Registry(models).get(config.model)
    check_parallelism(config)
    replay.check(config)
    io_trace.check(config)
    precondition.check(config)
    autoscaler.check(config)
    live_view.check(config)
    if config.prefill_only and config.decode_only:
        raise UsageError(
            "--prefill-only/--decode-only",
            "a node either prefills (writes, never reads) or decodes (reads entries written before the window): "
            "give one of them",
        )
    if config.decode_only and config.enable_rag:
        raise UsageError(
            "--decode-only",
            "--enable-rag writes document chunks during the window, and a decode-only window writes nothing: "
            "give one of them",
        )
    if config.request_rate > 0 and config.user_loop == "open":
        raise UsageError(
            "--user-loop",
            "open users make their own arrivals (each after its think time), and --request-rate makes Poisson "
            "arrivals instead: give one of them",
        )
    gpu_backend = choose_gpu_backend(config.gpu_backend) if config.gpu_mem_gb > 0 else "simulated"
    return model, gpu_backend


def validate_host(config, rank: int, ranks_on_host: int) -> str:
    """Checks of this host (its cache dir, memory and disk) and, on rank 0, of --output. Returns the cache dir."""
    cache_dir = validate_cache_dir(config.cache_dir)
    latency_tracing.check(config, cache_dir)
    if config.output is not None and rank == 0:  # only rank 0 writes the result
        check_output_path(config.output)
    if config.xlsx_output is not None and rank == 0:
        export.check_target(XLSX_OUTPUT, config.xlsx_output)
        export.xlsxwriter_module(XLSX_OUTPUT)
    available = available_memory_bytes()
    buffers = config.io_depth * mib_bytes(config.io_chunk_mib)
    # An I/O-trace run accounts the CPU tier's entries without holding their bytes.
    cpu_tier = 0 if config.io_trace_log is not None else config.cpu_mem_gb * GIB
    needed = (cpu_tier + buffers) * ranks_on_host
    if available is not None and needed > available:
        raise UsageError(
            "--cpu-mem-gb/--io-depth/--io-chunk-mib",
            f"{ranks_on_host} rank(s) on this host need {needed / GIB:.1f} GiB (CPU tier "
            f"{config.cpu_mem_gb:g} GiB + {config.io_depth} x {config.io_chunk_mib:g} MiB I/O buffers each), "
            f"more than its available memory ({available / GIB:.1f} GiB); the CPU tier holds real bytes",
        )
    return cache_dir


def storage_capacity(config, model, cache_dir: str, ranks_on_host: int) -> int:
    """The storage tier's bytes per rank: --storage-capacity-gb, or a share of the free space. Refused
    (before anything is created) when the free space cannot give it, or when it cannot hold the largest
    entry the workload writes: such a run would drop entries and measure less than it was asked to."""
    usage = shutil.disk_usage(cache_dir)
    free = usage.free
    sized = usage.total > 0  # ramfs reports no size at all: its free space is unknown, not zero
    largest = largest_entry_bytes(config, model)
    needed = f"the largest entry this workload writes ({_bytes(largest)}, {model.name})"
    if config.storage_capacity_gb > 0:
        capacity = int(config.storage_capacity_gb * GIB)
        if sized and capacity * ranks_on_host > free:
            raise UsageError(
                "--storage-capacity-gb",
                f"{ranks_on_host} rank(s) x {config.storage_capacity_gb:g} GiB is more than the "
                f"{free / GIB:.1f} GiB free under {cache_dir}",
            )
        if capacity < largest:
            raise UsageError(
                "--storage-capacity-gb",
                f"{config.storage_capacity_gb:g} GiB ({_bytes(capacity)}) per rank cannot hold {needed}; "
                f"give at least {math.ceil(largest / GIB * 1000) / 1000:g} GiB",
            )
        return capacity
    if not sized:
        raise UsageError(
            "--storage-capacity-gb",
            f"the filesystem under {cache_dir} reports no size (ramfs?), so no share of its free space can be "
            "taken: give the storage tier's size per rank",
        )
    capacity = int(free * AUTO_STORAGE_SHARE / max(1, ranks_on_host))
    if capacity < largest:
        raise UsageError(
            "--cache-dir",
            f"the free space under {cache_dir} ({_bytes(free)}; a run uses {AUTO_STORAGE_SHARE:.0%} of it, "
            f"{_bytes(capacity)} for each of {ranks_on_host} rank(s)) cannot hold {needed}; "
            "free some space, use larger storage or a smaller model",
        )
    return capacity


def _bytes(nbytes: int) -> str:
    return f"{nbytes:,} bytes = {nbytes / GIB:.3f} GiB"


def _new_run_id() -> str:
    return time.strftime("%Y%m%d-%H%M%S") + "-" + os.urandom(3).hex()


def plan_rank(config, models, comm, checked: Optional[Tuple[Model, str]] = None) -> Optional[RankPlan]:
    """The checks before a run, on every rank together (creates nothing). Returns this rank's plan; when any rank
    refuses, rank 0 raises the UsageError naming every rank's problem and the others return None (exit 2).
    `checked`: what validate_run already returned for this config."""
    model, gpu_backend = checked or validate_run(config, models)
    hosts = comm.bcast(comm.gather(comm.host))
    ranks_on_host = hosts.count(comm.host)
    plan = None
    problem = None
    try:
        cache_dir = validate_host(config, comm.rank, ranks_on_host)
        io_trace.check_rank(config, comm.rank, comm.size)
        plan = RankPlan(
            model=model,
            gpu_backend=gpu_backend,
            cache_dir=cache_dir,
            storage_capacity=storage_capacity(config, model, cache_dir, ranks_on_host),
            first_rank_on_host=hosts.index(comm.host) == comm.rank,
            baseline=load_baseline(config.baseline) if config.baseline else None,
        )
    except UsageError as exc:
        problem = str(exc) if comm.size == 1 else f"rank {comm.rank} on {comm.host}: {exc}"
    # Every rank learns every rank's verdict, so all exit 2 together and nothing is created.
    problems = comm.bcast([p for p in (comm.gather(problem) or []) if p])
    if problems:
        if comm.rank == 0:
            raise UsageError(None, "; ".join(problems))
        return None
    return plan


def run_benchmark(config, models, stdout=None, stderr=None, comm=None) -> int:
    """One run on every rank. `comm`: a communicator the caller opened and keeps for later runs (the trials of
    an MLPerf run); None opens one for this run."""
    stdout = stdout or sys.stdout
    stderr = stderr or sys.stderr
    checked = None
    if comm is None:
        checked = validate_run(config, models)  # the option checks, before MPI is even initialized
        comm = open_comm(config.mpi)
    try:
        plan = plan_rank(config, models, comm, checked)
        if plan is None:
            return 2
        return RankLifecycle(config, plan, comm, stdout, stderr).run()
    except UsageError:
        raise
    except Exception:
        if comm.size > 1:
            # An unexpected error on one rank would leave the others waiting in a collective forever.
            traceback.print_exc(file=stderr)
            stderr.flush()
            comm.abort(1)
        raise


class RankLifecycle:
    """One rank's run after the checks: setup, measure (the shared window), gather (the result on rank 0).

    A setup error does not skip the collectives: the rank still meets the others at the barrier and the
    gather, so that every rank learns the run failed, and its run directory is removed in the end.
    """

    def __init__(self, config, plan: RankPlan, comm, stdout, stderr):
        self.config, self.plan, self.comm = config, plan, comm
        self.stdout, self.stderr = stdout, stderr
        self.run_dir = RunDirectory(plan.cache_dir, comm.bcast(_new_run_id() if comm.rank == 0 else None), comm.rank)
        self.warnings: List[str] = []
        self.rank_run: Optional[RankRun] = None
        self.trace: Optional[io_trace.TraceWriter] = None
        self.setup_error: Optional[str] = None
        self.io_engine = config.io_engine
        self.other_runs_seen: list = []
        self.interrupted = threading.Event()
        self.signal_name: Optional[str] = None  # the first SIGINT/SIGTERM
        self.audit_start: Optional[dict] = None  # the host's settings at the start (first rank on a host)
        self.tracer: Optional[latency_tracing.LatencyTracer] = None  # --enable-latency-tracing, first rank on a host

    def run(self) -> int:
        previous = {s: signal.signal(s, self._on_signal) for s in WATCHED}
        try:
            with SignalWatch(self._clean_up_at_once):
                self.setup()
                broadcast_start, sync = self.measure()
                status = self.gather(broadcast_start, sync)
        finally:
            if self.trace is not None:
                self.trace.close()  # a no-op after measure(); closes a trace whose setup failed later
            if self.rank_run is not None:
                self.rank_run.close()
            if self.tracer is not None:
                self.tracer.stop()  # a run that failed before its window's end: bpftrace does not outlive it
            if self.config.keep_cache:
                if self.comm.rank == 0 and shows(self.config.log_level, logging.INFO):
                    self.stderr.write(f"kvcache: cache files kept in {self.run_dir.run_dir}\n")
            else:
                self.run_dir.remove()
            for signum, handler in previous.items():
                signal.signal(signum, handler)
        self.comm.finish()
        return status

    def _on_signal(self, signum, _frame):
        name = signal.Signals(signum).name
        self.signal_name = self.signal_name or name
        self.interrupted.set()
        if self.rank_run is not None:
            self.rank_run.interrupt(name)

    def _clean_up_at_once(self, signum: int) -> None:
        """The signal watch thread's part: stop the workers and remove this rank's files now. The main thread may
        be blocked in MPI on a peer that died, and mpirun follows its SIGTERM with SIGKILL a second later."""
        self._on_signal(signum, None)
        if self.rank_run is not None:
            self.rank_run.wait_for_workers(WORKERS_STOP_S)
        if not self.config.keep_cache:
            self.run_dir.remove()

    def _warn(self, line: str) -> None:
        self.warnings.append(line)  # the result keeps it whatever --log-level prints
        if shows(self.config.log_level, logging.WARNING):
            self.stderr.write(f"kvcache: warning: rank {self.comm.rank}: {line}\n")

    # -- setup: the run directory, what the cache dir is, the tiers ----------------------------
    def setup(self) -> None:
        """Never raises: an error becomes the rank's failure, reported to the others."""
        try:
            self._setup()
        except Exception as exc:  # noqa: BLE001 - a setup error fails the run on every rank, with its message
            # After a signal the error is its consequence (the signal watch removes the run directory).
            cause = f"interrupted by {self.signal_name}" if self.signal_name else f"{type(exc).__name__}: {exc}"
            self.setup_error = f"setup: {cause}"
            self.comm.report_failure(self.setup_error)

    def _setup(self) -> None:
        plan, comm, run_dir = self.plan, self.comm, self.run_dir
        if comm.rank == 0:  # config keys without effect here: said once, for the whole run
            for line in self.config.config_warnings:
                self._warn(line)
        run_dir.create()
        if plan.first_rank_on_host:
            self.audit_start = host_audit.audit(plan.cache_dir, self._results_dir())
            if plan.baseline is not None:
                for line in baseline_mismatches(plan.baseline, self.config, plan.cache_dir, comm.host):
                    self._warn(line)
            # One look per host at the other runs is enough.
            self.other_runs_seen = other_runs(plan.cache_dir, run_dir.run_id)
            for line in other_run_warnings(plan.cache_dir, self.other_runs_seen):
                self._warn(line)
        if self.config.io_trace_log is not None:
            # No storage I/O at all, so no O_DIRECT probe either: the rank directory stays empty.
            path = io_trace.rank_path(self.config.io_trace_log, comm.rank, comm.size)
            self.trace = io_trace.TraceWriter(path)
            if comm.rank == 0:
                self._warn(io_trace.UNMEASURED)
        elif self.io_engine == "direct" and not direct_io_supported(run_dir.rank_dir):
            self.io_engine = "buffered"
            self._warn(
                f"{plan.cache_dir} refuses O_DIRECT (ramfs, tmpfs before Linux 6.6, some network "
                "filesystems): fell back to buffered I/O "
                "with fsync and fadvise(DONTNEED)"
            )
        fstype = mount_info(run_dir.rank_dir)["fstype"]
        if fstype in MEMORY_FILESYSTEMS:
            self._warn(f"{plan.cache_dir} is on {fstype}, which lives in RAM: this measures memory, not storage")
        progress = for_rank(self.config, comm.rank, comm.size, self.stderr)
        self.rank_run = RankRun(
            self.config,
            plan.model,
            comm,
            run_dir.rank_dir,
            self.io_engine,
            plan.storage_capacity,
            plan.gpu_backend,
            progress,
            self.trace,
        )
        if plan.first_rank_on_host and self.trace is None:  # a traced run does no storage I/O to count
            self.rank_run.device = DeviceSampler(find_source(plan.cache_dir))
            if self.config.enable_latency_tracing:
                self.tracer = latency_tracing.LatencyTracer(plan.cache_dir)
                self.tracer.start()  # attached before the start barrier: the whole window is traced
        if shows(self.config.log_level, logging.DEBUG):
            line = setup_line(
                self.rank_run.tiers,
                plan.gpu_backend,
                self.io_engine,
                rank_seed(self.config.seed, comm.rank),
                run_dir.rank_dir,
            )
            self.stderr.write(debug_prefix(comm.rank) + line + "\n")

    # -- measure: every rank leaves the barrier together, then runs the same window -------------
    def measure(self) -> Tuple[float, float]:
        """Returns (the wall-clock start rank 0 broadcast, the perf_counter() time of the shared start)."""
        run = self.rank_run
        if run is not None and not self.interrupted.is_set():
            run.prepare(self._say)  # each rank preconditions its own share before the ranks meet
        # With rank 0's live view every rank sends it its samples (the fleet); rank 0's answer goes to all.
        fleet_view = self.comm.size > 1 and run is not None and isinstance(run.progress, live_view.LiveView)
        broadcast_start, fleet_view = self.comm.bcast((time.time(), fleet_view))
        if run is not None:
            run.fleet_progress = fleet_view
        self.comm.barrier()
        sync = time.perf_counter()  # every rank leaves the barrier together: the window's common start
        # The stepped window's exchanges need every rank: all learn whether any failed before it, and none
        # enters it alone. (Without autoscaling a rank alone in its window learns it from the failure channel.)
        if self.config.enable_autoscaling:
            # Decided by the collective alone: a signal that comes after it is carried into the first step.
            enter = not any(self.comm.bcast(self.comm.gather(self._failed())))
        else:
            enter = not self._failed()
        if run is not None and self.interrupted.is_set() and run.interrupted_by is None:
            run.interrupt(self.signal_name or "SIGINT")  # a signal before this rank's run existed
        if enter:
            run.measure(sync)
        if self.tracer is not None:
            self.tracer.stop()  # at the window's end, before the result is gathered
        if self.trace is not None and self.rank_run is not None:
            # Complete on disk before rank 0 writes the result that names it.
            self.rank_run.reports["io_trace"] = self.trace.close()
        return broadcast_start, sync

    def _failed(self) -> bool:
        """Whether this rank failed, was interrupted or learned of another rank's failure before the window."""
        run = self.rank_run
        return bool(
            self.setup_error
            or self.interrupted.is_set()
            or run is None
            or run.failure is not None
            or run.remote_failure is not None
        )

    def _say(self, line: str) -> None:
        """Progress of the work before the window (not with --quiet): rank 0's at INFO, every rank's at DEBUG."""
        if not self.config.quiet and shows(
            self.config.log_level, logging.INFO if self.comm.rank == 0 else logging.DEBUG
        ):
            self.stderr.write(f"kvcache: rank {self.comm.rank}: {line}\n")
            self.stderr.flush()

    # -- gather: this rank's payload to rank 0, which writes the result; everyone agrees on the exit --
    def gather(self, broadcast_start: float, sync: float) -> int:
        if self.plan.first_rank_on_host and self.setup_error is None:
            self._warn_about_runs_started_later()
        payloads = self.comm.gather(self._payload(sync))
        status = 1
        if self.comm.rank == 0:
            remote_failure = self.rank_run.remote_failure if self.rank_run else None
            autoscaling = self.rank_run.autoscaling_outcome if self.rank_run else None
            if self.config.enable_autoscaling and autoscaling is None:  # no step ran: the run failed before
                autoscaling = autoscaler_search(self.config, self.comm.size).outcome("failed")
            status = _finish_on_rank0(
                self.config, self.plan, self.comm, payloads, broadcast_start, remote_failure, self.stdout, self.stderr,
                autoscaling,
            )  # fmt: skip
        return self.comm.bcast(status)

    def _warn_about_runs_started_later(self) -> None:
        # A run that started during this one and still runs shared the storage with it too.
        reported = {r.name for r in self.other_runs_seen if r.state in (LIVE, UNCHECKED)}
        started_later = [
            r
            for r in other_runs(self.plan.cache_dir, self.run_dir.run_id)
            if r.state in (LIVE, UNCHECKED) and r.name not in reported
        ]
        for line in other_run_warnings(self.plan.cache_dir, started_later):
            self._warn(line)

    def _payload(self, sync: float) -> dict:
        run, comm = self.rank_run, self.comm
        failure = (
            self.setup_error
            or (run.failure if run else None)
            or (f"interrupted by {self.signal_name}" if self.interrupted.is_set() else None)
        )
        payload = {
            "rank": comm.rank,
            "host": comm.host,
            "seed": rank_seed(self.config.seed, comm.rank),
            "cache_namespace": self.run_dir.rank_dir,
            "status": "failed" if failure else "ok",
            "error": failure,
            "window": _rank_window(run, sync),
            "cpu_s": run.window_cpu_s if run else None,
            "metrics": (run.metrics if run else Metrics()).export(),
            "timeseries": run.timeseries if run else [],
            "io_engine": "none" if self.trace is not None else self.io_engine,  # a trace run does no I/O
            "tiers": {t.name: t.describe() for t in run.tiers} if run else {},
            "warnings": self.warnings,
            "reports": run.reports if run else {},
        }
        if self.config.enable_autoscaling:
            payload["users_timeline"] = run.users_timeline if run else []
        if run is not None and run.device is not None and run.device.started:
            payload["device"] = run.device.report()
        if self.tracer is not None and self.tracer.report is not None:
            payload["latency_tracing"] = self.tracer.report
        if self.plan.first_rank_on_host and self.plan.baseline is not None:
            payload["baseline"] = self.plan.baseline
        if self.audit_start is not None:
            end = host_audit.audit(self.plan.cache_dir, self._results_dir())
            payload["audit"] = {
                "start": self.audit_start,
                "end": end,
                "changed": host_audit.changes(self.audit_start, end),
            }
        payload["numa_nodes"] = host_audit.numa_nodes_of(sorted(os.sched_getaffinity(0)))
        return payload

    def _results_dir(self) -> Optional[str]:
        return os.path.dirname(os.path.abspath(self.config.output)) if self.config.output else None


def _rank_window(run: Optional[RankRun], sync: float) -> dict:
    """Wall-clock labels, and the offsets from the shared barrier that aggregation uses (no clock skew)."""
    if run is not None and run.window_start is not None:
        start_offset, end_offset = run.window_offsets
        return {
            "start_unix_s": run.window_start,
            "end_unix_s": run.window_end,
            "start_offset_s": start_offset,
            "end_offset_s": end_offset,
        }
    elapsed = time.perf_counter() - sync
    return {
        "start_unix_s": time.time() - elapsed,
        "end_unix_s": time.time(),
        "start_offset_s": 0.0,
        "end_offset_s": elapsed,
    }


def _finish_on_rank0(
    config, plan: RankPlan, comm, payloads, broadcast_start, remote_failure, stdout, stderr, autoscaling=None
) -> int:
    model = plan.model
    engines = sorted({p["io_engine"] for p in payloads})
    environment = describe_environment(plan.cache_dir)
    environment.update(
        {
            "io_engine_requested": config.io_engine,
            "io_engine": engines[0] if len(engines) == 1 else "mixed: " + ", ".join(engines),
            "gpu_backend": plan.gpu_backend,
            "mpi": {
                "in_use": comm.size > 1 or comm.library is not None,
                "library": comm.library,
                "world_size": comm.size,
            },
            "launcher": describe_launcher(),
        }
    )
    settings = config.as_dict()
    settings.update(
        {
            "cache_dir": plan.cache_dir,
            "bytes_per_token": model.bytes_per_token,
            "model_geometry": {
                "layers": model.layers,
                "kv_heads": model.kv_heads,
                "head_dim": model.head_dim,
                "kv_lora_rank": model.kv_lora_rank,
                "qk_rope_dim": model.qk_rope_dim,
                "dtype": model.dtype,
                "active_params": model.active_params,
                "hidden_dim": model.hidden_dim,
                "attention_dim": model.attention_dim,
            },
            "storage_capacity_bytes_per_rank": plan.storage_capacity,
            "seeds_per_rank": [p["seed"] for p in payloads],  # in rank order, as gathered
        }
    )
    result = build_result(settings, environment, payloads, broadcast_start, remote_failure, autoscaling)
    result["break_even"] = break_even_block(config, model, result["tiers"]["storage"])
    stdout.write(format_summary(result) + "\n")
    if config.output:
        try:
            write_json_atomically(config.output, result)
        except OSError as exc:
            stderr.write(f"kvcache: cannot write the result to {config.output}: {exc}\n")
            return 1
        stdout.write(f"result: {os.path.abspath(config.output)}\n")
    if config.xlsx_output:
        try:  # checked before the run; a file made there since is still never replaced
            export.write_xlsx(XLSX_OUTPUT, config.xlsx_output, [(config.output or "result", result)],
                              export.xlsxwriter_module(XLSX_OUTPUT))  # fmt: skip
        except UsageError as exc:
            stderr.write(f"kvcache: cannot write the workbook: {exc}\n")
            return 1
        stdout.write(f"workbook: {os.path.abspath(config.xlsx_output)}\n")
    stdout.flush()
    if result["status"] != "ok":
        stderr.write(f"kvcache: run failed: {result['error']}\n")
        return 1
    return 0
