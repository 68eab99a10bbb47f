"""`kvcache baseline --cache-dir DIR`: what the storage under a cache dir delivers to fio at the engine's shape.

Three fio jobs in a directory of our own under the cache dir, each --baseline-runtime seconds: write (which also
lays out the files), read, and a read/write mix (--baseline-read-share of the operations reads). Each has the
engine's chunk (--io-chunk-mib as fio's bs) and concurrency (--io-depth operations in flight per rank, times
--ranks ranks on this host: fio's numjobs, psync, one operation in flight per job), with O_DIRECT or buffered
I/O as --io-engine says. The small JSON it writes is what `kvcache run --baseline FILE` states the engine's
bandwidth against, as a share of the device's.
"""

import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from typing import List, Optional

from kvcache.cachedir import validate_cache_dir
from kvcache.device_counters import find_source
from kvcache.errors import UsageError
from kvcache.output import check_output_path, write_json_atomically
from kvcache.units import GIB, mib_bytes

SCHEMA = "storagebench.kvcache/baseline/v1"
DIR_PREFIX = "kvcache-baseline-"
JOBS = ("write", "read", "mixed")  # write first: it lays out the files the other two read
FIO_RW = {"write": "write", "read": "read", "mixed": "rw"}
FREE_SHARE = 0.8  # at most this share of the free space, as a run's storage tier
FIO_GRACE_S = 120  # beyond the runtime: laying out files, starting jobs on a loaded host


def fio_argv(config, fio: str, directory: str, job: str, jobs: int, size_bytes: int) -> List[str]:
    """fio's command line for one job (an argv list: nothing passes through a shell)."""
    argv = [
        fio,
        "--name=kvcache-baseline",
        f"--directory={directory}",
        "--filename_format=baseline.$jobnum",  # the same files for all three jobs
        f"--rw={FIO_RW[job]}",
        f"--bs={mib_bytes(config.io_chunk_mib)}",
        f"--numjobs={jobs}",
        f"--size={size_bytes}",
        f"--runtime={config.baseline_runtime}",
        "--time_based",
        "--ioengine=psync",
        f"--direct={1 if config.io_engine == 'direct' else 0}",
        "--fallocate=none",  # files grow as the engine's entries do
        "--group_reporting",
        "--output-format=json",
    ]
    if job == "mixed":
        argv.append(f"--rwmixread={round(config.baseline_read_share * 100)}")
    if config.io_engine == "buffered":
        argv.append("--end_fsync=1")  # the engine's buffered writes are fsynced too
    return argv


def _direction(block: dict) -> dict:
    percentiles = (block.get("clat_ns") or {}).get("percentile") or {}
    p95 = percentiles.get("95.000000")
    return {
        "bytes_per_s": int(block.get("bw_bytes", 0)),
        "iops": round(float(block.get("iops", 0.0)), 3),
        "p95_ms": round(p95 / 1e6, 3) if p95 else None,
    }


def parse_fio_json(text: str) -> dict:
    """{read, write} of fio's --output-format=json (the one group-reported job); fio may print notes before it."""
    start = text.find("{")
    if start < 0:
        raise ValueError("fio printed no JSON")
    job = json.loads(text[start:])["jobs"][0]
    if job.get("error"):
        raise ValueError(f"fio job error {job['error']}")
    return {"read": _direction(job["read"]), "write": _direction(job["write"])}


def fio_version(fio: str) -> Optional[str]:
    try:
        done = subprocess.run([fio, "--version"], capture_output=True, text=True, timeout=30, check=False)
    except OSError:
        return None
    return done.stdout.strip() or None if done.returncode == 0 else None


def check_baseline(config) -> tuple:
    """Everything checked before anything is created: (cache dir, fio path, numjobs, bytes per job)."""
    cache_dir = validate_cache_dir(config.cache_dir)
    fio = shutil.which(config.fio)
    if fio is None:
        raise UsageError("--fio", f"{config.fio} not found: install fio (apt install fio) or give its path")
    if not config.output:
        raise UsageError("--output", "required: the baseline JSON file to write")
    check_output_path(config.output)
    jobs = config.io_depth * config.ranks
    chunk = mib_bytes(config.io_chunk_mib)
    size = int(config.baseline_size_gb * GIB) // chunk * chunk
    if size < chunk:
        raise UsageError(
            "--baseline-size-gb", f"must hold at least one --io-chunk-mib chunk ({config.io_chunk_mib:g} MiB)"
        )
    stats = os.statvfs(cache_dir)
    free = stats.f_bavail * stats.f_frsize
    if jobs * size > free * FREE_SHARE:
        raise UsageError(
            "--baseline-size-gb",
            f"{jobs} fio jobs x {size / GIB:.3f} GiB need {jobs * size / GIB:.3f} GiB, more than "
            f"{FREE_SHARE:.0%} of the {free / GIB:.3f} GiB free under {config.cache_dir}",
        )
    return cache_dir, fio, jobs, size


def run_baseline(config, stdout, stderr) -> int:
    cache_dir, fio, jobs, size = check_baseline(config)
    source = find_source(cache_dir)
    directory = tempfile.mkdtemp(prefix=DIR_PREFIX, dir=cache_dir)  # ours alone: removed whatever happens

    def interrupted(signum, _frame):
        raise KeyboardInterrupt(signal.Signals(signum).name)

    previous = signal.signal(signal.SIGTERM, interrupted)
    measured = {}
    try:
        for job in JOBS:
            if not config.quiet:
                stderr.write(f"kvcache baseline: fio {job}, {jobs} job(s), {config.baseline_runtime:g} s\n")
            argv = fio_argv(config, fio, directory, job, jobs, size)
            done = subprocess.run(
                argv, capture_output=True, text=True, timeout=config.baseline_runtime + FIO_GRACE_S, check=False
            )
            if done.returncode != 0:
                stderr.write(
                    f"kvcache baseline: fio {job} failed (exit {done.returncode}): {done.stderr.strip()[-500:]}\n"
                )
                return 1
            try:
                measured[job] = parse_fio_json(done.stdout)
            except (ValueError, KeyError, IndexError) as exc:
                stderr.write(f"kvcache baseline: fio {job}: {exc}\n")
                return 1
    except KeyboardInterrupt as exc:
        stderr.write(f"kvcache baseline: interrupted by {exc or 'SIGINT'}\n")
        return 1
    finally:
        signal.signal(signal.SIGTERM, previous)
        shutil.rmtree(directory, ignore_errors=True)
    baseline = {
        "schema": SCHEMA,
        "host": socket.gethostname(),
        "created_unix_s": round(time.time(), 3),
        "cache_dir": cache_dir,
        "device": source.device or source.mount_point,
        "fio": fio_version(fio),
        "io_engine": config.io_engine,
        "chunk_bytes": mib_bytes(config.io_chunk_mib),
        "jobs": jobs,
        "bytes_per_job": size,
        "runtime_s": config.baseline_runtime,
        "read_share": config.baseline_read_share,
        "read": measured["read"]["read"],
        "write": measured["write"]["write"],
        "mixed": measured["mixed"],
    }
    write_json_atomically(config.output, baseline)
    stdout.write(
        f"baseline of {cache_dir} ({baseline['device']}): read {baseline['read']['bytes_per_s'] / GIB:.3f} GiB/s, "
        f"write {baseline['write']['bytes_per_s'] / GIB:.3f} GiB/s, mixed {config.baseline_read_share:.0%} reads "
        f"{measured['mixed']['read']['bytes_per_s'] / GIB:.3f} + {measured['mixed']['write']['bytes_per_s'] / GIB:.3f}"
        f" GiB/s ({jobs} jobs of {config.io_chunk_mib:g} MiB); wrote {config.output}\n"
    )
    return 0
