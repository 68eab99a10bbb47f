#!/usr/bin/env python
"""How long kvcache_command takes to build an MPI launch (prefix + hostfile) for 1 to 10,000 hosts.

Usage: python bench/bench_mpi_prefix.py [--repeat N] [--max-seconds S]
Prints the best and median time of N builds per case; exits 1 when the 10,000-host build is
slower than --max-seconds (default 1.0). Only the pure builders are timed: the module adds one
`python -m kvcache describe` call and the hostfile write.
"""

import argparse
import atexit
import os
import shutil
import statistics
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _import_builders():
    """Import the collection's module_utils, from a checkout anywhere (a temporary symlink farm if needed)."""
    parts = ROOT.split(os.sep)
    if parts[-3:] == ["ansible_collections", "storagebench", "kvcache"]:
        sys.path.insert(0, os.sep.join(parts[:-3]))
    else:
        farm = tempfile.mkdtemp(prefix="kvcache-bench-")
        atexit.register(shutil.rmtree, farm, True)
        namespace = os.path.join(farm, "ansible_collections", "storagebench")
        os.makedirs(namespace)
        os.symlink(ROOT, os.path.join(namespace, "kvcache"))
        sys.path.insert(0, farm)
    # pylint: disable=import-outside-toplevel
    from ansible_collections.storagebench.kvcache.plugins.module_utils import engine_command, mpi_launch

    return engine_command, mpi_launch


def _time(function, repeat):
    samples = []
    for _index in range(repeat):
        start = time.perf_counter()
        function()
        samples.append(time.perf_counter() - start)
    return min(samples), statistics.median(samples)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5, help="builds per case (default 5)")
    parser.add_argument("--max-seconds", type=float, default=1.0, help="limit for the 10,000-host build (default 1.0)")
    args = parser.parse_args(argv)
    engine_command, mpi_launch = _import_builders()

    engine_argv, _warnings = engine_command.build_engine_argv(
        "/opt/storagebench-kvcache/venv/bin/python",
        "run",
        {"model": "llama3.1-8b", "num_users": 100, "duration": 600.0, "cache_dir": "/mnt/kvcache"},
    )
    command_chars = len(" ".join(engine_argv))
    print(f"{'hosts':>6}  {'flavor':<8} {'np':>6}  {'hostfile':<8} {'best ms':>9} {'median ms':>9}")
    slowest_10k = 0.0
    for count in (1, 64, 65, 1000, 10000):
        hosts = [f"node{i:05d}.cluster.example.com" for i in range(count)]
        for flavor in (mpi_launch.OPENMPI, mpi_launch.MPICH):

            def build(hosts=hosts, flavor=flavor):
                return mpi_launch.build_mpi_prefix(
                    hosts, flavor=flavor, processes_per_host=4, allow_run_as_root=True, command_chars=command_chars
                )

            launch = build()
            best, median = _time(build, args.repeat)
            used = "yes" if launch["hostfile"] else "no"
            np_ = launch["num_processes"]
            print(f"{count:>6}  {flavor:<8} {np_:>6}  {used:<8} {best * 1e3:>9.2f} {median * 1e3:>9.2f}")
            if count == 10000:
                slowest_10k = max(slowest_10k, median)
                if launch["hostfile"] is None:
                    print("10,000 hosts did not use a hostfile", file=sys.stderr)
                    return 1
    verdict = "ok" if slowest_10k <= args.max_seconds else "TOO SLOW"
    print(f"10,000 hosts: median {slowest_10k:.3f} s per build (goal < {args.max_seconds:g} s): {verdict}")
    return 0 if verdict == "ok" else 1


if __name__ == "__main__":
    sys.exit(main())
