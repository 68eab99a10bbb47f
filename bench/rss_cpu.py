#!/usr/bin/env python
"""Peak memory and CPU cost of one engine run, for the whole process from start to exit.

Runs `kvcache run --model llama3.1-8b --num-users 10 --gpu-mem-gb 0 --cpu-mem-gb 0 --duration 30`
(model, users and duration settable) as a child process and reads its resource usage with
os.wait4(), the same kernel accounting `/usr/bin/time -v` prints (struct rusage of the waited-for
child and its own waited-for children; ru_maxrss is in KiB on Linux), without needing the `time`
package. CPU is user + sys seconds; it is divided by the GiB the storage tier moved (bytes read +
bytes written, from the result JSON), so startup and cleanup count against the run, as they would
for a user.

Last line: `peak_rss_mib X cpu_s_per_gib Y`. Goals: RSS <= 1024 MiB and CPU <= 0.15 s/GiB
(the reference: 10.2 GiB and 1.14 s/GiB).
"""

import argparse
import os
import sys

from _common import GIB, add_engine_arguments, die, engine_command, measured_run, storage_only, work_directory


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description="Peak RSS and CPU seconds per GiB moved of one engine run.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--dir", help="--cache-dir for the engine (default: a fresh temp dir under /var/tmp)")
    parser.add_argument("--duration", type=float, default=30.0, help="engine window, seconds")
    parser.add_argument("--model", default="llama3.1-8b", help="engine --model")
    parser.add_argument("--num-users", type=int, default=10, help="engine --num-users")
    add_engine_arguments(parser, "--engine-arg=--io-depth --engine-arg=4")
    args = parser.parse_args(argv)
    if args.duration <= 0 or args.num_users < 1:
        parser.error("--duration and --num-users must be positive")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    with work_directory(args.dir, "kvcache-rss-cpu-") as workdir:
        output = os.path.join(workdir, "rss-cpu-result.json")
        command = engine_command(
            [
                *storage_only(args.model, args.num_users, args.duration),
                "--cache-dir", workdir,
                "--output", output,
                "--quiet",
                *args.engine_arg,
            ],
            args.python,
        )  # fmt: skip
        usage, wall, result = measured_run(command, output)
    storage = result["tiers"]["storage"]
    moved = storage["bytes_read"] + storage["bytes_written"]
    if not moved:
        die("the run moved no storage bytes: nothing to divide CPU time by")
    peak_mib = usage.ru_maxrss / 1024  # KiB on Linux
    cpu = usage.ru_utime + usage.ru_stime
    per_gib = cpu / (moved / GIB)
    window, engine = result["window"]["seconds"], result["environment"]["io_engine"]
    print(f"wall {wall:.1f} s (window {window:.1f} s)  io engine {engine}")
    print(
        f"storage read {storage['bytes_read'] / GIB:.2f} GiB  written {storage['bytes_written'] / GIB:.2f} GiB  "
        f"({storage['read_bandwidth_bytes_per_s'] / GIB:.3f} / "
        f"{storage['write_bandwidth_bytes_per_s'] / GIB:.3f} GiB/s)"
    )
    print(f"cpu user {usage.ru_utime:.2f} s  sys {usage.ru_stime:.2f} s  peak rss {peak_mib:.0f} MiB")
    print("goals: peak_rss_mib <= 1024, cpu_s_per_gib <= 0.15 (reference: 10445 MiB, 1.14)")
    print(f"peak_rss_mib {peak_mib:.0f} cpu_s_per_gib {per_gib:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
