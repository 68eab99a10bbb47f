"""The autoscaler's answers follow the storage's speed: the same search on a loop device, fast and then throttled.

The storage is an ext4 loop device; the slow one is the same device with its reads and writes capped by a
cgroup v1 blkio group (throttled_storage.py). The workload makes each request move MiB-sized entries
(a 1024-token context of 1 KiB per token) through the storage tier only, with a fixed 0.1 s of generation,
so that on the fast device the users are bound by their own pace and on the slow one by the cap. Skipped,
with the reason, where the machine cannot make such storage; the controller's own logic is tested on
synthetic measurements in tests/unit/engine/test_autoscaler.py, which always runs.
"""

import pytest
import yaml
from engine_helpers import ENGINE, leftovers, load
from throttled_storage import Unavailable, loop_storage, missing

MIB = 2**20
TARGET_MS = 400  # every class's p95 target: 0.8 x 400 ms; the fast device's p95 sits near 0.1 s at 8 users
QOS_CAP_MIB_S = 32  # read and write, each: one user keeps its p95 near 0.17 s here, four miss
CAPACITY_CAP_MIB_S = 64  # each: above what one user moves (about 50 MiB/s in all), below what four ask for
STEP_S = 2  # long enough for the throttle (which works in 0.1 s slices) to show in a step's p95
TOLERANCE = 1.25  # a step's measured bytes per second against the cap: the step edges and the slice carry-over
RUN_TIMEOUT_S = 120

pytestmark = pytest.mark.skipif(missing() is not None, reason=f"throttled loop storage: {missing()}")


def workload(tmp_path):
    template = {"context_range": [1024, 1024], "generation_range": [20, 20]}  # 20 x 0.005 s: 0.1 s a request
    config = {
        "models": {"toy-1kib-per-token": {"layers": 4, "kv_heads": 1, "head_dim": 64}},
        "user_templates": {name: template for name in ("chatbot", "coding", "document")},
        "generation_timing": {"fast": 0.005},
        "qos_profiles": {name: {"target_latency_p95_ms": TARGET_MS} for name in ("interactive", "responsive", "batch")},
    }
    path = tmp_path / "workload.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


def search(tmp_path, mode, max_users, cap_mib_s=None):
    """The `autoscaling` block of one run on a fresh loop device, throttled to cap_mib_s (each way) when given."""
    cap = int(cap_mib_s * MIB) if cap_mib_s else None
    name = f"{mode}-{cap_mib_s or 'fast'}"
    try:
        with loop_storage(size_mib=512, read_bps=cap, write_bps=cap) as storage:
            # fmt: off
            argv = ENGINE + [
                "run", "--config", str(workload(tmp_path)), "--model", "toy-1kib-per-token",
                "--gpu-mem-gb", "0", "--cpu-mem-gb", "0", "--io-chunk-mib", "1", "--performance-profile", "throughput",
                "--generation-mode", "fast", "--quiet", "--num-users", "1", "--duration", "60",
                "--enable-autoscaling", "--autoscaler-mode", mode, "--autoscaler-step-s", str(STEP_S),
                "--autoscaler-max-users", str(max_users),
                "--cache-dir", str(storage.mount), "--output", str(tmp_path / f"{name}.json"),
            ]
            # fmt: on
            done = storage.run(argv, timeout=RUN_TIMEOUT_S)
            assert done.returncode == 0, done.stderr
            assert leftovers(storage.mount) == ["lost+found"]
            moved = storage.bytes_moved()
    except Unavailable as reason:
        pytest.skip(f"throttled loop storage: {reason}")
    if cap:
        assert moved["read"] > 0 and moved["write"] > 0, moved  # the run's I/O went through the group's throttle
    return load(tmp_path / f"{name}.json")["autoscaling"]


def held(block):
    """Users per rank that held at most; 0 when none did."""
    return block["largest_held"]["per_rank"] if block["largest_held"] else 0


def within_cap(block, cap_mib_s):
    for step in block["steps"]:
        for direction in ("read_bytes_per_s", "write_bytes_per_s"):
            assert step[direction] <= cap_mib_s * MIB * TOLERANCE, (step["step"], direction, step[direction])


def test_qos_search_finds_fewer_users_on_the_slowed_device(tmp_path):
    fast = search(tmp_path, "qos", max_users=8)
    slow = search(tmp_path, "qos", max_users=8, cap_mib_s=QOS_CAP_MIB_S)
    # Unthrottled, every count up to the cap holds; capped, the search stops at a count that missed.
    assert fast["ended_because"] == "cap" and held(fast) == 8, fast["summary"]
    assert slow["ended_because"] in ("converged", "nothing_holds"), slow["summary"]
    assert held(slow) < held(fast), (slow["summary"], fast["summary"])
    assert slow["smallest_missed"]["per_rank"] <= 8
    if slow["ended_because"] == "converged":
        assert slow["max_users"]["per_rank"] == held(slow) == slow["smallest_missed"]["per_rank"] - 1
    missed = [s for s in slow["steps"] if s["holds"] is False]
    assert missed and all(s["saturation"] is None or s["saturation"] > 0.8 for s in missed)
    within_cap(slow, QOS_CAP_MIB_S)


def test_capacity_search_stops_growing_where_the_slowed_device_flattens(tmp_path):
    fast = search(tmp_path, "capacity", max_users=16)
    slow = search(tmp_path, "capacity", max_users=16, cap_mib_s=CAPACITY_CAP_MIB_S)
    assert slow["converged"] and slow["ended_because"] == "converged", slow["summary"]
    plateau = slow["steps"][-2:]  # --autoscaler-plateau-steps 2: the last two steps gained at most 5 %
    assert all(s["gain"] is not None and s["gain"] <= 0.05 for s in plateau), plateau
    knee = slow["knee_users"]["per_rank"]
    assert knee < plateau[0]["users_per_rank"] and knee < 16
    assert slow["peak_bandwidth_users"]["per_rank"] <= plateau[-1]["users_per_rank"]
    within_cap(slow, CAPACITY_CAP_MIB_S)
    # The same search on the fast device goes on gaining past the slow one's knee, to more bandwidth.
    assert fast["knee_users"]["per_rank"] > knee, (fast["summary"], slow["summary"])
    peak = slow["peak_bandwidth_users"]["bandwidth_bytes_per_s"]
    assert fast["peak_bandwidth_users"]["bandwidth_bytes_per_s"] > 2 * peak, (fast["summary"], slow["summary"])
