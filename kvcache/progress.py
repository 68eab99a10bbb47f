"""The live progress line: on a terminal only, rank 0 only, never with --quiet."""

import sys

from kvcache.units import GIB


class Progress:
    def __init__(self, stream=None, label: str = ""):
        self.stream = stream or sys.stderr
        self.label = label
        self._shown = False

    @staticmethod
    def wanted(quiet: bool, rank: int, stream=None) -> bool:
        stream = stream or sys.stderr
        return not quiet and rank == 0 and hasattr(stream, "isatty") and stream.isatty()

    def update(self, elapsed: float, duration: float, point: dict) -> None:
        p95 = point["storage_read_p95_ms"]
        line = (
            f"{self.label}{elapsed:6.1f}/{duration:.0f} s  requests {point['requests']:>7}  "
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
