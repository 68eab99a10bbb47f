"""What a run prints on stderr while it runs, by --log-level (the result keeps every warning whatever it is).

- INFO (default): the live progress line (rank 0, on a terminal, not with --quiet) and warnings.
- DEBUG: also each rank's setup and one line per time-series sample, on any stream (logs are not terminals).
- WARNING: warnings only. ERROR, CRITICAL: no warnings either. Errors are always printed.

The level names are Python's logging levels, and are compared as those.
"""

import logging
import sys
from typing import Optional

from kvcache.units import GIB


def shows(log_level: str, level: int) -> bool:
    """Whether a run at `log_level` (--log-level) prints messages of `level` (logging.DEBUG, ...)."""
    return logging.getLevelName(log_level) <= level


def debug_prefix(rank: int) -> str:
    return f"kvcache: debug: rank {rank}: "


def setup_line(tiers, gpu_backend: str, io_engine: str, seed: int, rank_dir: str) -> str:
    """One rank's setup for DEBUG: each tier with its capacity, and what the rank runs with."""
    described = []
    for tier in tiers:
        about = tier.describe()
        extra = " simulated" if about.get("simulated") else ""
        described.append(f"{tier.name} {about['capacity_bytes'] / GIB:.3f} GiB{extra}")
    return (
        f"setup: tiers {', '.join(described)}; gpu backend {gpu_backend}; io engine {io_engine}; "
        f"seed {seed}; rank dir {rank_dir}"
    )


class Progress:
    """The run's progress, one update per time-series sample: a live line rewritten in place, or (DEBUG)
    one line per sample, starting with `label`."""

    def __init__(self, stream=None, label: str = "", lines: bool = False):
        self.stream = stream or sys.stderr
        self.label = label
        self.lines = lines
        self._shown = False

    @staticmethod
    def wanted(quiet: bool, rank: int, stream=None) -> bool:
        """The live line: on rank 0's terminal only, never with --quiet."""
        stream = stream or sys.stderr
        return not quiet and rank == 0 and hasattr(stream, "isatty") and stream.isatty()

    @classmethod
    def for_rank(cls, config, rank: int, size: int, stream) -> Optional["Progress"]:
        """What this rank shows of its progress under config.log_level and config.quiet (None: nothing)."""
        if config.quiet:
            return None
        if shows(config.log_level, logging.DEBUG):
            return cls(stream, debug_prefix(rank), lines=True)
        if shows(config.log_level, logging.INFO) and cls.wanted(False, rank, stream):
            return cls(stream, "rank 0 " if size > 1 else "")
        return None

    def update(self, elapsed: float, duration: float, point: dict) -> None:
        if self.lines:
            # Every field of the sample, as the result's timeseries[] records it.
            fields = " ".join(f"{key}={value}" for key, value in point.items())
            self.stream.write(f"{self.label}sample {fields}\n")
            self.stream.flush()
            return
        p95 = point["storage_read_p95_ms"]
        # An autoscaling run's point carries the users active now (the search changes them step by step).
        users = f"users {point['users']:>5}  " if "users" in point else ""
        line = (
            f"{self.label}{elapsed:6.1f}/{duration:.0f} s  {users}requests {point['requests']:>7}  "
            f"storage read {point['storage_read_bytes_per_s'] / GIB:6.2f} GiB/s  "
            f"write {point['storage_write_bytes_per_s'] / GIB:6.2f} GiB/s  "
            f"read p95 {'-' if p95 is None else f'{p95:.1f} ms'}"
        )
        self.stream.write("\r\033[K" + line)
        self.stream.flush()
        self._shown = True

    def done(self) -> None:
        if self._shown:
            self.stream.write("\n")
            self.stream.flush()
