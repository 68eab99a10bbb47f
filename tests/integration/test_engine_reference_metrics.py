"""The metrics kv-cache.py users read, from a real run: whole-entry op counts, entries, storage time per
request, p99.99, and the reference's tokens / summed storage time beside our bytes / window."""

import pytest
from engine_helpers import kvcache, load

from kvcache.workload import User

SEED = 7
REQUESTS = 12


def expected_ops(requests):
    """What the pipeline (runner.serve) does for each request with every entry on storage and none evicted:
    a prefix read, or its first write after a miss; the previous turn's read; the new entry's write; decode's read."""
    written, reads, writes = set(), 0, 0
    for request in requests:
        if request.prefix_key in written:
            reads += 1
        else:
            written.add(request.prefix_key)
            writes += 1
        if request.previous_key:
            assert request.previous_key in written
            reads += 1
        written.add(request.key)
        writes += 1
        reads += 1
    return reads, writes, len(written)


def test_one_users_op_counts_follow_its_requests_and_the_reference_figure_adds_up(tmp_path):
    cache = tmp_path / "cache"
    cache.mkdir()
    done = kvcache(
        "run", "--model", "tiny-1b", "--num-users", "1", "--seed", SEED, "--max-requests", REQUESTS,
        "--duration", "60", "--performance-profile", "throughput", "--generation-mode", "none",
        "--gpu-mem-gb", "0", "--cpu-mem-gb", "0", "--quiet", "--cache-dir", cache, "--output", tmp_path / "R.json",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    result = load(tmp_path / "R.json")
    assert result["requests"]["completed"] == REQUESTS
    stream = User(SEED, 0).requests()  # rank 0's seed is --seed
    reads, writes, entries = expected_ops([next(stream) for _request in range(REQUESTS)])
    storage = result["tiers"]["storage"]
    assert (storage["read_ops"], storage["write_ops"]) == (reads, writes)
    assert storage["read_ops"] == storage["read_latency_ms"]["count"]  # no move read an entry untimed
    assert (storage["entries"], storage["peak_entries"]) == (entries, entries)
    for tier in ("gpu", "cpu"):
        assert result["tiers"][tier]["read_ops"] == result["tiers"][tier]["write_ops"] == 0
    assert result["per_rank"][0]["tiers"]["storage"]["write_ops"] == writes

    # One user: every storage operation belongs to a request, so the per-request sums add up to all of them.
    per_request = result["latency_ms"]["storage_per_request"]
    assert per_request["count"] == REQUESTS and per_request["p9999"] <= per_request["max"]
    op_ms = sum(storage[f"{op}_latency_ms"]["mean"] * storage[f"{op}_latency_ms"]["count"] for op in ("read", "write"))
    assert per_request["mean"] * REQUESTS == pytest.approx(op_ms, rel=0.01)  # HdrHistogram: 3 digits

    reference = result["reference_metrics"]
    assert reference["tokens"] == result["tokens"]["generated"]
    assert reference["storage_io_seconds"] == pytest.approx(per_request["mean"] * REQUESTS / 1000.0, rel=0.01)
    assert reference["storage_throughput_tokens_per_sec"] == pytest.approx(
        reference["tokens"] / reference["storage_io_seconds"], rel=1e-5
    )
    assert "not a bandwidth" in reference["definition"]
    assert "storage_per_request" in done.stdout and "p99.99" in done.stdout and "kv-cache.py storage" in done.stdout
    assert result["per_rank"][0]["reference_metrics"] == reference
    for block in [result["latency_ms"][name] for name in result["latency_ms"]] + [storage["read_latency_ms"]]:
        assert "p9999" in block
