"""A valid result of a short two-rank run, made by build_result from the ranks' metrics, for the tests of what
reads results (the summary, the headline, the exports) without running the engine."""

from kvcache.metrics import Metrics
from kvcache.result import build_result
from kvcache.workload import DEFAULT_PROFILE

T0 = 1_700_000_000.0


def two_rank_result(window_s=60.0, requests=5, qos_class="batch", read_mib_step=0):
    """Each rank reads 100 MiB (plus read_mib_step x its rank) and writes 50 MiB in window_s, and completes
    `requests` requests of `qos_class`; no autoscaling."""
    payloads = []
    for rank in range(2):
        metrics = Metrics()
        metrics.add_bytes("storage", "read", (100 + read_mib_step * rank) << 20)
        metrics.add_bytes("storage", "write", 50 << 20)
        for _request in range(requests):
            metrics.record_op("storage", "read", 0.002)
            metrics.record_request(qos_class, 1000.0, 0.001, 0.01, 0.1, 100, 10)
        payloads.append(
            {
                "rank": rank, "host": f"h{rank}", "seed": 42 + rank, "cache_namespace": f"/c/rank-{rank}",
                "status": "ok", "error": None, "io_engine": "direct", "warnings": [],
                "window": {
                    "start_unix_s": T0, "end_unix_s": T0 + window_s, "start_offset_s": 0.0, "end_offset_s": window_s,
                },
                "metrics": metrics.export(), "timeseries": [],
                "tiers": {"storage": {"capacity_bytes": 1 << 30, "simulated": False, "io_engine": "direct"}},
            }
        )  # fmt: skip
    config = {"performance_profile": "latency", "num_users": 8, "model": "tiny-1b"}
    config["workload"] = DEFAULT_PROFILE.as_dict()
    return build_result(config, {"io_engine": "direct", "gpu_backend": "simulated"}, payloads, T0)
