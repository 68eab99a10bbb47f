"""The live view of a run on rank 0's terminal (rich): elapsed and remaining time, users, requests, and each
tier's read and write bandwidth and p95, redrawn every second. Under MPI it shows the fleet: every rank sends
rank 0 its latest time-series sample (at most once a second, a non-blocking message: kvcache.mpi), and the
view pools them as the result does (bytes summed, the worst rank's p95).

rich is the [live] extra: imported only when a view is made, so the engine runs without it.
"""

import importlib.util
from typing import Dict, Optional

from kvcache.errors import UsageError
from kvcache.metrics import SERIES, TIERS
from kvcache.units import GIB

REFRESH_S = 1.0  # the view is redrawn this often, whatever --stats-interval is
# A rank whose latest sample is older than this many intervals (of at least REFRESH_S) is not reporting.
LATE_AFTER_SAMPLES = 3
INSTALL_HINT = "pip install 'storagebench-kvcache[live]'"


def available() -> bool:
    return importlib.util.find_spec("rich") is not None


def check(config) -> None:
    """--progress live asks for the view: refuse what contradicts it before anything is created."""
    if config.progress != "live":
        return
    if config.quiet:
        raise UsageError("--progress", "live contradicts --quiet (no progress at all): give one of them")
    if config.log_level != "INFO":
        raise UsageError(
            "--progress",
            f"live is shown at --log-level INFO, not {config.log_level} (DEBUG prints a line per sample instead, "
            "WARNING and above no progress)",
        )
    if not available():
        raise UsageError("--progress", f"live needs the rich package, which is not installed: {INSTALL_HINT}")


def pooled(points: Dict[int, dict], elapsed: float, stale_after: float) -> dict:
    """The fleet at `elapsed` from each rank's latest sample: requests summed over every rank; bandwidth and
    requests/s summed, p95 the worst, over the ranks whose sample is fresh (within `stale_after` seconds)."""
    fresh = {rank: point for rank, point in points.items() if elapsed - point["t_s"] <= stale_after}
    fleet = {
        "ranks_reporting": len(fresh),
        "requests": sum(point["requests"] for point in points.values()),
        "requests_per_s": sum(point["requests_per_s"] for point in fresh.values()),
        # An autoscaling run's samples carry the users active now; the others have none (the view knows them).
        "users": sum(p["users"] for p in points.values()) if all("users" in p for p in points.values()) else None,
    }
    for _name, bandwidth, p95 in SERIES:
        fleet[bandwidth] = sum(point[bandwidth] for point in fresh.values())
        fleet[p95] = max((point[p95] for point in fresh.values() if point[p95] is not None), default=None)
    storage = {
        rank: point["storage_read_bytes_per_s"] + point["storage_write_bytes_per_s"] for rank, point in fresh.items()
    }
    fleet["slowest"] = min(storage.items(), key=lambda item: (item[1], item[0])) if len(storage) > 1 else None
    return fleet


def _gib(value: float) -> str:
    return f"{value / GIB:.2f}"


def _ms(value: Optional[float]) -> str:
    return "-" if value is None else f"{value:.1f} ms"


class LiveView:
    """Rank 0's view: `update` with its own samples, `fleet_point` with the other ranks', `tick` every control
    tick (redraws once a second), `done` at the window's end or on a failure (the last frame stays on the
    terminal)."""

    def __init__(self, stream, duration: float, ranks: int, users_per_rank: int, stats_interval: float):
        from rich.console import Console  # noqa: PLC0415 - the optional [live] extra
        from rich.live import Live  # noqa: PLC0415

        self.duration = duration
        self.ranks = ranks
        self.users_per_rank = users_per_rank
        self.stale_after = LATE_AFTER_SAMPLES * max(stats_interval, REFRESH_S)
        self.points: Dict[int, dict] = {}
        self._drawn_at = -REFRESH_S
        # force_terminal: under mpirun or srun rank 0's stderr is a pipe that the launcher copies to the terminal.
        console = Console(file=stream, force_terminal=True, highlight=False)
        self._live = Live(console=console, auto_refresh=False, redirect_stdout=False, redirect_stderr=False)

    def update(self, elapsed: float, point: dict) -> None:
        self.points[0] = point
        self._draw(elapsed)

    def fleet_point(self, rank: int, point: dict) -> None:
        self.points[rank] = point

    def tick(self, elapsed: float) -> None:
        if elapsed - self._drawn_at >= REFRESH_S:
            self._draw(elapsed)

    def done(self) -> None:
        self._live.stop()  # does nothing when it never started, or was stopped

    def _draw(self, elapsed: float) -> None:
        # Started at the first frame: the lines printed before the window (preconditioning) stay above it.
        if not self._live.is_started:
            self._live.start()
        self._drawn_at = elapsed
        self._live.update(self.frame(elapsed), refresh=True)

    def frame(self, elapsed: float):
        """What the terminal shows at `elapsed`: a status line, the fleet line (several ranks), the tiers."""
        from rich.console import Group  # noqa: PLC0415
        from rich.table import Table  # noqa: PLC0415
        from rich.text import Text  # noqa: PLC0415

        fleet = pooled(self.points, elapsed, self.stale_after) if self.points else None
        left = max(0.0, self.duration - elapsed)
        users = self.users_per_rank * self.ranks if fleet is None or fleet["users"] is None else fleet["users"]
        status = f"kvcache run  {elapsed:.0f} / {self.duration:.0f} s, {left:.0f} s left   users {users}"
        if fleet is not None:
            status += f"   requests {fleet['requests']:,} ({fleet['requests_per_s']:.1f}/s)"
        lines = [Text(status, style="bold")]
        if self.ranks > 1:
            reporting = 0 if fleet is None else fleet["ranks_reporting"]
            about = f"fleet: {self.ranks} ranks, {reporting} reporting"
            if fleet is not None and fleet["slowest"] is not None:
                rank, storage = fleet["slowest"]
                about += f"; slowest storage: rank {rank} at {_gib(storage)} GiB/s"
            lines.append(Text(about))
        table = Table(box=None, pad_edge=False, header_style="bold")
        for heading in ("tier", "read GiB/s", "read p95", "write GiB/s", "write p95"):
            table.add_column(heading, justify="left" if heading == "tier" else "right")
        for tier in TIERS:
            if fleet is None:
                table.add_row(tier, "-", "-", "-", "-")
                continue
            table.add_row(
                tier,
                _gib(fleet[f"{tier}_read_bytes_per_s"]),
                _ms(fleet[f"{tier}_read_p95_ms"]),
                _gib(fleet[f"{tier}_write_bytes_per_s"]),
                _ms(fleet[f"{tier}_write_p95_ms"]),
            )
        return Group(*lines, table)
