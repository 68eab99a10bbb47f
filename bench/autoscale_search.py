#!/usr/bin/env python
"""How many users this machine's disk serves: the autoscaler's qos answer and its capacity answer.

Runs, one after the other, `kvcache run --model llama3.1-8b --gpu-mem-gb 0 --cpu-mem-gb 0
--enable-autoscaling --autoscaler-mode qos` and then `--autoscaler-mode capacity`, with the default QoS
targets, each as a child process with its own --output, steps of --step-s seconds and a window of at most
--duration seconds (the search ends the window earlier when it has its answer). With no GPU or CPU tier
every entry lives on the storage tier, so the answer is the disk's.

Per mode it prints the answer (the result's `autoscaling.summary`), the step table (users per rank,
storage read + write GiB/s, p95 end-to-end per QoS class, what the autoscaler did) and how long the
search took: `search_s` (window start to the end of the last step) beside the child's wall time (start,
sizing and aggregation included).

Last line: `qos max_users X search_s S capacity peak_users P knee_users K search_s S` (per rank; "none"
where the search found no answer).
"""

import argparse
import os
import sys

from _common import GIB, add_engine_arguments, engine_command, measured_run, work_directory

MODES = ("qos", "capacity")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description="The autoscaler's qos and capacity answers on this machine's disk, and how long each took.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--cache-dir", help="where to make the runs' temp dir, removed at the end (default /var/tmp)")
    parser.add_argument("--model", default="llama3.1-8b", help="engine --model")
    parser.add_argument("--duration", type=float, default=300.0, help="longest window of each search, seconds")
    parser.add_argument("--step-s", type=float, default=5.0, help="engine --autoscaler-step-s")
    parser.add_argument("--num-users", type=int, default=4, help="users per rank of the first step")
    parser.add_argument("--max-users", type=int, help="engine --autoscaler-max-users (default: the engine's)")
    parser.add_argument("--modes", default=",".join(MODES), help="the searches to run, in order")
    add_engine_arguments(parser, "--engine-arg=--target-saturation --engine-arg=1")
    args = parser.parse_args(argv)
    args.modes = [mode.strip() for mode in args.modes.split(",") if mode.strip()]
    if not args.modes or any(mode not in MODES for mode in args.modes):
        parser.error(f"--modes: give a comma-separated list of {', '.join(MODES)}")
    if args.step_s < 0.5 or args.duration < 2 * args.step_s:
        parser.error("--step-s must be at least 0.5 and --duration at least 2 x --step-s")
    if args.num_users < 1 or (args.max_users is not None and args.max_users < 1):
        parser.error("--num-users and --max-users must be positive")
    return args


def search(args, mode: str, workdir: str):
    """Run one search; return (its autoscaling block, the child's wall seconds, the window's seconds)."""
    output = os.path.join(workdir, f"autoscale-{mode}-result.json")
    cache_dir = os.path.join(workdir, f"cache-{mode}")
    os.mkdir(cache_dir)
    limits = ["--autoscaler-max-users", str(args.max_users)] if args.max_users is not None else []
    command = engine_command(
        [
            "--model", args.model,
            "--num-users", str(args.num_users),
            "--gpu-mem-gb", "0",
            "--cpu-mem-gb", "0",
            "--enable-autoscaling",
            "--autoscaler-mode", mode,
            "--autoscaler-step-s", str(args.step_s),
            *limits,
            "--duration", str(args.duration),
            "--cache-dir", cache_dir,
            "--output", output,
            "--quiet",
            *args.engine_arg,
        ],
        args.python,
    )  # fmt: skip
    _usage, wall, result = measured_run(command, output)
    return result["autoscaling"], wall, result["window"]["seconds"]


def class_names(block: dict) -> list:
    """The QoS classes any step measured, in the order they first appear."""
    names: list = []
    for step in block["steps"]:
        names += [name for name in step["p95_ms"] if name not in names]
    return names


def print_steps(block: dict) -> None:
    classes = class_names(block)
    header = f"{'step':>4} {'t_s':>7} {'users/rank':>10} {'fleet':>6} {'requests':>8} {'GiB/s':>7}"
    header += "".join(f" {name[:11] + ' p95':>15}" for name in classes)
    print(header + "  action")
    for step in block["steps"]:
        bandwidth = (step["read_bytes_per_s"] + step["write_bytes_per_s"]) / GIB
        line = (
            f"{step['step']:>4} {step['t_end_s']:>7.1f} {step['users_per_rank']:>10} {step['users_total']:>6} "
            f"{step['requests']:>8} {bandwidth:>7.2f}"
        )
        for name in classes:
            p95 = step["p95_ms"].get(name)
            line += f" {('-' if p95 is None else f'{p95:.1f} ms'):>15}"
        print(f"{line}  {step['action']} -> {step['next_users_per_rank']}")


def per_rank(point) -> str:
    return "none" if point is None else str(point["per_rank"])


def main(argv=None) -> int:
    args = parse_args(argv)
    last = []
    with work_directory(args.cache_dir, "kvcache-autoscale-") as workdir:
        for mode in args.modes:
            block, wall, window = search(args, mode, workdir)
            print(f"\n== {mode}: {block['summary']}")
            print_steps(block)
            print(
                f"search {block['search_s']:.1f} s in {len(block['steps'])} steps of {block['step_s']:g} s "
                f"(window {window:.1f} s, wall {wall:.1f} s), ended: {block['ended_because']}"
            )
            if mode == "qos":
                last.append(f"qos max_users {per_rank(block['max_users'])} search_s {block['search_s']:.1f}")
            else:
                last.append(
                    f"capacity peak_users {per_rank(block['peak_bandwidth_users'])} "
                    f"knee_users {per_rank(block['knee_users'])} search_s {block['search_s']:.1f}"
                )
    print(" ".join(last))
    return 0


if __name__ == "__main__":
    sys.exit(main())
