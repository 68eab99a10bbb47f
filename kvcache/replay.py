"""Replays: requests from a recorded BurstGPT trace or a ShareGPT dataset instead of synthetic users.

Each kind lives in its own module with the same two functions: `check(config)`, called before anything
is created (a missing or malformed file is a UsageError naming the option), and
`arrivals(config, rank, ranks, settings, report)`, the rank's (offset in seconds from the window start,
or None for "at once"; Request) pairs, in order. `report` is the rank's dict for the result's
`modes.<kind>` block (rows or turns replayed, cycles, ...). As in kv-cache.py, a dataset beats a trace.
"""

import importlib
from typing import Optional

from kvcache.errors import UsageError

MODULES = {"sharegpt": "kvcache.sharegpt", "burst_trace": "kvcache.burst_trace"}


def kind(config) -> Optional[str]:
    """Which replay this run does, or None for synthetic users."""
    if config.dataset_path:
        return "sharegpt"
    if config.use_burst_trace:
        return "burst_trace"
    return None


def _module(config):
    return importlib.import_module(MODULES[kind(config)])


def check(config) -> None:
    if config.burst_trace_path and not config.use_burst_trace:
        # kv-cache.py ignores the path then: a run that looks like a replay and is synthetic misleads.
        raise UsageError(
            "--burst-trace-path", "a trace is replayed only with --use-burst-trace: add it, or drop the path"
        )
    if kind(config) is not None:
        _module(config).check(config)


def arrivals(config, rank: int, ranks: int, settings, report: dict):
    return _module(config).arrivals(config, rank, ranks, settings, report)
