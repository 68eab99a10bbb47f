"""The traced block-layer latency, pooled over the hosts by read and write, as the headline and the page show it."""

import pytest

from kvcache.tracing_result import op_class, pooled_buckets, tracing_line

FAST = [{"min": 16, "max": 31, "count": 50}, {"min": 32, "max": 63, "count": 45}]
SLOW = [{"min": 1024, "max": 2047, "count": 5}]


def traced(*hosts):
    return {"per_host": [dict(host=name, tool="bpftrace", disks=[disk], request_bytes={}, error=None, d2c_us=d2c)
                         for name, disk, d2c in hosts]}  # fmt: skip


@pytest.mark.parametrize(
    ("rwbs", "name"),
    [
        ("R", "read"),
        ("RA", "read"),
        ("RM", "read"),
        ("W", "write"),
        ("WS", "write"),
        ("FWS", "write"),
        ("DS", None),
        ("D", None),
        ("F", None),
        ("N", None),
    ],  # fmt: skip
)
def test_each_rwbs_key_belongs_to_reads_writes_or_neither(rwbs, name):
    assert op_class(rwbs) == name


def test_buckets_are_summed_over_keys_and_hosts_by_class():
    block = traced(("a", "sda", {"R": {"buckets": FAST}, "DS": {"buckets": SLOW}}),
                   ("b", "sdb", {"RA": {"buckets": FAST[:1] + SLOW}, "WS": {"buckets": SLOW}}))  # fmt: skip
    pooled = pooled_buckets(block)
    assert pooled["read"] == [{"min": 16, "max": 31, "count": 100}, {"min": 32, "max": 63, "count": 45},
                              {"min": 1024, "max": 2047, "count": 5}]  # fmt: skip
    assert pooled["write"] == SLOW
    # request_bytes holds plain bucket lists
    sizes = {"per_host": [{"request_bytes": {"W": FAST, "FWS": FAST}}]}
    assert pooled_buckets(sizes, "request_bytes") == {"write": [dict(b, count=2 * b["count"]) for b in FAST]}


def test_the_line_gives_p50_and_p99_as_the_bucket_bounds_and_the_request_count():
    # reads: 50 of 100 below 32 µs (p50), the 99th among the 5 of 1024..2047 µs (p99 < 2.048 ms)
    line = tracing_line(traced(("a", "nvme0n1", {"R": {"buckets": FAST + SLOW}, "W": {"buckets": SLOW}})))
    assert line == (
        "block-layer latency (nvme0n1, bpftrace, device time per request): read p50 < 32 µs, p99 < 2.05 ms "
        "(100 requests); write p50 < 2.05 ms, p99 < 2.05 ms (5 requests)"
    )
    two_hosts = tracing_line(traced(("a", "sda", {"W": {"buckets": SLOW}}), ("b", "sdb", {"W": {"buckets": SLOW}})))
    assert two_hosts.startswith("block-layer latency (2 hosts, bpftrace, device time per request): write p50 < ")
    assert "(10 requests)" in two_hosts and "read" not in two_hosts


def test_a_trace_without_reads_or_writes_says_why():
    empty = traced(("a", "sda", {"DS": {"buckets": SLOW}}))
    assert (
        tracing_line(empty) == "block-layer latency (sda, bpftrace): no histogram (no read or write reached the device)"
    )
    empty["per_host"][0]["error"] = "bpftrace printed no histogram"
    assert tracing_line(empty).endswith("no histogram (bpftrace printed no histogram)")
    assert tracing_line(None) is None
