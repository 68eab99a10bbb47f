"""Metrics: histograms that survive encode/decode and merge exactly, counters that add up."""

import threading

import pytest

from kvcache.metrics import (
    CHUNK_LATENCIES,
    LOWEST_US,
    OPS,
    REQUEST_LATENCIES,
    TIERS,
    Metrics,
    decode,
    encode,
    merge,
    new_histogram,
    percentile_block,
)


def hist_of(values_us):
    hist = new_histogram()
    for value in values_us:
        hist.record_value(value)
    return hist


def test_empty_percentile_block_is_none_not_zero():
    block = percentile_block(new_histogram())
    assert block == {
        "p50": None,
        "p95": None,
        "p99": None,
        "p999": None,
        "p9999": None,
        "max": None,
        "mean": None,
        "count": 0,
    }


def test_percentile_block_in_milliseconds():
    block = percentile_block(hist_of(range(1000, 101000, 1000)))  # 1 ms .. 100 ms, one each
    assert block["count"] == 100
    assert block["p50"] == pytest.approx(50.0, rel=1e-3)
    assert block["p95"] == pytest.approx(95.0, rel=1e-3)
    assert block["p99"] == pytest.approx(99.0, rel=1e-3)
    assert block["max"] == pytest.approx(100.0, rel=1e-3)
    assert block["mean"] == pytest.approx(50.5, rel=1e-3)


def test_encode_decode_round_trip():
    hist = hist_of([5, 50, 500, 5000, 50000, 5_000_000])
    back = decode(encode(hist))
    assert isinstance(encode(hist), str)
    assert percentile_block(back) == percentile_block(hist)
    assert decode("").get_total_count() == 0


def test_merge_equals_recording_everything_in_one():
    a, b = [10, 20, 30, 4000], [7, 90_000, 123_456]
    merged = merge([decode(encode(hist_of(a))), decode(encode(hist_of(b)))])
    assert percentile_block(merged) == percentile_block(hist_of(a + b))


def test_metrics_starts_with_every_histogram_and_zero_counters():
    metrics = Metrics()
    every = {f"{t}.{o}" for t in TIERS for o in OPS} | set(CHUNK_LATENCIES.values()) | set(REQUEST_LATENCIES)
    assert set(metrics.latency) == every
    assert all(v == 0 for v in metrics.bytes.values())
    assert all(v == 0 for v in metrics.counters.values())


def test_record_op_clamps_to_one_microsecond_and_routes_by_tier():
    metrics = Metrics()
    metrics.record_op("storage", "read", 0.0)
    metrics.record_op("storage", "read", 0.002)
    metrics.record_op("cpu", "write", 0.5)
    assert metrics.latency["storage.read"].get_total_count() == 2
    assert metrics.latency["storage.read"].get_min_value() == LOWEST_US
    assert metrics.latency["cpu.write"].get_total_count() == 1
    assert metrics.latency["cpu.read"].get_total_count() == 0


def test_a_storage_chunk_adds_its_bytes_and_its_latency_to_its_direction_only():
    metrics = Metrics()
    metrics.add_storage_chunk("read", 4096, 0.0005)
    metrics.add_storage_chunk("read", 4096, 0.0)
    metrics.add_storage_chunk("write", 8192, 0.002)
    assert metrics.bytes["storage.read"] == 8192 and metrics.bytes["storage.write"] == 8192
    reads, writes = (metrics.latency[CHUNK_LATENCIES[op]] for op in ("read", "write"))
    assert reads.get_total_count() == 2 and reads.get_min_value() == LOWEST_US
    assert writes.get_total_count() == 1 and 1990 <= writes.get_max_value() <= 2010
    # A chunk is no whole-entry operation: the entry latencies and op counts stay as they were.
    assert metrics.latency["storage.read"].get_total_count() == 0
    assert metrics.counters["ops.storage.read"] == 0


def test_unknown_counter_is_an_error():
    with pytest.raises(KeyError):
        Metrics().count("no_such_counter")


def test_record_request_qos_and_tokens():
    metrics = Metrics()
    metrics.record_request("interactive", 50.0, 0.001, 0.040, 0.2, 1000, 10)
    metrics.record_request("interactive", 50.0, 0.001, 0.060, 0.2, 2000, 20)
    metrics.record_request("batch", 1000.0, 0.0, 0.5, 1.0, 10, 1)
    data = metrics.export()
    assert data["counters"]["requests"] == 3
    assert data["counters"]["prefill_tokens"] == 3010
    assert data["counters"]["generated_tokens"] == 31
    # Within target means the end-to-end latency (0.2 s, 0.2 s, 1.0 s) is within the class's p95 target.
    assert data["qos_within_target"] == {"interactive": 0, "batch": 1}
    assert decode(data["qos_e2e"]["interactive"]).get_total_count() == 2
    assert decode(data["qos_e2e"]["interactive"]).get_min_value() >= 200_000 * 0.999
    assert decode(data["latency"]["ttft"]).get_total_count() == 3
    assert decode(data["latency"]["queue_wait"]).get_min_value() == LOWEST_US


def test_sample_reports_each_tier_and_op_p95_since_the_previous_sample():
    metrics = Metrics()
    assert all(value is None for value in metrics.sample()[2].values())
    for _sample in range(100):
        metrics.record_op("storage", "read", 0.010)
    metrics.record_op("cpu", "write", 0.004)
    metrics.add_bytes("storage", "read", 4096)
    byte_counts, requests, p95 = metrics.sample()
    assert p95["storage.read"] == pytest.approx(10.0, rel=1e-3)
    assert p95["cpu.write"] == pytest.approx(4.0, rel=1e-3)
    assert p95["storage.write"] is None and p95["gpu.read"] is None  # no such operation: no figure
    assert byte_counts["storage.read"] == 4096 and requests == 0
    assert all(value is None for value in metrics.sample()[2].values())  # reset by the previous sample
    # the run-long histogram is not reset
    assert metrics.latency["storage.read"].get_total_count() == 100


def test_concurrent_recording_loses_nothing():
    metrics = Metrics()

    def work():
        for _sample in range(2000):
            metrics.add_bytes("storage", "write", 3)
            metrics.count("lookups")
            metrics.record_op("storage", "write", 0.001)

    threads = [threading.Thread(target=work) for _worker in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    data = metrics.export()
    assert data["bytes"]["storage.write"] == 4 * 2000 * 3
    assert data["counters"]["lookups"] == 4 * 2000
    assert decode(data["latency"]["storage.write"]).get_total_count() == 4 * 2000


def test_storage_time_per_request_is_the_serving_threads_own():
    """Each thread sums the storage ops of its own request: another thread's ops and other tiers' never count."""
    metrics = Metrics()
    ready, done = threading.Barrier(2), threading.Event()

    def other_request():
        metrics.begin_request()
        ready.wait()
        metrics.record_op("storage", "write", 5.0)  # while the main thread's request is being served
        done.set()
        metrics.record_request("batch", 1000.0, 0.0, 0.1, 0.2, 10, 3)

    thread = threading.Thread(target=other_request)
    thread.start()
    metrics.begin_request()
    ready.wait()
    done.wait(5)
    metrics.record_op("storage", "read", 0.25)
    metrics.record_op("storage", "write", 0.5)
    metrics.record_op("cpu", "read", 9.0)
    metrics.record_request("interactive", 50.0, 0.0, 0.1, 0.2, 10, 7)
    thread.join()
    per_request = percentile_block(metrics.latency["storage_per_request"])
    assert per_request["count"] == 2
    assert per_request["p50"] == pytest.approx(750.0, rel=1e-3)
    assert per_request["max"] == pytest.approx(5000.0, rel=1e-3)
    assert metrics.counters["storage_io_us"] == 5_750_000
    assert metrics.counters["ops.storage.read"] == 1 and metrics.counters["ops.storage.write"] == 2
    assert metrics.counters["ops.cpu.read"] == 1


def test_a_new_request_starts_its_storage_time_at_zero():
    metrics = Metrics()
    metrics.begin_request()
    metrics.record_op("storage", "read", 2.0)  # an interrupted request: recorded op, never a completed request
    metrics.begin_request()
    metrics.record_op("storage", "read", 0.001)
    metrics.record_request("batch", 1000.0, 0.0, 0.1, 0.2, 1, 1)
    assert metrics.counters["storage_io_us"] == 1000


def test_entries_held_and_their_peak():
    metrics = Metrics()
    for _entry in range(3):
        metrics.entry_moved(None, "cpu")
    metrics.entry_moved("cpu", "storage")
    metrics.entry_moved("cpu", None)
    counters = metrics.counters
    assert (counters["entries.cpu"], counters["peak_entries.cpu"]) == (1, 3)
    assert (counters["entries.storage"], counters["peak_entries.storage"]) == (1, 1)
