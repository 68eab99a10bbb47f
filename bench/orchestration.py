#!/usr/bin/env python
"""How much time the playbook adds around the benchmark: kvcache_run.yml on localhost, warm.

Usage: python bench/orchestration.py [--repeat N] [--warmup N] [--duration S] [--max-overhead S]

Runs `ansible-playbook -i inventory/localhost.ini playbooks/kvcache_run.yml` (setup -> facts -> datasize ->
run -> report) with a tiny-1b workload of --duration seconds, --warmup times untimed (installs what is
missing, so the timed runs find every host ready), then --repeat times timed. For each timed run:
overhead = playbook wall time - the benchmark's measurement window (the result's window.seconds).
Prints every run and the median; exits 1 when the median overhead is above --max-overhead (default 20 s),
or when a playbook run fails.
"""

import argparse
import atexit
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def collections_path():
    """A directory holding ansible_collections/storagebench/kvcache: the checkout itself, or a temporary link farm."""
    parts = REPO.split(os.sep)
    if parts[-3:] == ["ansible_collections", "storagebench", "kvcache"]:
        return os.sep.join(parts[:-3])
    farm = tempfile.mkdtemp(prefix="kvcache-orchestration-")
    atexit.register(shutil.rmtree, farm, True)
    namespace = os.path.join(farm, "ansible_collections", "storagebench")
    os.makedirs(namespace)
    os.symlink(REPO, os.path.join(namespace, "kvcache"))
    return farm


def run_playbook(args, results_dir, env):
    """One playbook run: (wall seconds, the result JSON)."""
    command = [
        args.ansible_playbook,
        "-i",
        os.path.join(REPO, "inventory", "localhost.ini"),
        os.path.join(REPO, "playbooks", "kvcache_run.yml"),
        "-e",
        json.dumps(
            {
                "kvcache_results_dir": results_dir,
                "kvcache_duration": args.duration,
                "kvcache_cache_dir": args.cache_dir,
            }
        ),
    ]
    start = time.monotonic()
    completed = subprocess.run(command, env=env, cwd=REPO, capture_output=True, text=True, check=False)
    wall = time.monotonic() - start
    if completed.returncode != 0:
        sys.stderr.write(completed.stdout[-4000:] + completed.stderr[-2000:])
        raise SystemExit(f"orchestration.py: error: the playbook failed (exit {completed.returncode})")
    with open(os.path.join(results_dir, "latest", "result.json"), encoding="utf-8") as handle:
        return wall, json.load(handle)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", maxsplit=1)[0])
    parser.add_argument("--repeat", type=int, default=3, help="timed runs (default 3)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed runs first (default 1)")
    parser.add_argument("--duration", type=float, default=10.0, help="benchmark seconds per run (default 10)")
    parser.add_argument("--cache-dir", default="/var/tmp/kvcache-orchestration", help="the run's cache dir")
    parser.add_argument("--max-overhead", type=float, default=20.0, help="goal for the median overhead, seconds")
    parser.add_argument(
        "--ansible-playbook",
        default=os.path.join(os.path.dirname(sys.executable), "ansible-playbook"),
        help="the ansible-playbook to run (default: the one beside this Python)",
    )
    args = parser.parse_args()
    if args.repeat < 1 or args.warmup < 0 or args.duration <= 0:
        parser.error("--repeat must be >= 1, --warmup >= 0, --duration > 0")
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=collections_path(), ANSIBLE_NOCOLOR="1")
    env["PATH"] = os.path.dirname(args.ansible_playbook) + os.pathsep + env.get("PATH", "")
    results_dir = tempfile.mkdtemp(prefix="kvcache-orchestration-results-", dir="/var/tmp")
    atexit.register(shutil.rmtree, results_dir, True)

    for _warmup in range(args.warmup):
        run_playbook(args, results_dir, env)
    overheads = []
    print(f"{'run':>3}  {'wall s':>7}  {'window s':>8}  {'overhead s':>10}")
    for index in range(args.repeat):
        wall, result = run_playbook(args, results_dir, env)
        window = result["window"]["seconds"]
        overheads.append(wall - window)
        print(f"{index + 1:>3}  {wall:7.2f}  {window:8.2f}  {wall - window:10.2f}")
    median = statistics.median(overheads)
    print(
        f"orchestration overhead: median {median:.2f} s (min {min(overheads):.2f}, max {max(overheads):.2f}) "
        f"over {args.repeat} warm run(s) of {args.duration:g} s; goal <= {args.max_overhead:g} s"
    )
    return 0 if median <= args.max_overhead else 1


if __name__ == "__main__":
    sys.exit(main())
