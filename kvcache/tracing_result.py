"""The block-layer latency of an --enable-latency-tracing run, pooled over its hosts: for the headline and the page.

bpftrace keys its histograms by the kernel's rwbs flags (R read, W write, D discard, F flush, then S sync, M meta,
A read-ahead ...). Reads and writes are what the engine asked for, so each class pools the keys that hold its
letter (R, RA, RM / W, WS, FWS); discards and flushes are the filesystem's own and are left out of the line.
"""

from typing import Dict, List, Optional, Tuple

from kvcache.latency_tracing import bucket_percentiles

OP_CLASSES = (("read", "R"), ("write", "W"))


def op_class(rwbs: str) -> Optional[str]:
    """read, write or None (discard, flush, anything else) for one rwbs key."""
    if rwbs.startswith("D"):  # a discard's flags may follow its D (DS); it is not a write
        return None
    for name, letter in OP_CLASSES:
        if letter in rwbs:
            return name
    return None


def pooled_buckets(block: Optional[dict], histogram: str = "d2c_us") -> Dict[str, List[dict]]:
    """{read|write: [{min, max, count}] in bucket order}: the class's keys summed over every host."""
    counts: Dict[str, Dict[Tuple[int, int], int]] = {}
    for host in (block or {}).get("per_host", []):
        for rwbs, entry in (host.get(histogram) or {}).items():
            name = op_class(rwbs)
            if name is None:
                continue
            buckets = entry["buckets"] if isinstance(entry, dict) else entry
            pooled = counts.setdefault(name, {})
            for bucket in buckets:
                span = (int(bucket["min"]), int(bucket["max"]))
                pooled[span] = pooled.get(span, 0) + int(bucket["count"])
    return {
        name: [{"min": low, "max": high, "count": count} for (low, high), count in sorted(pooled.items())]
        for name, pooled in counts.items()
    }


def _microseconds(bound: int) -> str:
    """A bucket's upper bound, exclusive (bpftrace's max is the last value inside), in µs or ms."""
    limit = bound + 1
    return f"{limit} µs" if limit < 1000 else f"{limit / 1000:.3g} ms"


def tracing_line(block: Optional[dict]) -> Optional[str]:
    """The headline's line on the traced device latency; None for a run without tracing."""
    if not block:
        return None
    hosts = block["per_host"]
    disks = sorted({disk for host in hosts for disk in host["disks"]})
    where = ", ".join(disks) if len(hosts) == 1 else f"{len(hosts)} hosts"
    pooled = pooled_buckets(block)
    parts = []
    for name, _letter in OP_CLASSES:
        buckets = pooled.get(name)
        requests = sum(b["count"] for b in buckets or [])
        if not requests:
            continue
        found = bucket_percentiles(buckets)
        parts.append(
            f"{name} p50 < {_microseconds(found['p50'])}, p99 < {_microseconds(found['p99'])} ({requests} requests)"
        )
    if not parts:
        errors = sorted({host["error"] for host in hosts if host.get("error")})
        why = errors[0] if errors else "no read or write reached the device"
        return f"block-layer latency ({where}, bpftrace): no histogram ({why})"
    return f"block-layer latency ({where}, bpftrace, device time per request): {'; '.join(parts)}"
