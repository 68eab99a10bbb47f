"""build_result on synthetic rank payloads made from real Metrics objects."""

import json
import random

import pytest

from kvcache.metrics import Metrics, decode, merge, percentile_block
from kvcache.result import SCHEMA, STORAGE_UNMEASURED, build_result
from kvcache.result_reader import first_problem
from kvcache.summary import format_summary

MIB = 1 << 20
GIB = 1 << 30
T0 = 1_700_000_000.0


def rank_payload(rank, start, end, read_bytes, write_bytes, read_ms, write_ms=(), host=None, status="ok", error=None):
    """A rank payload as benchmark.py builds it, with latencies (ms) recorded into a real Metrics."""
    metrics = Metrics()
    metrics.add_bytes("storage", "read", read_bytes)
    metrics.add_bytes("storage", "write", write_bytes)
    for ms in read_ms:
        metrics.record_op("storage", "read", ms / 1000.0)
    for ms in write_ms:
        metrics.record_op("storage", "write", ms / 1000.0)
    for i in range(10):
        metrics.record_request("batch", 1000.0, 0.001, 0.01 * (rank + 1), 0.1, 100, 10)
        metrics.count("lookups")
        metrics.count("hits.cpu" if i % 2 else "misses")
    return {
        "rank": rank,
        "host": host or f"host{rank // 2}",
        "seed": 42 + rank,
        "cache_namespace": f"/cache/kvcache-run-x/rank-{rank}",
        "status": status,
        "error": error,
        # Offsets from the start barrier (what aggregation uses), here on a clock whose barrier is T0.
        "window": {"start_unix_s": start, "end_unix_s": end, "start_offset_s": start - T0, "end_offset_s": end - T0},
        "metrics": metrics.export(),
        "timeseries": [],
        "io_engine": "direct",
        "tiers": {"storage": {"capacity_bytes": 1 << 30, "simulated": False, "io_engine": "direct"}},
        "warnings": [],
    }


def latencies(seed, n, scale):
    rng = random.Random(seed)
    return [rng.expovariate(1.0 / scale) + 0.01 for _sample in range(n)]


@pytest.fixture
def payloads():
    return [
        rank_payload(0, T0 + 0.0, T0 + 10.0, 1000 * MIB, 500 * MIB, latencies(0, 500, 5.0), latencies(10, 200, 8)),
        rank_payload(1, T0 + 0.5, T0 + 10.5, 900 * MIB, 400 * MIB, latencies(1, 800, 20.0), latencies(11, 50, 3)),
        rank_payload(2, T0 + 0.2, T0 + 12.0, 1100 * MIB, 600 * MIB, latencies(2, 300, 2.0), latencies(12, 100, 1)),
    ]


def build(payloads, **config):
    result = build_result(dict({"performance_profile": "latency"}, **config), {"io_engine": "direct"}, payloads, T0)
    assert first_problem(result) is None  # every result built here is a valid result/v1
    return result


def test_schema_status_and_counts(payloads):
    result = build(payloads)
    assert result["schema"] == SCHEMA
    assert result["status"] == "ok" and "error" not in result and "failed_ranks" not in result
    assert result["ranks"] == 3
    assert result["hosts"] == ["host0", "host1"] and result["host_count"] == 2
    assert [r["rank"] for r in result["per_rank"]] == [0, 1, 2]
    assert result["requests"]["completed"] == 30
    assert result["hit_rate"]["lookups"] == 30 and result["hit_rate"]["hits"] == 15
    assert result["hit_rate"]["overall"] == pytest.approx(0.5)
    json.dumps(result)  # serialisable as it is


def test_pooled_percentiles_equal_those_of_the_merged_histograms(payloads):
    result = build(payloads)
    for tier_op, key in (("storage.read", "read_latency_ms"), ("storage.write", "write_latency_ms")):
        merged = merge(decode(p["metrics"]["latency"][tier_op]) for p in payloads)
        assert result["tiers"]["storage"][key] == percentile_block(merged)
        assert result["tiers"]["storage"][key]["count"] == sum(
            decode(p["metrics"]["latency"][tier_op]).get_total_count() for p in payloads
        )
    merged_ttft = merge(decode(p["metrics"]["latency"]["ttft"]) for p in payloads)
    assert result["latency_ms"]["ttft"] == percentile_block(merged_ttft)


def test_pooled_p95_is_not_the_max_nor_the_mean_of_rank_p95s(payloads):
    result = build(payloads)
    rank_p95 = [r["tiers"]["storage"]["read_latency_ms"]["p95"] for r in result["per_rank"]]
    pooled = result["tiers"]["storage"]["read_latency_ms"]["p95"]
    assert min(rank_p95) < pooled < max(rank_p95)
    assert pooled != pytest.approx(sum(rank_p95) / len(rank_p95), rel=1e-3)


def test_storage_bandwidth_is_total_bytes_over_the_common_window(payloads):
    result = build(payloads)
    seconds = (T0 + 12.0) - (T0 + 0.0)  # last end - first start
    assert result["window"]["seconds"] == pytest.approx(seconds)
    assert result["window"]["start_unix_s"] == T0 and result["window"]["end_unix_s"] == T0 + 12.0
    storage = result["tiers"]["storage"]
    assert storage["bytes_read"] == 3000 * MIB and storage["bytes_written"] == 1500 * MIB
    assert storage["read_bandwidth_bytes_per_s"] == pytest.approx(3000 * MIB / seconds, abs=1)
    assert storage["write_bandwidth_bytes_per_s"] == pytest.approx(1500 * MIB / seconds, abs=1)
    assert result["aggregate"]["storage_read_bandwidth_bytes_per_s"] == storage["read_bandwidth_bytes_per_s"]
    assert result["aggregate"]["first_done_s"] == pytest.approx(10.0)
    assert result["aggregate"]["last_done_s"] == pytest.approx(12.0)


def test_sum_of_rank_bandwidths(payloads):
    result = build(payloads)
    expected_read = 1000 * MIB / 10.0 + 900 * MIB / 10.0 + 1100 * MIB / 11.8
    expected_write = 500 * MIB / 10.0 + 400 * MIB / 10.0 + 600 * MIB / 11.8
    aggregate = result["aggregate"]
    assert aggregate["sum_of_rank_storage_read_bandwidth_bytes_per_s"] == pytest.approx(expected_read, abs=3)
    assert aggregate["sum_of_rank_storage_write_bandwidth_bytes_per_s"] == pytest.approx(expected_write, abs=3)
    per_rank = {r["rank"]: r["tiers"]["storage"]["read_bandwidth_bytes_per_s"] for r in result["per_rank"]}
    assert per_rank[2] == pytest.approx(1100 * MIB / 11.8, abs=1)
    # the sum over ranks, each over its own window, exceeds the bandwidth over the common window
    assert aggregate["sum_of_rank_storage_read_bandwidth_bytes_per_s"] > aggregate["storage_read_bandwidth_bytes_per_s"]


def test_max_rank_p95(payloads):
    result = build(payloads)
    for name, key in (("storage.read", "read_latency_ms"), ("storage.write", "write_latency_ms")):
        p95s = [percentile_block(decode(p["metrics"]["latency"][name]))["p95"] for p in payloads]
        assert result["aggregate"]["max_rank_p95_ms"][name] == max(p95s)
        assert result["aggregate"]["max_rank_p95_ms"][name] == max(
            r["tiers"]["storage"][key]["p95"] for r in result["per_rank"]
        )
    assert (
        result["aggregate"]["max_rank_p95_ms"]["storage.read"] >= result["tiers"]["storage"]["read_latency_ms"]["p95"]
    )


def test_max_rank_p95_is_none_when_no_rank_measured_it():
    payloads = [rank_payload(r, T0, T0 + 10, 0, 0, []) for r in range(2)]
    result = build(payloads)
    assert result["tiers"]["storage"]["read_latency_ms"]["p95"] is None
    assert result["aggregate"]["max_rank_p95_ms"] == {"storage.read": None, "storage.write": None}


def test_max_rank_p95_ignores_ranks_without_samples():
    payloads = [rank_payload(0, T0, T0 + 10, MIB, 0, [4.0] * 10), rank_payload(1, T0, T0 + 10, 0, 0, [])]
    assert build(payloads)["aggregate"]["max_rank_p95_ms"]["storage.read"] == pytest.approx(4.0, rel=1e-3)


def test_stragglers_below_fraction_of_median():
    payloads = [
        rank_payload(0, T0, T0 + 10, 1000 * MIB, 0, [1.0]),
        rank_payload(1, T0, T0 + 10, 1000 * MIB, 0, [1.0]),
        rank_payload(2, T0, T0 + 10, 900 * MIB, 0, [1.0]),
        rank_payload(3, T0, T0 + 10, 400 * MIB, 0, [1.0]),  # 0.4 x median
        rank_payload(4, T0, T0 + 10, 600 * MIB, 0, [1.0]),  # 0.6 x median
    ]
    assert build(payloads, straggler_fraction=0.5)["aggregate"]["stragglers"] == [3]
    assert build(payloads, straggler_fraction=0.7)["aggregate"]["stragglers"] == [3, 4]
    assert build(payloads, straggler_fraction=0.0)["aggregate"]["stragglers"] == []
    result = build(payloads)  # default fraction 0.5
    assert result["aggregate"]["straggler_fraction"] == 0.5 and result["aggregate"]["stragglers"] == [3]


def test_no_stragglers_for_a_single_rank_or_equal_ranks():
    assert build([rank_payload(0, T0, T0 + 10, 10, 0, [1.0])])["aggregate"]["stragglers"] == []
    equal = [rank_payload(r, T0, T0 + 10, 100 * MIB, 0, [1.0]) for r in range(4)]
    assert build(equal)["aggregate"]["stragglers"] == []


def test_a_failed_rank_fails_the_run(payloads):
    payloads[1]["status"] = "failed"
    payloads[1]["error"] = "OSError: disk on fire"
    result = build(payloads)
    assert result["status"] == "failed"
    assert result["failed_ranks"] == [1]
    assert "rank 1" in result["error"] and "disk on fire" in result["error"]
    assert result["per_rank"][1]["status"] == "failed" and result["per_rank"][1]["error"] == "OSError: disk on fire"


def test_several_failed_ranks_are_all_listed(payloads):
    for index in (2, 0):
        payloads[index]["status"] = "failed"
        payloads[index]["error"] = f"boom {index}"
    result = build(list(reversed(payloads)))
    assert result["status"] == "failed"
    assert result["failed_ranks"] == [0, 2]
    assert result["error"].startswith("rank 0")


def test_failure_reported_outside_the_payloads(payloads):
    result = build_result({}, {}, payloads, T0, failure=(2, "lost contact"))
    assert result["status"] == "failed"
    assert result["failed_ranks"] == [2]
    assert result["error"] == "rank 2: lost contact"


def test_rank_order_of_payloads_does_not_matter(payloads):
    a = build(payloads)
    b = build(list(reversed([dict(p, tiers=dict(p["tiers"])) for p in payloads])))
    assert a["tiers"] == b["tiers"] and a["aggregate"] == b["aggregate"]


def test_build_result_does_not_change_its_input(payloads):
    before = json.dumps(payloads, sort_keys=True)
    first = build(payloads)
    assert json.dumps(payloads, sort_keys=True) == before
    assert first["tiers"]["storage"]["capacity_bytes_per_rank"] == 1 << 30
    assert build(payloads)["tiers"]["storage"]["capacity_bytes_per_rank"] == 1 << 30


def test_timeseries_sums_ranks_index_by_index():
    payloads = [rank_payload(r, T0, T0 + 10, MIB, 0, [1.0]) for r in range(2)]
    point = {"requests": 5, "requests_per_s": 5.0, "storage_read_bytes_per_s": 100.0, "storage_write_bytes_per_s": 10.0}
    payloads[0]["timeseries"] = [
        dict(point, t_s=1.0, storage_read_p95_ms=2.0),
        dict(point, t_s=2.0, storage_read_p95_ms=None),
    ]
    payloads[1]["timeseries"] = [dict(point, t_s=1.0, storage_read_p95_ms=7.0)]
    series = build(payloads)["timeseries"]
    assert len(series) == 2
    assert series[0]["ranks"] == 2 and series[0]["storage_read_bytes_per_s"] == 200.0
    assert series[0]["storage_read_p95_ms_max_rank"] == 7.0
    assert series[1]["ranks"] == 1 and series[1]["requests"] == 5
    assert series[1]["storage_read_p95_ms_max_rank"] is None
    assert "cpu_write_p95_ms_max_rank" not in series[0]  # fields no rank sampled are not made up


def test_window_uses_barrier_offsets_not_wall_clocks(payloads):
    # Rank 2's host clock runs an hour ahead: its wall-clock labels must not stretch the window.
    payloads[2]["window"]["start_unix_s"] += 3600.0
    payloads[2]["window"]["end_unix_s"] += 3600.0
    result = build(payloads)
    assert result["window"]["seconds"] == pytest.approx(12.0)
    assert result["aggregate"]["last_done_s"] == pytest.approx(12.0)
    assert result["aggregate"]["first_done_s"] == pytest.approx(10.0)


def with_writes(payload, written, dropped):
    """The payload with `written` entry-write attempts of which `dropped` were dropped, as TierManager counts."""
    payload["metrics"]["counters"]["entry_writes"] = written
    payload["metrics"]["counters"]["dropped_entries"] = dropped
    return payload


def test_a_run_without_dropped_entries_passes_the_sla(payloads):
    result = build([with_writes(p, 50, 0) for p in payloads])
    assert result["dropped_entries"] == {"count": 0, "entry_writes": 150, "share_of_writes": 0.0}
    assert result["sla"]["passed"] is True and result["sla"]["no_verdict_reason"] is None
    assert {"name": "dropped entries", "maximum": 0, "value": 0, "passed": True} in result["sla"]["criteria"]
    assert "SLA (latency profile): PASS" in format_summary(result)
    assert not any("dropped" in w for w in result["warnings"])


def test_dropped_entries_are_counted_per_rank_and_in_total_and_fail_the_sla(payloads):
    with_writes(payloads[0], 100, 0)
    with_writes(payloads[1], 100, 7)
    with_writes(payloads[2], 200, 5)
    result = build(payloads)
    assert result["dropped_entries"] == {"count": 12, "entry_writes": 400, "share_of_writes": 0.03}
    assert [r["dropped_entries"]["count"] for r in result["per_rank"]] == [0, 7, 5]
    assert result["per_rank"][1]["dropped_entries"]["share_of_writes"] == 0.07
    assert result["status"] == "ok"  # the run happened; what it measured did not hold the workload
    assert result["sla"]["passed"] is False
    dropped = [c for c in result["sla"]["criteria"] if c["name"] == "dropped entries"]
    assert dropped == [{"name": "dropped entries", "maximum": 0, "value": 12, "passed": False}]
    assert [w for w in result["warnings"] if "12 of the 400 entries" in w and "3.0%" in w]
    summary = format_summary(result)
    assert "SLA (latency profile): FAIL: dropped entries" in summary and "PASS" not in summary
    assert "warning: 12 of the 400 entries the workload wrote (3.0%) were dropped" in summary


def test_a_failed_run_has_no_sla_verdict(payloads):
    payloads[2]["status"] = "failed"
    payloads[2]["error"] = "OSError: [Errno 28] No space left on device"
    result = build(payloads)  # latencies and hit rate alone would pass
    assert result["status"] == "failed"
    assert result["sla"]["passed"] is None and result["sla"]["no_verdict_reason"] == "the run failed"
    summary = format_summary(result)
    assert "status: FAILED" in summary and "SLA (latency profile): no verdict (the run failed)" in summary
    assert "PASS" not in summary
    remote = build_result({"performance_profile": "latency"}, {}, payloads[:2], T0, failure=(1, "interrupted"))
    assert remote["sla"]["passed"] is None and "PASS" not in format_summary(remote)


def test_summary_of_an_older_failed_result_that_says_pass_gives_no_verdict(payloads):
    result = build(payloads)
    result["status"], result["error"] = "failed", "rank 0: interrupted by SIGINT"  # as older engines wrote it
    assert result["sla"]["passed"] is True
    summary = format_summary(result)
    assert "no verdict (the run failed)" in summary and "PASS" not in summary


def test_no_verdict_when_the_storage_was_not_both_read_and_written():
    """Everything fit in the GPU/CPU tiers: the storage criteria have no samples, so no PASS, and a warning."""
    read_only = [rank_payload(0, T0, T0 + 10.0, 100 * MIB, 0, latencies(0, 50, 1.0))]
    result = build(read_only)
    assert result["tiers"]["storage"]["write_latency_ms"]["p95"] is None
    assert result["sla"]["passed"] is None and result["sla"]["no_verdict_reason"] == STORAGE_UNMEASURED
    assert STORAGE_UNMEASURED in result["warnings"]
    assert "PASS" not in format_summary(result)
    measured = [rank_payload(0, T0, T0 + 10.0, 100 * MIB, 50 * MIB, latencies(0, 50, 1.0), latencies(1, 50, 1.0))]
    assert build(measured)["sla"]["passed"] is True and STORAGE_UNMEASURED not in build(measured)["warnings"]


def test_a_phase_is_judged_on_the_direction_it_measures():
    """A decode-only node only reads and a prefill-only node only writes: the one measured direction is
    judged (no "not both read and written" verdict), the other one is still required to have happened."""
    read_only = [rank_payload(0, T0, T0 + 10.0, 100 * MIB, 0, latencies(0, 50, 1.0))]
    decode = build(read_only, decode_only=True)
    assert decode["sla"]["passed"] is True and decode["sla"]["no_verdict_reason"] is None
    assert not any("not both read and written" in w for w in decode["warnings"])
    write_only = [rank_payload(0, T0, T0 + 10.0, 0, 50 * MIB, [], latencies(1, 50, 1.0))]
    prefill = build(write_only, prefill_only=True)
    assert prefill["sla"]["no_verdict_reason"] is None
    assert [c["name"] for c in prefill["sla"]["criteria"]] == ["storage.write p95", "dropped entries"]  # no hit rate
    # The phase's own direction missing: no verdict, and the warning names the phase.
    unwritten = build(read_only, prefill_only=True)
    assert unwritten["sla"]["passed"] is None and "--prefill-only" in unwritten["sla"]["no_verdict_reason"]
    assert any("was not written (--prefill-only)" in w for w in unwritten["warnings"])


def test_no_verdict_outside_the_latency_profile_or_without_requests(payloads):
    throughput = build(payloads, performance_profile="throughput")
    assert throughput["sla"]["passed"] is None and "latency profile only" in throughput["sla"]["no_verdict_reason"]
    summary = format_summary(throughput)
    assert "SLA (latency profile): no verdict (the SLA applies to the latency profile only)" in summary
    assert "PASS" not in summary
    idle = rank_payload(0, T0, T0 + 1, 0, 0, [])
    idle["metrics"]["counters"]["requests"] = 0
    nothing = build([idle])
    assert nothing["sla"]["passed"] is None and nothing["sla"]["no_verdict_reason"] == "no request completed"
    assert "SLA (latency profile): no verdict (no request completed)" in format_summary(nothing)


def test_reference_metrics_and_op_counts_are_pooled_over_ranks(payloads):
    result = build(payloads)
    # rank_payload: each rank's storage ops fall into its first request; 10 requests of 10 generated tokens each.
    drawn = ((0, 500, 5.0), (1, 800, 20.0), (2, 300, 2.0), (10, 200, 8), (11, 50, 3), (12, 100, 1))
    op_seconds = sum(sum(latencies(seed, n, scale)) for seed, n, scale in drawn) / 1000.0
    reference = result["reference_metrics"]
    assert reference["tokens"] == result["tokens"]["generated"] == 300
    assert reference["storage_io_seconds"] == pytest.approx(op_seconds, abs=1e-5)
    assert reference["storage_throughput_tokens_per_sec"] == pytest.approx(300 / op_seconds, rel=1e-5)
    assert [r["reference_metrics"]["tokens"] for r in result["per_rank"]] == [100, 100, 100]
    storage = result["tiers"]["storage"]
    assert (storage["read_ops"], storage["write_ops"]) == (1600, 350)
    assert [r["tiers"]["storage"]["read_ops"] for r in result["per_rank"]] == [500, 800, 300]
    assert result["latency_ms"]["storage_per_request"]["count"] == 30
    summary = format_summary(result)
    assert "p99.99" in summary and f"kv-cache.py storage throughput {300 / op_seconds:.1f} tokens/s" in summary


def test_summary_of_a_result_written_before_the_reference_metrics(payloads):
    result = build(payloads)
    del result["reference_metrics"]
    for tier in result["tiers"].values():
        for name in ("read_ops", "write_ops", "entries", "peak_entries"):
            del tier[name]
    for block in result["latency_ms"].values():
        del block["p9999"]
    assert first_problem(result) is None  # still a valid v1 result
    summary = format_summary(result)
    assert "kv-cache.py" not in summary and "storage " in summary


def test_the_ranks_window_cpu_is_summed_and_stated_per_gib_the_storage_moved(payloads):
    for payload, seconds in zip(payloads, (1.5, 2.0, 0.5)):
        payload["cpu_s"] = seconds
    result = build(payloads)
    assert [r["cpu_seconds"] for r in result["per_rank"]] == [1.5, 2.0, 0.5]
    moved_gib = (3000 + 1500) * MIB / GIB  # the three ranks' reads and writes
    assert result["aggregate"]["cpu_seconds"] == 4.0
    assert result["aggregate"]["cpu_seconds_per_storage_gib"] == pytest.approx(4.0 / moved_gib, rel=1e-5)
    payloads[1]["cpu_s"] = None  # a rank that never reached its window: no figure rather than a partial one
    assert build(payloads)["aggregate"]["cpu_seconds"] is None
