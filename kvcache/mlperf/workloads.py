"""The MLPerf Storage KV-cache rules' figures, importing nothing of the project: the option table
(kvcache/options.py) builds the defaults and help of --option, --trials and --delay from them, and
kvcache/mlperf/rules.py everything else.

Figures from the MLPerf Storage KV-cache rules and `mlpstorage`'s options (see the README's MLPerf section).
"""

from typing import Any, Dict

TRIALS = 3
DELAY_S = 90.0  # rest before each option after the first
OPTION_ORDER = ("1", "2", "3")

# What every CLOSED option runs (the rules' values, and kv-cache.py's own users: the open loop the rules measured).
COMMON: Dict[str, Any] = {
    "duration": 300.0,
    "gpu_mem_gb": 0.0,
    "generation_mode": "none",
    "seed": 42,
    "user_loop": "open",
}
WORKLOADS: Dict[str, Dict[str, Any]] = {
    "1": {"model": "llama3.1-8b", "num_users": 200, "cpu_mem_gb": 0.0, "max_concurrent_allocs": 16},
    "2": {"model": "llama3.1-8b", "num_users": 100, "cpu_mem_gb": 4.0, "max_concurrent_allocs": 16},
    "3": {"model": "llama3.1-70b-instruct", "num_users": 70, "cpu_mem_gb": 0.0, "max_concurrent_allocs": 4},
}


def option_help() -> str:
    """--option's help: each workload in a few words."""
    each = ", ".join(
        f"{o} ({w['model']}, {w['num_users']} users, CPU tier {w['cpu_mem_gb']:g} GiB)" for o, w in WORKLOADS.items()
    )
    return f"the rules' workload: {each}, or all of them in that order"
