"""--enable-latency-tracing: block-layer latency and size histograms of the cache dir's disks during the window.

The first rank on each host runs bpftrace on the block tracepoints of the disks under its cache dir: for every
request, the time from its issue to the device until its completion (D2C, as blktrace calls it) and its size, by
the kernel's rwbs flags (R read, W write, S sync, F flush, ...). It starts before the start barrier, once every
probe is attached, and stops at the window's end. Where bpftrace cannot run (not root, no bpftrace, no tracefs, a
cache dir on no block device) the run exits 2 before anything is created, saying why.
"""

import json
import os
import shutil
import signal
import subprocess
import time
from typing import Dict, List, Optional

from kvcache.device_counters import find_source
from kvcache.errors import UsageError

OPTION = "--enable-latency-tracing"
TRACEFS_ROOTS = ("/sys/kernel/tracing", "/sys/kernel/debug/tracing")
EVENTS = ("block/block_rq_issue", "block/block_rq_complete")
ATTACH_TIMEOUT_S = 60.0  # bpftrace compiles its program first: seconds on a loaded host
STOP_TIMEOUT_S = 30.0
PERCENTILES = (50, 95, 99)


def _dev_numbers(disks: List[str], sys_root: str) -> List[int]:
    """The kernel's dev_t (major << 20 | minor, as the block tracepoints report it) of each disk."""
    numbers = []
    for disk in disks:
        try:
            with open(f"{sys_root}/class/block/{disk}/dev", encoding="ascii") as handle:
                major, minor = (int(part) for part in handle.read().strip().split(":"))
        except (OSError, ValueError):
            continue
        numbers.append(major << 20 | minor)
    return numbers


def refusal(cache_dir: str, sys_root: str = "/sys", tracefs_roots=TRACEFS_ROOTS) -> Optional[str]:
    """Why block-layer tracing cannot run for this cache dir on this host; None when it can."""
    if os.geteuid() != 0:
        return "needs root (bpftrace loads BPF programs)"
    if shutil.which("bpftrace") is None:
        return "needs bpftrace on PATH (apt install bpftrace)"
    if not any(all(os.path.isdir(os.path.join(root, "events", event)) for event in EVENTS) for root in tracefs_roots):
        return (
            "needs tracefs with the block tracepoints (mount -t tracefs nodev /sys/kernel/tracing); this kernel "
            "shows none"
        )
    source = find_source(cache_dir, sys_root=sys_root)
    if source.kind != "diskstats":
        return f"needs a cache dir on a block device; {cache_dir} is on {source.fstype or 'no block device'}"
    if not _dev_numbers(list(source.disks), sys_root):
        return f"cannot read the device numbers of {', '.join(source.disks)} under {sys_root}/class/block"
    return None


def check(config, cache_dir: str) -> None:
    """Before anything is created: exit 2 naming the option and the reason where tracing cannot run."""
    if config.enable_latency_tracing:
        reason = refusal(cache_dir)
        if reason:
            raise UsageError(OPTION, reason)


def program(devs: List[int]) -> str:
    """The bpftrace program: D2C microseconds and request bytes of the given disks, by rwbs."""
    match = " || ".join(f"args->dev == {dev}" for dev in devs)
    return (
        f"tracepoint:block:block_rq_issue /{match}/ {{ @issued[args->dev, args->sector] = nsecs; "
        f"@bytes[args->rwbs] = hist(args->bytes); }}\n"
        "tracepoint:block:block_rq_complete /@issued[args->dev, args->sector]/ { "
        "@d2c_us[args->rwbs] = hist((nsecs - @issued[args->dev, args->sector]) / 1000); "
        "delete(@issued[args->dev, args->sector]); }\n"
        "END { clear(@issued); }\n"
    )


def parse_output(text: str) -> Dict[str, Dict[str, List[dict]]]:
    """bpftrace -f json lines -> {map name without @: {key: [{min, max, count}, ...]}} of its histograms."""
    maps: Dict[str, Dict[str, List[dict]]] = {}
    for line in text.splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if not isinstance(record, dict) or record.get("type") != "hist" or not isinstance(record.get("data"), dict):
            continue
        for name, value in record["data"].items():
            keyed = value if isinstance(value, dict) else {"": value}
            maps.setdefault(name.lstrip("@"), {}).update(
                {str(key): [b for b in buckets if isinstance(b, dict)] for key, buckets in keyed.items()}
            )
    return maps


def bucket_percentiles(buckets: List[dict]) -> Dict[str, Optional[int]]:
    """p50/p95/p99 as the upper bound of the log2 bucket that holds them (at most that many)."""
    total = sum(int(b.get("count", 0)) for b in buckets)
    found: Dict[str, Optional[int]] = {}
    for percentile in PERCENTILES:
        wanted, seen, bound = total * percentile / 100, 0, None
        for bucket in buckets:
            seen += int(bucket.get("count", 0))
            if total and seen >= wanted:
                bound = int(bucket.get("max", 0))
                break
        found[f"p{percentile}"] = bound
    return found


class LatencyTracer:
    """bpftrace running on this host's cache dir disks: start() before the window, stop() after it."""

    def __init__(self, cache_dir: str, sys_root: str = "/sys"):
        source = find_source(cache_dir, sys_root=sys_root)
        self.disks = list(source.disks)
        self.devs = _dev_numbers(self.disks, sys_root)
        self.process: Optional[subprocess.Popen] = None
        self.report: Optional[dict] = None

    def start(self) -> None:
        """Start bpftrace and wait until its probes are attached (its first JSON line says so)."""
        argv = [shutil.which("bpftrace") or "bpftrace", "-f", "json", "-e", program(self.devs)]
        self.process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + ATTACH_TIMEOUT_S
        while time.monotonic() < deadline:
            line = self.process.stdout.readline()
            if not line:  # it exited
                error = self.process.stderr.read().strip()[-300:]
                raise RuntimeError(f"bpftrace did not start: {error or 'no output'}")
            if '"attached_probes"' in line:
                return
        self.stop()
        raise RuntimeError(f"bpftrace attached no probe within {ATTACH_TIMEOUT_S:.0f} s")

    def stop(self) -> Optional[dict]:
        """SIGINT makes bpftrace print its maps and exit; the report is made of them."""
        if self.process is None or self.report is not None:
            return self.report
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
        try:
            output, error = self.process.communicate(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.process.kill()
            output, error = self.process.communicate()
        maps = parse_output(output)
        self.report = {
            "tool": "bpftrace",
            "disks": self.disks,
            "d2c_us": {
                op: {"buckets": buckets, **bucket_percentiles(buckets)}
                for op, buckets in maps.get("d2c_us", {}).items()
            },
            "request_bytes": maps.get("bytes", {}),
            "error": None if maps else (error.strip()[-300:] or "bpftrace printed no histogram"),
        }
        return self.report
