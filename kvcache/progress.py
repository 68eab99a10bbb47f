"""What a run prints on stderr while it runs, by --log-level (the result keeps every warning whatever it is).

- INFO (default): the live view (kvcache.live_view: rank 0, on a terminal or with --progress live; never
  with --quiet or --progress off) and warnings.
- DEBUG: each rank's setup and one line per time-series sample instead of the live view, on any stream (logs
  are not terminals), and warnings.
- WARNING: warnings only. ERROR, CRITICAL: no warnings either. Errors are always printed.

The level names are Python's logging levels, and are compared as those.
"""

import logging

from kvcache import live_view
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


class SampleLines:
    """DEBUG: one line per time-series sample with every field, starting with `label` (logs are not terminals)."""

    def __init__(self, stream, label: str):
        self.stream = stream
        self.label = label

    def update(self, _elapsed: float, point: dict) -> None:
        fields = " ".join(f"{key}={value}" for key, value in point.items())
        self.stream.write(f"{self.label}sample {fields}\n")
        self.stream.flush()

    def tick(self, _elapsed: float) -> None:
        """Lines come with the samples only."""

    def done(self) -> None:
        """Every line is already whole."""


def is_terminal(stream) -> bool:
    return hasattr(stream, "isatty") and stream.isatty()


def for_rank(config, rank: int, size: int, stream):
    """What this rank shows of its progress (None: nothing), by --quiet, --log-level and --progress: DEBUG lines
    on every rank; at INFO rank 0's live view (auto: when its stderr is a terminal; live: always)."""
    if config.quiet:
        return None
    if shows(config.log_level, logging.DEBUG):
        return SampleLines(stream, debug_prefix(rank))
    if rank != 0 or config.progress == "off" or not shows(config.log_level, logging.INFO):
        return None
    if config.progress == "auto" and not is_terminal(stream):
        return None
    if not live_view.available():  # auto on a terminal (live was refused before the run)
        stream.write(f"kvcache: no live progress: it needs the rich package ({live_view.INSTALL_HINT})\n")
        return None
    return live_view.LiveView(stream, config.duration, size, config.num_users, config.stats_interval)
