"""`kvcache run`: validation, then the collective protocol every rank follows (one rank without MPI).

setup (run directory, I/O engine probe) -> barrier -> window -> gather on rank 0 -> result on disk
-> every rank cleans its namespace -> exit code agreed by all ranks.
"""

import math
import os
import shutil
import signal
import sys
import threading
import time
import traceback
from typing import Optional

from kvcache.cachedir import LIVE, UNCHECKED, RunDirectory, other_run_warnings, other_runs, validate_cache_dir
from kvcache.datasize import AUTO_STORAGE_SHARE, largest_entry_bytes
from kvcache.environment import describe_environment, mount_info
from kvcache.errors import UsageError
from kvcache.metrics import Metrics
from kvcache.models import Registry
from kvcache.mpi import open_comm
from kvcache.output import check_output_path, write_json_atomically
from kvcache.progress import Progress
from kvcache.result import build_result
from kvcache.runner import RankRun
from kvcache.storage_io import direct_io_supported
from kvcache.summary import format_summary
from kvcache.tiers import GIB, choose_gpu_backend

MEMORY_FILESYSTEMS = ("tmpfs", "ramfs")


def available_memory_bytes(meminfo: str = "/proc/meminfo") -> Optional[int]:
    try:
        with open(meminfo, encoding="ascii") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def validate_run(values: dict, models) -> dict:
    """Checks whose answer is the same on every rank (the options themselves). Returns derived settings."""
    model = Registry(models).get(values["model"])
    gpu_backend = choose_gpu_backend(values["gpu_backend"]) if values["gpu_mem_gb"] > 0 else "simulated"
    return {"model": model, "gpu_backend": gpu_backend}


def validate_host(values: dict, rank: int, ranks_on_host: int) -> str:
    """Checks of this host (its cache dir, memory and disk) and, on rank 0, of --output. Returns the cache dir."""
    cache_dir = validate_cache_dir(values["cache_dir"])
    if values["output"] is not None and rank == 0:  # only rank 0 writes the result
        check_output_path(values["output"])
    available = available_memory_bytes()
    buffers = values["io_depth"] * (values["io_chunk_mib"] << 20)
    needed = (values["cpu_mem_gb"] * GIB + buffers) * ranks_on_host
    if available is not None and needed > available:
        raise UsageError(
            "--cpu-mem-gb/--io-depth/--io-chunk-mib",
            f"{ranks_on_host} rank(s) on this host need {needed / GIB:.1f} GiB (CPU tier "
            f"{values['cpu_mem_gb']:g} GiB + {values['io_depth']} x {values['io_chunk_mib']} MiB I/O buffers each), "
            f"more than its available memory ({available / GIB:.1f} GiB); the CPU tier holds real bytes",
        )
    return cache_dir


def storage_capacity(values: dict, model, cache_dir: str, ranks_on_host: int) -> int:
    """The storage tier's bytes per rank: --storage-capacity-gb, or a share of the free space. Refused
    (before anything is created) when the free space cannot give it, or when it cannot hold the largest
    entry the workload writes: such a run would drop entries and measure less than it was asked to."""
    usage = shutil.disk_usage(cache_dir)
    free = usage.free
    sized = usage.total > 0  # ramfs reports no size at all: its free space is unknown, not zero
    largest = largest_entry_bytes(model.bytes_per_token, not values["disable_prefix_caching"])
    needed = f"the largest entry this workload writes ({_bytes(largest)}, {model.name})"
    if values["storage_capacity_gb"] > 0:
        capacity = int(values["storage_capacity_gb"] * GIB)
        if sized and capacity * ranks_on_host > free:
            raise UsageError(
                "--storage-capacity-gb",
                f"{ranks_on_host} rank(s) x {values['storage_capacity_gb']:g} GiB is more than the "
                f"{free / GIB:.1f} GiB free under {cache_dir}",
            )
        if capacity < largest:
            raise UsageError(
                "--storage-capacity-gb",
                f"{values['storage_capacity_gb']:g} GiB ({_bytes(capacity)}) per rank cannot hold {needed}; "
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


def run_benchmark(values: dict, models, stdout=None, stderr=None) -> int:
    stdout = stdout or sys.stdout
    stderr = stderr or sys.stderr
    derived = validate_run(values, models)
    comm = open_comm(values["mpi"])
    try:
        hosts = comm.bcast(comm.gather(comm.host))
        ranks_on_host = hosts.count(comm.host)
        derived["first_rank_on_host"] = hosts.index(comm.host) == comm.rank
        problem = None
        try:
            derived["cache_dir"] = validate_host(values, comm.rank, ranks_on_host)
            derived["storage_capacity"] = storage_capacity(
                values, derived["model"], derived["cache_dir"], ranks_on_host
            )
        except UsageError as exc:
            problem = str(exc) if comm.size == 1 else f"rank {comm.rank} on {comm.host}: {exc}"
        # Every rank learns every rank's verdict, so all exit 2 together and nothing is created.
        problems = comm.bcast([p for p in (comm.gather(problem) or []) if p])
        if problems:
            if comm.rank == 0:
                raise UsageError(None, "; ".join(problems))
            return 2
        return _run_rank(values, derived, comm, ranks_on_host, stdout, stderr)
    except UsageError:
        raise
    except Exception:
        if comm.size > 1:
            # An unexpected error on one rank would leave the others waiting in a collective forever.
            traceback.print_exc(file=stderr)
            stderr.flush()
            comm.abort(1)
        raise


def _run_rank(values, derived, comm, ranks_on_host, stdout, stderr) -> int:
    model = derived["model"]

    run_id = comm.bcast(_new_run_id() if comm.rank == 0 else None)
    run_dir = RunDirectory(derived["cache_dir"], run_id, comm.rank)
    warnings = []
    run: Optional[RankRun] = None
    setup_error = None
    io_engine = values["io_engine"]
    storage_capacity = 0
    other_runs_seen = []
    interrupted = threading.Event()

    def on_signal(signum, _frame):
        interrupted.set()
        if run is not None:
            run.interrupt(signal.Signals(signum).name)

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        try:
            run_dir.create()
            if derived["first_rank_on_host"]:  # one look per host is enough
                other_runs_seen = other_runs(derived["cache_dir"], run_id)
                for line in other_run_warnings(derived["cache_dir"], other_runs_seen):
                    warnings.append(line)
                    stderr.write(f"kvcache: warning: rank {comm.rank}: {line}\n")
            if io_engine == "direct" and not direct_io_supported(run_dir.rank_dir):
                io_engine = "buffered"
                warnings.append(
                    f"{derived['cache_dir']} refuses O_DIRECT (ramfs, tmpfs before Linux 6.6, some network "
                    "filesystems): fell back to buffered I/O "
                    "with fsync and fadvise(DONTNEED)"
                )
                stderr.write(f"kvcache: warning: rank {comm.rank}: {warnings[-1]}\n")
            fstype = mount_info(run_dir.rank_dir)["fstype"]
            if fstype in MEMORY_FILESYSTEMS:
                warnings.append(
                    f"{derived['cache_dir']} is on {fstype}, which lives in RAM: this measures memory, not storage"
                )
                stderr.write(f"kvcache: warning: rank {comm.rank}: {warnings[-1]}\n")
            storage_capacity = derived["storage_capacity"]
            progress = (
                Progress(stderr, "rank 0 " if comm.size > 1 else "")
                if Progress.wanted(values["quiet"], comm.rank, stderr)
                else None
            )
            run = RankRun(
                values, model, comm, run_dir.rank_dir, io_engine, storage_capacity, derived["gpu_backend"], progress
            )
        except Exception as exc:  # noqa: BLE001 - a setup error fails the run on every rank, with its message
            setup_error = f"setup: {type(exc).__name__}: {exc}"
            comm.report_failure(setup_error)

        broadcast_start = comm.bcast(time.time())
        comm.barrier()
        sync = time.perf_counter()  # every rank leaves the barrier together: the window's common start
        if run is not None and not interrupted.is_set():
            run.measure(sync)
        elif run is not None:
            run.interrupt("SIGINT")
        if derived["first_rank_on_host"] and setup_error is None:
            # A run that started during this one and still runs shared the storage with it too.
            reported = {r.name for r in other_runs_seen if r.state in (LIVE, UNCHECKED)}
            started_later = [
                r
                for r in other_runs(derived["cache_dir"], run_id)
                if r.state in (LIVE, UNCHECKED) and r.name not in reported
            ]
            for line in other_run_warnings(derived["cache_dir"], started_later):
                warnings.append(line)
                stderr.write(f"kvcache: warning: rank {comm.rank}: {line}\n")
        failure = setup_error or (run.failure if run else None) or ("interrupted" if interrupted.is_set() else None)
        payload = {
            "rank": comm.rank,
            "host": comm.host,
            "seed": values["seed"] + comm.rank,
            "cache_namespace": run_dir.rank_dir,
            "status": "failed" if failure else "ok",
            "error": failure,
            "window": _rank_window(run, sync),
            "metrics": (run.metrics if run else Metrics()).export(),
            "timeseries": run.timeseries if run else [],
            "io_engine": io_engine,
            "tiers": {t.name: t.describe() for t in run.tiers} if run else {},
            "warnings": warnings,
        }
        remote_failure = run.remote_failure if run else None
        payloads = comm.gather(payload)
        status = 1
        if comm.rank == 0:
            status = _finish_on_rank0(
                values,
                derived,
                comm,
                payloads,
                broadcast_start,
                remote_failure,
                storage_capacity,
                model,
                stdout,
                stderr,
            )
        status = comm.bcast(status)
    finally:
        if run is not None:
            run.close()
        if values["keep_cache"]:
            if comm.rank == 0:
                stderr.write(f"kvcache: cache files kept in {run_dir.run_dir}\n")
        else:
            run_dir.remove()
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    comm.finish()
    return status


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
    values, derived, comm, payloads, broadcast_start, remote_failure, storage_capacity, model, stdout, stderr
) -> int:
    engines = sorted({p["io_engine"] for p in payloads})
    environment = describe_environment(derived["cache_dir"])
    environment.update(
        {
            "io_engine_requested": values["io_engine"],
            "io_engine": engines[0] if len(engines) == 1 else "mixed: " + ", ".join(engines),
            "gpu_backend": derived["gpu_backend"],
            "mpi": {
                "in_use": comm.size > 1 or comm.library is not None,
                "library": comm.library,
                "world_size": comm.size,
            },
        }
    )
    config = dict(values)
    config.update(
        {
            "cache_dir": derived["cache_dir"],
            "bytes_per_token": model.bytes_per_token,
            "model_geometry": {
                "layers": model.layers,
                "kv_heads": model.kv_heads,
                "head_dim": model.head_dim,
                "kv_lora_rank": model.kv_lora_rank,
                "qk_rope_dim": model.qk_rope_dim,
                "dtype": model.dtype,
            },
            "storage_capacity_bytes_per_rank": storage_capacity,
            "seed_per_rank": "seed + rank",
        }
    )
    result = build_result(config, environment, payloads, broadcast_start, remote_failure)
    stdout.write(format_summary(result) + "\n")
    if values["output"]:
        try:
            write_json_atomically(values["output"], result)
        except OSError as exc:
            stderr.write(f"kvcache: cannot write the result to {values['output']}: {exc}\n")
            return 1
        stdout.write(f"result: {os.path.abspath(values['output'])}\n")
    stdout.flush()
    if result["status"] != "ok":
        stderr.write(f"kvcache: run failed: {result['error']}\n")
        return 1
    return 0
