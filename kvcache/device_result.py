"""The result's `device` block: each host's device counters beside the bytes its ranks asked for, and the sums.

A ratio is the device's bytes over the engine's storage-tier bytes in the same window: about 1 for reads that the
storage itself served; well below 1 when a cache in the path served them; above 1 for writes, the filesystem's
journal and metadata (write amplification).
"""

from typing import List, Optional

from kvcache.device_counters import READ_BYTES_TO_JUDGE, READ_SERVED_WARNING


def _ratio(device: Optional[int], engine: int) -> Optional[float]:
    return round(device / engine, 4) if device is not None and engine else None


def device_block(payloads: List[dict]) -> Optional[dict]:
    """None when no rank sampled its host's device (an older engine, a traced run, a run that failed early)."""
    hosts = []
    for payload in payloads:
        report = payload.get("device")
        if report is None:
            continue
        ranks = [p for p in payloads if p["host"] == payload["host"]]
        engine_read = sum(p["metrics"]["bytes"]["storage.read"] for p in ranks)
        engine_write = sum(p["metrics"]["bytes"]["storage.write"] for p in ranks)
        entry = {"host": payload["host"], "ranks": [p["rank"] for p in ranks]}
        entry.update({k: v for k, v in report.items() if k != "timeseries"})
        entry.update(
            engine_read_bytes=engine_read,
            engine_write_bytes=engine_write,
            read_ratio=_ratio(report["read_bytes"], engine_read),
            write_ratio=_ratio(report["write_bytes"], engine_write),
            timeseries=report["timeseries"],
        )
        hosts.append(entry)
    if not hosts:
        return None
    counted = [h for h in hosts if h["read_bytes"] is not None]
    sums = {
        name: sum(h[name] for h in counted) if counted else None
        for name in ("read_bytes", "write_bytes", "engine_read_bytes", "engine_write_bytes")
    }
    return {
        **sums,
        "read_ratio": _ratio(sums["read_bytes"], sums["engine_read_bytes"] or 0),
        "write_ratio": _ratio(sums["write_bytes"], sums["engine_write_bytes"] or 0),
        "hosts_counted": len(counted),
        "hosts_without_counters": sorted({h["host"] for h in hosts if h["read_bytes"] is None}),
        "per_host": hosts,
    }


def device_warnings(block: Optional[dict]) -> List[str]:
    """One line per host whose device served clearly fewer bytes than the engine read."""
    lines = []
    for host in (block or {}).get("per_host", []):
        ratio = host["read_ratio"]
        if ratio is None or host["engine_read_bytes"] < READ_BYTES_TO_JUDGE or ratio >= READ_SERVED_WARNING:
            continue
        lines.append(
            f"on {host['host']} the device ({host['device'] or host['mount_point']}) delivered {ratio:.0%} of the "
            "bytes the engine read: a cache in the path (the page cache with --io-engine buffered, a controller "
            "or array cache) served the rest, so the read figures are not the storage's own"
        )
    return lines


def _times(ratio: Optional[float]) -> str:
    return "n/a" if ratio is None else f"{ratio:.2f}x"


def device_line(block: Optional[dict]) -> Optional[str]:
    """The headline's line on what the devices saw; None for a result without the block."""
    if not block:
        return None
    hosts = block["per_host"]
    if not block["hosts_counted"]:
        return f"device: no counters ({hosts[0]['why_none']})"
    counted = [h for h in hosts if h["read_bytes"] is not None]
    if len(hosts) == 1:
        where = hosts[0]["device"] or hosts[0]["mount_point"]
    else:
        where = f"{len(counted)} of {len(hosts)} hosts"
    busy = [h["utilisation"] for h in counted if h["utilisation"] is not None]
    depth = [h["avg_queue_depth"] for h in counted if h["avg_queue_depth"] is not None]
    load = f", {max(busy):.0%} busy, queue depth {max(depth):.1f}" if busy and depth else ""
    most = " (busiest host)" if len(counted) > 1 and load else ""
    return (
        f"device ({where}): read {_times(block['read_ratio'])}, write {_times(block['write_ratio'])} "
        f"the engine's bytes{load}{most}"
    )
