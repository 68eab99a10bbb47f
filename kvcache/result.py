"""Builds the result JSON from every rank's payload: pooled histograms, IOR-style bandwidth, stragglers."""

import statistics
from typing import List, Optional, Tuple

from kvcache import RESULT_SCHEMA as SCHEMA
from kvcache.audit_result import audit_block, audit_warnings
from kvcache.baseline_result import baseline_block
from kvcache.device_result import device_block, device_warnings
from kvcache.metrics import CHUNK_LATENCIES, REQUEST_LATENCIES, SERIES, TIERS, decode, merge, percentile_block
from kvcache.units import GIB
from kvcache.workload import DEFAULT_PROFILE, QOS_COMPLIANCE

RANK_HISTOGRAMS = ("storage.read", "storage.write", "end_to_end", "ttft", "storage_per_request")
# The reference's pass/fail rule for the latency profile (p95 limits, ms).
SLA_LIMITS_MS = (("storage.write", 500.0), ("storage.read", 200.0), ("cpu.read", 150.0))
SLA_MIN_HIT_RATE = 0.30


def _ratio(numerator, denominator) -> Optional[float]:
    return round(numerator / denominator, 6) if denominator else None


def _tier_blocks(latency_hists, byte_counts, counters, seconds, tier_info=None) -> dict:
    tiers = {}
    for tier in TIERS:
        read, written = byte_counts[f"{tier}.read"], byte_counts[f"{tier}.write"]
        block = {
            "bytes_read": read,
            "bytes_written": written,
            "read_bandwidth_bytes_per_s": round(read / seconds) if seconds else 0,
            "write_bandwidth_bytes_per_s": round(written / seconds) if seconds else 0,
            "read_latency_ms": percentile_block(latency_hists[f"{tier}.read"]),
            "write_latency_ms": percentile_block(latency_hists[f"{tier}.write"]),
            # Whole-entry operations (what the reference calls iops; not per second, not chunks).
            "read_ops": counters.get(f"ops.{tier}.read", 0),
            "write_ops": counters.get(f"ops.{tier}.write", 0),
            "entries": counters.get(f"entries.{tier}", 0),
            "peak_entries": counters.get(f"peak_entries.{tier}", 0),
        }
        if tier == "storage":
            for op, name in CHUNK_LATENCIES.items():
                block[f"{op}_chunk_latency_ms"] = percentile_block(latency_hists[name])
        if tier_info:
            block.update(tier_info.get(tier, {}))
        tiers[tier] = block
    return tiers


def _hit_rate(counters) -> dict:
    lookups = counters["lookups"]
    hits = {tier: counters[f"hits.{tier}"] for tier in TIERS}
    block = {
        "overall": _ratio(sum(hits.values()), lookups),
        "lookups": lookups,
        "hits": sum(hits.values()),
        "misses": counters["misses"],
    }
    block.update({tier: _ratio(count, lookups) for tier, count in hits.items()})
    return block


def _requests_and_tokens(counters, seconds):
    requests = {"completed": counters["requests"], "per_second": _ratio(counters["requests"], seconds)}
    tokens = {
        "prefill": counters["prefill_tokens"],
        "generated": counters["generated_tokens"],
        "prefill_per_second": _ratio(counters["prefill_tokens"], seconds),
        "generated_per_second": _ratio(counters["generated_tokens"], seconds),
    }
    return requests, tokens


REFERENCE_THROUGHPUT_DEFINITION = (
    "generated tokens / summed storage I/O seconds of the completed requests (kv-cache.py's "
    "storage_throughput_tokens_per_sec); not a bandwidth: see tiers.storage for bytes / window"
)


def _reference_metrics(counters) -> dict:
    """kv-cache.py's figure, under its own definition, so its users can compare; ours is bytes / window."""
    tokens = counters["generated_tokens"]
    storage_s = counters.get("storage_io_us", 0) / 1e6
    return {
        "storage_throughput_tokens_per_sec": _ratio(tokens, storage_s),
        "tokens": tokens,
        "storage_io_seconds": round(storage_s, 6),
        "definition": REFERENCE_THROUGHPUT_DEFINITION,
    }


def _sum_counters(payloads, field):
    total = {}
    for payload in payloads:
        for name, value in payload["metrics"][field].items():
            total[name] = total.get(name, 0) + value
    return total


def _window_seconds(window) -> float:
    return max(window["end_offset_s"] - window["start_offset_s"], 1e-9)


def _cpu(per_rank: List[dict], storage: dict) -> dict:
    """The ranks' CPU seconds in the window (their processes, every thread) and per GiB the storage moved; None
    where a rank did not measure it (it failed before its window)."""
    seconds = [r["cpu_seconds"] for r in per_rank]
    if not seconds or None in seconds:
        return {"cpu_seconds": None, "cpu_seconds_per_storage_gib": None}
    total = sum(seconds)
    moved = (storage["bytes_read"] + storage["bytes_written"]) / GIB
    return {"cpu_seconds": round(total, 6), "cpu_seconds_per_storage_gib": round(total / moved, 6) if moved else None}


def _per_rank(payload) -> dict:
    metrics = payload["metrics"]
    hists = {name: decode(text) for name, text in metrics["latency"].items()}
    seconds = _window_seconds(payload["window"])
    requests, tokens = _requests_and_tokens(metrics["counters"], seconds)
    return {
        "rank": payload["rank"],
        "host": payload["host"],
        "seed": payload["seed"],
        "cache_namespace": payload["cache_namespace"],
        "status": payload["status"],
        "error": payload.get("error"),
        "window": dict(payload["window"], seconds=round(seconds, 6)),
        "cpu_seconds": payload.get("cpu_s"),
        "tiers": _tier_blocks(hists, metrics["bytes"], metrics["counters"], seconds),
        "latency_ms": {name: percentile_block(hists[name]) for name in REQUEST_LATENCIES},
        "requests": requests,
        "tokens": tokens,
        "hit_rate": _hit_rate(metrics["counters"]),
        "reference_metrics": _reference_metrics(metrics["counters"]),
        "dropped_entries": _dropped_entries(metrics["counters"]),
        "histograms": {name: metrics["latency"][name] for name in RANK_HISTOGRAMS},
        **({"users_timeline": payload["users_timeline"]} if "users_timeline" in payload else {}),
        **({"numa_nodes": payload["numa_nodes"]} if "numa_nodes" in payload else {}),
    }


# The counters the result's `events` block reports (a dotted counter by its first part).
EVENT_COUNTERS = (
    "demotions",
    "evictions",
    "promotions",
    "dropped_entries",
    "rag_chunks_ingested",
    "allocation_waits",
)


def _qos(payloads, workload: dict) -> dict:
    """Per QoS class: its end-to-end latency against its targets, and kv-cache.py's compliance rule (met when
    at least 95 % of its requests ended within its p95 target)."""
    block = {}
    for name, qos in workload["qos_classes"].items():
        pooled = merge(decode(p["metrics"]["qos_e2e"][name]) for p in payloads if name in p["metrics"]["qos_e2e"])
        count = pooled.get_total_count()
        within = sum(p["metrics"]["qos_within_target"].get(name, 0) for p in payloads)
        latency = percentile_block(pooled)
        compliance = _ratio(within, count)
        block[name] = {
            "priority": qos["priority"],
            "requests": count,
            "targets_ms": qos["targets_ms"],
            "end_to_end_ms": latency,
            "within_target": {
                point: None if latency[point] is None else latency[point] <= target
                for point, target in qos["targets_ms"].items()
            },
            "p95_target_compliance": compliance,
            "met": None if compliance is None else compliance >= QOS_COMPLIANCE,
        }
    return block


def _modes(payloads) -> dict:
    """Each mode's rank reports (kvcache.runner.RankRun.reports) side by side, and their total: counts
    summed over ranks, seconds (`*_s`) and passes over a replay (`*_cycles`, which the ranks make together)
    the longest rank's, other values kept when every rank agrees."""
    modes = {}
    for name in sorted({name for p in payloads for name in p.get("reports", {})}):
        per_rank = [dict(p["reports"][name], rank=p["rank"]) for p in payloads if name in p.get("reports", {})]
        total = {}
        for key in per_rank[0]:
            values = [r.get(key) for r in per_rank]
            if key == "rank":
                continue
            if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
                total[key] = max(values) if key.endswith(("_s", "_cycles")) else sum(values)
            elif all(v == values[0] for v in values):
                total[key] = values[0]
        modes[name] = {"total": total, "per_rank": per_rank}
    return modes


def _dropped_entries(counters) -> dict:
    """Entries the workload wrote that no tier could hold: the storage did not hold the workload."""
    count, attempts = counters.get("dropped_entries", 0), counters.get("entry_writes", 0)
    return {"count": count, "entry_writes": attempts, "share_of_writes": _ratio(count, attempts)}


STORAGE_UNMEASURED = (
    "the storage tier was not both read and written: the workload fit in the GPU/CPU tiers, so the storage "
    "was not measured; lower --gpu-mem-gb/--cpu-mem-gb, or add users or duration"
)


TRACE_UNMEASURED = "an --io-trace-log run does no storage I/O: its latencies were not measured"
BYTES_FIELD = {"read": "bytes_read", "write": "bytes_written"}


def measured_directions(config: dict) -> Tuple[str, ...]:
    """What the run's phase asks of the storage: a prefill-only node only writes, a decode-only one only reads."""
    if config.get("prefill_only"):
        return ("write",)
    if config.get("decode_only"):
        return ("read",)
    return ("read", "write")


def storage_unmeasured(directions: Tuple[str, ...]) -> str:
    if directions == ("read", "write"):
        return STORAGE_UNMEASURED
    flag, done = ("--prefill-only", "written") if directions == ("write",) else ("--decode-only", "read")
    return (
        f"the storage tier was not {done} ({flag}): the workload fit in the GPU/CPU tiers, so the storage was "
        "not measured; lower --gpu-mem-gb/--cpu-mem-gb, or add users or duration"
    )


def _sla(tiers, hit_rate, profile, completed, dropped, failed, traced=False, directions=("read", "write")) -> dict:
    """The SLA verdict; `directions` are what the run's phase measures of the storage (measured_directions)."""
    criteria = []
    for name, limit in SLA_LIMITS_MS:
        tier, op = name.split(".")
        p95 = tiers[tier][f"{op}_latency_ms"]["p95"]
        if p95 is not None:
            criteria.append({"name": f"{name} p95", "limit_ms": limit, "value_ms": p95, "passed": p95 < limit})
    # A prefill-only node reads nothing back: its lookups are only first uses of shared prompts, no hit rate.
    if hit_rate["overall"] is not None and "read" in directions:
        criteria.append(
            {
                "name": "hit rate",
                "minimum": SLA_MIN_HIT_RATE,
                "value": hit_rate["overall"],
                "passed": hit_rate["overall"] > SLA_MIN_HIT_RATE,
            }
        )
    # A dropped entry was never stored anywhere: the latencies above did not serve the whole workload.
    criteria.append(
        {"name": "dropped entries", "maximum": 0, "value": dropped["count"], "passed": not dropped["count"]}
    )
    applies = profile == "latency"
    # No verdict on a run that failed (what it measured is not the run that was asked for), on one that
    # completed no request (nothing to judge), or outside the latency profile.
    if not applies:
        reason = "the SLA applies to the latency profile only"
    elif failed:
        reason = "the run failed"
    elif not completed:
        reason = "no request completed"
    elif traced:
        reason = TRACE_UNMEASURED  # a PASS would be about a measurement that did not happen
    elif any(tiers["storage"][f"{op}_latency_ms"]["p95"] is None for op in directions):
        reason = storage_unmeasured(directions)  # the storage criteria cannot be judged: a PASS would say nothing
    else:
        reason = None
    passed = all(c["passed"] for c in criteria) if reason is None else None
    return {"applies": applies, "criteria": criteria, "passed": passed, "no_verdict_reason": reason}


def _stragglers(per_rank, fraction) -> List[int]:
    if len(per_rank) < 2:
        return []
    bandwidth = {
        r["rank"]: (
            r["tiers"]["storage"]["read_bandwidth_bytes_per_s"] + r["tiers"]["storage"]["write_bandwidth_bytes_per_s"]
        )
        for r in per_rank
    }
    median = statistics.median(bandwidth.values())
    return sorted(rank for rank, value in bandwidth.items() if median and value < fraction * median)


def _max_rank_p95(per_rank, name) -> Optional[float]:
    """The worst rank's p95; ranks that measured nothing are left out, and None if none measured it (not 0 ms)."""
    tier, op = name.split(".")
    p95s = [r["tiers"][tier][f"{op}_latency_ms"]["p95"] for r in per_rank]
    return max((p95 for p95 in p95s if p95 is not None), default=None)


def _timeseries(payloads) -> List[dict]:
    """Sum the ranks' samples index by index (their windows start together at the barrier)."""
    longest = max((p["timeseries"] for p in payloads), key=len, default=[])
    merged = []
    for index, point in enumerate(longest):
        same = [p["timeseries"][index] for p in payloads if index < len(p["timeseries"])]
        entry = {"t_s": point["t_s"], "ranks": len(same)}
        bandwidth_fields = [bandwidth for _name, bandwidth, _p95 in SERIES if bandwidth in point]
        for field in ("requests", "requests_per_s", *bandwidth_fields):
            entry[field] = round(sum(s.get(field, 0) for s in same), 3)
        # A p95 does not add up across ranks: the worst rank's is kept.
        for _name, _bandwidth, field in SERIES:
            if field in point:
                p95s = [s[field] for s in same if s.get(field) is not None]
                entry[f"{field}_max_rank"] = max(p95s) if p95s else None
        if "users" in point:  # autoscaling: the fleet's active users
            entry["users"] = sum(s.get("users", 0) for s in same)
        merged.append(entry)
    return merged


def build_result(
    config: dict,
    environment: dict,
    payloads: List[dict],
    broadcast_start: float,
    failure: Optional[tuple] = None,
    autoscaling: Optional[dict] = None,
) -> dict:
    """The result of the run; `autoscaling`: the autoscaler's block (kvcache.autoscaler outcome()), if enabled."""
    payloads = sorted(payloads, key=lambda p: p["rank"])
    failed = [p for p in payloads if p["status"] != "ok"]
    # Offsets from the shared start barrier, not wall clocks: hosts' clocks may disagree.
    start_offset = min(p["window"]["start_offset_s"] for p in payloads)
    end_offset = max(p["window"]["end_offset_s"] for p in payloads)
    rank0 = payloads[0]["window"]
    barrier_unix_s = rank0["start_unix_s"] - rank0["start_offset_s"]  # rank 0's clock at the start barrier
    window = {
        "start_unix_s": barrier_unix_s + start_offset,
        "end_unix_s": barrier_unix_s + end_offset,
        "start_offset_s": start_offset,
        "end_offset_s": end_offset,
        "broadcast_start_unix_s": broadcast_start,
        "clock": "seconds from the start barrier (start/end_unix_s: rank 0's clock)",
    }
    seconds = _window_seconds(window)
    window["seconds"] = round(seconds, 6)
    hists = {
        name: merge(decode(p["metrics"]["latency"][name]) for p in payloads)
        for name in payloads[0]["metrics"]["latency"]
    }
    byte_counts = _sum_counters(payloads, "bytes")
    counters = _sum_counters(payloads, "counters")
    tier_info = {name: dict(info) for name, info in payloads[0].get("tiers", {}).items()}  # the payload stays as is
    for tier in tier_info.values():
        if "capacity_bytes" in tier:
            tier["capacity_bytes_per_rank"] = tier.pop("capacity_bytes")
    tiers = _tier_blocks(hists, byte_counts, counters, seconds, tier_info)
    per_rank = [_per_rank(p) for p in payloads]
    hit_rate = _hit_rate(counters)
    requests, tokens = _requests_and_tokens(counters, seconds)
    ends = [p["window"]["end_offset_s"] for p in payloads]
    status = "failed" if failed or failure else "ok"
    dropped = _dropped_entries(counters)
    warnings = sorted({w for p in payloads for w in p.get("warnings", [])})
    if dropped["count"]:
        warnings.append(
            f"{dropped['count']:,} of the {dropped['entry_writes']:,} entries the workload wrote "
            f"({dropped['share_of_writes']:.1%}) were dropped: no tier had room for them, so the storage did not "
            "hold the workload and no SLA can pass; give the storage tier more room (--storage-capacity-gb, "
            "free space) or run fewer users"
        )
    directions = measured_directions(config)
    if not all(tiers["storage"][BYTES_FIELD[op]] for op in directions):
        warnings.append(storage_unmeasured(directions))
    device = device_block(payloads)
    warnings += device_warnings(device)
    result = {
        "schema": SCHEMA,
        "status": status,
        "config": config,
        "environment": environment,
        "warnings": warnings,
        "ranks": len(payloads),
        "hosts": sorted({p["host"] for p in payloads}),
        "host_count": len({p["host"] for p in payloads}),
        "window": window,
        "tiers": tiers,
        "latency_ms": {name: percentile_block(hists[name]) for name in REQUEST_LATENCIES},
        "requests": requests,
        "tokens": tokens,
        "hit_rate": hit_rate,
        "reference_metrics": _reference_metrics(counters),
        "qos": _qos(payloads, config.get("workload") or DEFAULT_PROFILE.as_dict()),
        "dropped_entries": dropped,
        "sla": _sla(
            tiers,
            hit_rate,
            config.get("performance_profile"),
            requests["completed"],
            dropped,
            status != "ok",
            traced=config.get("io_trace_log") is not None,
            directions=directions,
        ),
        "events": {name: value for name, value in counters.items() if name.split(".")[0] in EVENT_COUNTERS},
        "aggregate": {
            "storage_read_bandwidth_bytes_per_s": tiers["storage"]["read_bandwidth_bytes_per_s"],
            "storage_write_bandwidth_bytes_per_s": tiers["storage"]["write_bandwidth_bytes_per_s"],
            "sum_of_rank_storage_read_bandwidth_bytes_per_s": sum(
                r["tiers"]["storage"]["read_bandwidth_bytes_per_s"] for r in per_rank
            ),
            "sum_of_rank_storage_write_bandwidth_bytes_per_s": sum(
                r["tiers"]["storage"]["write_bandwidth_bytes_per_s"] for r in per_rank
            ),
            "first_done_s": round(min(ends) - start_offset, 6),
            "last_done_s": round(max(ends) - start_offset, 6),
            "max_rank_p95_ms": {name: _max_rank_p95(per_rank, name) for name in ("storage.read", "storage.write")},
            "stragglers": _stragglers(per_rank, config.get("straggler_fraction", 0.5)),
            "straggler_fraction": config.get("straggler_fraction", 0.5),
            **_cpu(per_rank, tiers["storage"]),
        },
        "per_rank": per_rank,
        "modes": _modes(payloads),
        "timeseries": _timeseries(payloads),
    }
    if autoscaling is not None:
        result["autoscaling"] = autoscaling
    if device is not None:
        result["device"] = device
    baseline = baseline_block(payloads, seconds)
    if baseline is not None:
        result["baseline"] = baseline
    traced = [{"host": p["host"], **p["latency_tracing"]} for p in payloads if "latency_tracing" in p]
    if traced:
        result["latency_tracing"] = {"per_host": traced}
    audit = audit_block(payloads)
    if audit is not None:
        result["audit"] = audit
        warnings += audit_warnings(audit)
    if status == "failed":
        first = failure or (failed[0]["rank"], failed[0].get("error"))
        result["error"] = f"rank {first[0]}: {first[1]}"
        result["failed_ranks"] = sorted({p["rank"] for p in failed} | ({failure[0]} if failure else set()))
    return result
