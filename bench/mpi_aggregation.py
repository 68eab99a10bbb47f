#!/usr/bin/env python
"""How long the engine takes, after the measurement window, to put the result on disk under MPI.

For 2 and 4 ranks (settable) it runs, a few times each,
`mpirun --allow-run-as-root --oversubscribe -n N python -m kvcache run ... --duration 3 --output F`
and measures the aggregation overhead: from the end of the common window (the result's
`window.end_unix_s`, the latest rank's window end) to the moment the result file appears.
That span covers the gather of every rank's payload, the histogram merge, the result build and
the JSON write.

When does the file appear? The engine writes a temporary file and renames it onto F, so F
appears at the rename. This script watches the output directory with inotify (through ctypes,
no package needed) and stamps IN_MOVED_TO for F with time.time() the moment the kernel wakes it.
That is precise to the wake-up latency (microseconds on an idle core) and uses the same clock as
the ranks' `window.end_unix_s` (one host). The file's st_mtime_ns is printed beside it as a
cross-check: it is the last write into the temporary file (just before the rename), but the kernel
stamps it from a coarse clock (up to one timer tick, 1-10 ms, behind), so it is less precise.

Last line: `aggregation_overhead_ms ranks=2 X ranks=4 Y` (medians of the inotify figure).
"""

import argparse
import ctypes
import os
import select
import statistics
import struct
import subprocess
import sys
import time

from _common import (
    die,
    engine_command,
    engine_env,
    load_json,
    mpirun_prefix,
    require_program,
    storage_only,
    work_directory,
)

IN_MOVED_TO = 0x00000080
IN_CLOSE_WRITE = 0x00000008
IN_CLOEXEC = 0o2000000
EVENT_HEADER = struct.Struct("iIII")  # wd, mask, cookie, len (then len bytes of NUL-padded name)


class DirectoryWatch:
    """inotify on one directory; `arrivals(name)` gives the time.time() at which `name` was renamed in."""

    def __init__(self, directory: str):
        libc = ctypes.CDLL(None, use_errno=True)
        self.fd = libc.inotify_init1(IN_CLOEXEC)
        if self.fd < 0:
            raise OSError(ctypes.get_errno(), "inotify_init1")
        if libc.inotify_add_watch(self.fd, os.fsencode(directory), IN_MOVED_TO | IN_CLOSE_WRITE) < 0:
            raise OSError(ctypes.get_errno(), f"inotify_add_watch {directory}")
        self.seen = {}

    def poll(self, timeout: float) -> None:
        ready = select.select([self.fd], [], [], timeout)[0]
        if not ready:
            return
        stamp = time.time()
        data = os.read(self.fd, 65536)
        offset = 0
        while offset < len(data):
            _wd, mask, _cookie, length = EVENT_HEADER.unpack_from(data, offset)
            name = data[offset + EVENT_HEADER.size : offset + EVENT_HEADER.size + length].rstrip(b"\0").decode()
            offset += EVENT_HEADER.size + length
            if mask & IN_MOVED_TO:
                self.seen.setdefault(name, stamp)

    def close(self) -> None:
        os.close(self.fd)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description="Time from the end of the window to the result file on disk, under Open MPI.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--ranks", type=int, nargs="+", default=[2, 4], help="rank counts to measure")
    parser.add_argument("--repeats", type=int, default=3, help="runs per rank count")
    parser.add_argument("--duration", type=float, default=3.0, help="engine window, seconds")
    parser.add_argument("--num-users", type=int, default=2, help="engine --num-users (per rank)")
    parser.add_argument("--model", default="llama3.1-8b", help="engine --model")
    parser.add_argument("--dir", help="--cache-dir and output directory (default: a fresh temp dir under /var/tmp)")
    parser.add_argument("--mpirun", default="mpirun", help="Open MPI launcher")
    parser.add_argument("--python", default=sys.executable, help="Python that runs the engine (needs mpi4py)")
    args = parser.parse_args(argv)
    if args.repeats < 1 or args.duration <= 0 or any(n < 1 for n in args.ranks):
        parser.error("--ranks, --repeats and --duration must be positive")
    return args


def one_run(args, workdir: str, ranks: int, index: int) -> dict:
    name = f"agg-{ranks}-{index}.json"
    output = os.path.join(workdir, name)
    cache = os.path.join(workdir, "cache")
    os.makedirs(cache, exist_ok=True)
    engine = engine_command(
        [
            *storage_only(args.model, args.num_users, args.duration),
            "--io-depth", "2",
            "--mpi", "on",
            "--cache-dir", cache,
            "--output", output,
            "--quiet",
        ],
        args.python,
    )  # fmt: skip
    command = mpirun_prefix(args.mpirun, ranks) + engine
    watch = DirectoryWatch(workdir)
    try:
        child = subprocess.Popen(
            command, env=engine_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
        )
        while child.poll() is None:
            watch.poll(0.05)
        watch.poll(0)
        stderr = child.stderr.read()
        child.stderr.close()
    finally:
        watch.close()
    if child.returncode != 0 or not os.path.exists(output):
        die(f"mpirun -n {ranks} failed (exit {child.returncode}): {stderr.strip()[-2000:]}")
    result = load_json(output)
    if result["status"] != "ok" or result["ranks"] != ranks:
        die(f"run with {ranks} ranks: status {result['status']}, ranks {result['ranks']}: {result.get('error')}")
    end = result["window"]["end_unix_s"]
    if name not in watch.seen:
        die(f"inotify did not see {output} appear")
    return {
        "inotify_ms": (watch.seen[name] - end) * 1000,
        "mtime_ms": (os.stat(output).st_mtime_ns / 1e9 - end) * 1000,
        "skew_ms": result["aggregate"]["last_done_s"] * 1000 - result["aggregate"]["first_done_s"] * 1000,
    }


def main(argv=None) -> int:
    args = parse_args(argv)
    require_program(args.mpirun, "openmpi-bin")
    medians = {}
    with work_directory(args.dir, "kvcache-mpi-agg-") as workdir:
        print(f"directory {workdir}; overhead = result file renamed in (inotify) - window.end_unix_s")
        print(f"{'ranks':>5} {'run':>3} {'inotify ms':>10} {'mtime ms':>9} {'rank end skew ms':>16}")
        for ranks in args.ranks:
            runs = []
            for index in range(args.repeats):
                run = one_run(args, workdir, ranks, index)
                runs.append(run)
                line = f"{ranks:>5} {index + 1:>3} {run['inotify_ms']:10.1f} {run['mtime_ms']:9.1f}"
                print(f"{line} {run['skew_ms']:16.1f}", flush=True)
            values = [r["inotify_ms"] for r in runs]
            medians[ranks] = statistics.median(values)
            print(f"{ranks:>5} median {medians[ranks]:.1f} ms (min {min(values):.1f}, max {max(values):.1f})")
    print("aggregation_overhead_ms " + " ".join(f"ranks={n} {ms:.1f}" for n, ms in medians.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
