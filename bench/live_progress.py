#!/usr/bin/env python
"""What rank 0's live view of the fleet costs the run: `--progress live` against `--progress off` under mpirun.

With `--progress live` every rank sends rank 0 its latest time-series sample once a second and rank 0 reads
them between control ticks and redraws the view (kvcache/live_view.py). Each pair runs the same workload both
ways (the order alternating, so that a drift of the disk falls on both sides), N ranks on this host, and
compares the storage bandwidth (read + write bytes over the window, all ranks) and the CPU seconds of the
whole job (mpirun and every rank: os.wait4) per GiB moved; the view's own cost (importing rich, drawing a
frame a second) is in the live side's CPU. The view's frames go to a file, as a terminal would take them.

Last line: `live/off bandwidth B cpu_per_gib C frames F` (medians of the per-pair ratios; F the frames drawn in the
last live run, which shows the view really ran).
"""

import argparse
import os
import statistics
import sys

from _common import (
    GIB,
    add_engine_arguments,
    die,
    engine_command,
    measured_run,
    mpirun_prefix,
    require_program,
    spread,
    storage_only,
    work_directory,
)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description="The live view's cost under mpirun: --progress live against off, in A/B pairs.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--ranks", type=int, default=4, help="mpirun -n")
    parser.add_argument("--pairs", type=int, default=3, help="A/B pairs")
    parser.add_argument("--duration", type=float, default=10.0, help="engine window, seconds")
    parser.add_argument("--num-users", type=int, default=4, help="engine --num-users (per rank)")
    parser.add_argument("--model", default="llama3.1-8b", help="engine --model")
    parser.add_argument("--dir", help="--cache-dir and output directory (default: a fresh temp dir under /var/tmp)")
    parser.add_argument("--mpirun", default="mpirun", help="Open MPI launcher")
    add_engine_arguments(parser, "--io-depth=8")
    args = parser.parse_args(argv)
    if args.ranks < 2 or args.pairs < 1 or args.duration <= 0 or args.num_users < 1:
        parser.error("--ranks must be at least 2 (a fleet), --pairs, --duration and --num-users positive")
    return args


def one_run(args, workdir: str, progress: str, index: int) -> dict:
    output = os.path.join(workdir, f"{progress}-{index}.json")
    cache = os.path.join(workdir, "cache")
    os.makedirs(cache, exist_ok=True)
    engine = engine_command(
        [
            *storage_only(args.model, args.num_users, args.duration),
            "--mpi", "on",
            "--progress", progress,
            "--cache-dir", cache,
            "--output", output,
            *args.engine_arg,
        ],
        args.python,
    )  # fmt: skip
    command = mpirun_prefix(args.mpirun, args.ranks)
    frames_path = os.path.join(workdir, f"{progress}-{index}.frames")
    with open(frames_path, "w", encoding="utf-8") as frames:
        usage, _wall, result = measured_run(command + engine, output, stderr=frames)
    with open(frames_path, encoding="utf-8") as frames:
        drawn = frames.read().count("kvcache run  ")
    storage = result["tiers"]["storage"]
    moved = storage["bytes_read"] + storage["bytes_written"]
    cpu_s = usage.ru_utime + usage.ru_stime
    return {
        "bandwidth": moved / result["window"]["seconds"],
        "cpu_s_per_gib": cpu_s / (moved / GIB),  # the CPU the I/O itself costs grows with the bytes moved
        "frames": drawn,
    }


def main(argv=None) -> int:
    args = parse_args(argv)
    require_program(args.mpirun, "openmpi-bin")
    bandwidth, cpu, frames = [], [], 0
    with work_directory(args.dir, "kvcache-live-progress-") as workdir:
        for index in range(args.pairs):
            order = ("live", "off") if index % 2 == 0 else ("off", "live")
            runs = {progress: one_run(args, workdir, progress, index) for progress in order}
            if runs["live"]["frames"] == 0 or runs["off"]["frames"] != 0:
                die(f"pair {index}: the live run drew no view, or the off run drew one")
            bandwidth.append(runs["live"]["bandwidth"] / runs["off"]["bandwidth"])
            cpu.append(runs["live"]["cpu_s_per_gib"] / runs["off"]["cpu_s_per_gib"])
            frames = runs["live"]["frames"]
            print(
                f"pair {index}: bandwidth live/off {bandwidth[-1]:.3f}, cpu per GiB live/off {cpu[-1]:.3f} "
                f"({runs['live']['cpu_s_per_gib']:.3f} s/GiB against {runs['off']['cpu_s_per_gib']:.3f}), "
                f"frames {frames}",
                flush=True,
            )
    print(f"bandwidth live/off {spread(bandwidth)}; cpu per GiB live/off {spread(cpu)}")
    medians = f"bandwidth {statistics.median(bandwidth):.3f} cpu_per_gib {statistics.median(cpu):.3f}"
    print(f"live/off {medians} frames {frames}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
