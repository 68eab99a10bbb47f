"""The METADATA file's content (layout.py's docstring names every field): the versions, each rank's host facts
gathered at the start and the end of the run, and the document itself.

Host facts come from the same probes the result's environment and kvcache_cluster_info use (host_probe), so a
submission's cluster description and a run's mount description never disagree.
"""

import os
import platform
import socket
import time
from typing import Any, Dict, List, Mapping, Optional, Sequence

from kvcache.environment import describe_environment
from kvcache.host_probe import filesystem_of, memory
from kvcache.mlperf import layout, rules


def versions(comm, cache_dir: str) -> Dict[str, Optional[str]]:
    """kvcache, python, numpy and the MPI library in use (None without MPI)."""
    environment = describe_environment(cache_dir)
    return {
        "kvcache": environment["engine_version"],
        "python": environment["python"],
        "numpy": environment["numpy"],
        "mpi": comm.library,
    }


def host_facts(rank: int, cache_dir: str) -> Dict[str, Any]:
    """What one rank's host looks like now: name, CPUs, memory, load, kernel, the cache dir's filesystem."""
    try:
        cpus_usable = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not every platform has affinity masks
        cpus_usable = None
    try:
        load = list(os.getloadavg())
    except OSError:
        load = None
    return {
        "rank": rank,
        "host": socket.gethostname(),
        "time_unix_s": time.time(),
        "cpus": os.cpu_count(),
        "cpus_usable": cpus_usable,
        "memory": memory(),
        "load_average": load,
        "kernel": platform.release(),
        "platform": platform.platform(),
        "cache_dir": filesystem_of(cache_dir),
    }


def gather_cluster(comm, cache_dir: str) -> Optional[List[Dict[str, Any]]]:
    """Every rank's host facts, in rank order, on rank 0 (None on the others). Collective."""
    return comm.gather(host_facts(comm.rank, cache_dir))


def document(
    *,
    state: str,
    error: Optional[str],
    category: str,
    organization: str,
    system_name: str,
    model: str,
    timestamp: str,
    run_options: Sequence[str],
    trials: int,
    delay_s: float,
    parameters: Mapping[str, dict],
    changes: Mapping[str, list],
    schedule: List[dict],
    delays: List[dict],
    command: List[str],
    versions_: Mapping[str, Any],
    hosts: List[str],
    cluster: Mapping[str, Any],
    started_unix_s: float,
    ended_unix_s: Optional[float],
) -> Dict[str, Any]:
    """The METADATA of one run directory (`run_options`: its options, in run order)."""
    return {
        "schema": layout.METADATA_SCHEMA,
        "benchmark": layout.BENCHMARK_DIR,
        "state": state,
        "error": error,
        "category": category,
        "organization": organization,
        "system_name": system_name,
        "model": model,
        "timestamp": timestamp,
        "options": list(run_options),
        "trials": trials,
        "delay_s": delay_s,
        "rules": {
            "name": rules.RULES,
            "trials": rules.TRIALS,
            "delay_s": rules.DELAY_S,
            "closed_parameters": {o: rules.closed_parameters(o) for o in run_options},
        },
        "parameters": {o: dict(parameters[o]) for o in run_options},
        "changes": {o: list(changes[o]) for o in run_options},
        "schedule": list(schedule),
        "delays": list(delays),
        "command": list(command),
        "versions": dict(versions_),
        "world_size": len(cluster["start"]),
        "hosts": hosts,
        "cluster": dict(cluster),
        "started_unix_s": started_unix_s,
        "ended_unix_s": ended_unix_s,
    }
