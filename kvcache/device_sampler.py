"""One host's device counters over the window: read at its start, at every sample and at its end.

The first rank on each host owns the host's sampler (device_counters says where the counters come from); its
report goes into that rank's payload, and the result puts it beside the bytes the host's ranks asked for.
"""

from typing import Dict, List, Optional

from kvcache.device_counters import (
    DISKSTATS,
    MOUNTSTATS,
    Counters,
    Source,
    parse_diskstats,
    parse_nfs_mountstats,
    parse_page_cache,
)
from kvcache.host_probe import MEMINFO, read_text

COUNTER_FIELDS = ("read_bytes", "write_bytes", "read_ops", "write_ops")


class DeviceSampler:
    def __init__(
        self, source: Source, diskstats: str = DISKSTATS, mountstats: str = MOUNTSTATS, meminfo: str = MEMINFO
    ):
        self.source = source
        self._paths = {"diskstats": diskstats, "mountstats": mountstats, "meminfo": meminfo}
        self.timeseries: List[dict] = []
        self._first = self._last = None  # (seconds, device Counters, disks Counters)
        self._page_cache_start: Dict[str, Optional[int]] = {}
        self._page_cache_end: Dict[str, Optional[int]] = {}

    def _read(self, now: float):
        """(now, the device's counters, the disks' summed counters); None counters where unreadable."""
        if self.source.kind == "diskstats":
            stats = parse_diskstats(read_text(self._paths["diskstats"]))
            device = stats.get(self.source.device)
            disks = [stats.get(name) for name in self.source.disks]
            total = None
            if disks and all(disk is not None for disk in disks):
                total = disks[0]
                for disk in disks[1:]:
                    total = total.plus(disk)
            return now, device, total
        if self.source.kind == "nfs":
            return now, parse_nfs_mountstats(read_text(self._paths["mountstats"]), self.source.mount_point), None
        return now, None, None

    def _page_cache(self) -> Dict[str, Optional[int]]:
        return parse_page_cache(read_text(self._paths["meminfo"]))

    @property
    def started(self) -> bool:
        return self._first is not None

    def start(self, now: float) -> None:
        self._first = self._last = self._read(now)
        self._page_cache_start = self._page_cache()

    def sample(self, now: float, elapsed: float) -> None:
        """One time-series point: rates since the last reading, and the page cache now."""
        reading = self._read(now)
        span = max(reading[0] - self._last[0], 1e-9)
        point = {"t_s": round(elapsed, 3), **_rates(reading[1], self._last[1], span), **self._page_cache()}
        self.timeseries.append(point)
        self._last = reading

    def finish(self, now: float) -> None:
        self._last = self._read(now)
        self._page_cache_end = self._page_cache()

    def report(self) -> dict:
        """The host's block for the result: where the counters come from and what they counted in the window."""
        source = self.source
        block = {
            "source": source.kind,
            "device": source.device,
            "disks": list(source.disks),
            "mount_point": source.mount_point,
            "fstype": source.fstype,
            "why_none": source.why_none,
        }
        first, last = self._first, self._last
        seconds = max(last[0] - first[0], 1e-9) if first and last else None
        device = last[1].minus(first[1]) if first and last and first[1] and last[1] else None
        if device is None and source.kind != "none":
            block["why_none"] = f"the counters of {source.device or source.mount_point} could not be read"
        block.update(_totals(device, seconds))
        disks = last[2].minus(first[2]) if first and last and first[2] and last[2] else None
        if disks is not None and list(source.disks) != [source.device]:
            # What reached the disks below the filesystem's device (a mirror writes twice, a RAID stripe adds parity).
            block["disks_read_bytes"], block["disks_write_bytes"] = disks.read_bytes, disks.write_bytes
        block["page_cache"] = {"start": self._page_cache_start, "end": self._page_cache_end}
        block["timeseries"] = self.timeseries
        return block


def _rates(now: Optional[Counters], then: Optional[Counters], span: float) -> dict:
    if now is None or then is None:
        return {"read_bytes_per_s": None, "write_bytes_per_s": None, "utilisation": None, "avg_queue_depth": None}
    delta = now.minus(then)
    return {
        "read_bytes_per_s": round(delta.read_bytes / span),
        "write_bytes_per_s": round(delta.write_bytes / span),
        **_busy(delta, span),
    }


def _busy(delta: Counters, seconds: float) -> dict:
    """Share of the time with an I/O in flight, and the mean number in flight (None for NFS)."""
    if delta.busy_ms is None:
        return {"utilisation": None, "avg_queue_depth": None}
    return {
        "utilisation": round(min(1.0, delta.busy_ms / (seconds * 1000)), 4),
        "avg_queue_depth": round(delta.queue_ms / (seconds * 1000), 3),
    }


def _totals(device: Optional[Counters], seconds: Optional[float]) -> dict:
    if device is None or seconds is None:
        return {**{name: None for name in COUNTER_FIELDS}, "utilisation": None, "avg_queue_depth": None}
    return {**{name: getattr(device, name) for name in COUNTER_FIELDS}, **_busy(device, seconds)}
