"""The autoscaler (kvcache/autoscaler.py) on synthetic steps: a fake storage whose latency and bandwidth
follow the user count as the test says, so that the answer of every search is known exactly."""

import math

import pytest

from kvcache import autoscaler
from kvcache.autoscaler import Autoscaler, CapacitySearch, QosSearch, StepMeasure
from kvcache.errors import UsageError
from kvcache.run_config import make_config
from kvcache.units import GIB, MIB
from kvcache.workload import DEFAULT_PROFILE

STEP_S = 10.0
RANKS = 2
STEP_KEYS = {
    "step",
    "t_start_s",
    "t_end_s",
    "users_per_rank",
    "users_total",
    "requests",
    "read_bytes_per_s",
    "write_bytes_per_s",
    "p95_ms",
    "saturation",
    "holds",
    "gain",
    "action",
    "next_users_per_rank",
    "reason",
}


def config(**values):
    values.setdefault("enable_autoscaling", True)
    values.setdefault("autoscaler_step_s", STEP_S)
    return make_config("run", **values)


def search(ranks=RANKS, **values):
    cfg = config(**values)
    return Autoscaler.for_config(cfg, ranks, autoscaler.qos_targets_ms(cfg))


def measure(index, users, requests=100, p95_ms=None, read=0.0, write=0.0, failed=None):
    return StepMeasure(
        index, index * STEP_S, (index + 1) * STEP_S, users, RANKS, requests, read, write, p95_ms or {}, failed
    )


class LatencyStorage:
    """p95 rises with the users: every class sits exactly at `saturation` x its target at `knee` + 0.5
    users per rank, so `knee` is the largest count that holds (0: none holds). The classes scale differently,
    so which one binds changes with `binding`."""

    def __init__(self, knee, saturation=0.8, binding="interactive"):
        self.knee, self.saturation, self.binding = knee, saturation, binding

    def step(self, index, users):
        p95 = {}
        for qos in DEFAULT_PROFILE.qos_classes:
            share = users / (self.knee + 0.5) if qos.name == self.binding else users / (self.knee + 0.5) / 2
            p95[qos.name] = qos.p95_target_ms * self.saturation * share
        return measure(index, users, p95_ms=p95)


def bandwidth_storage(per_user, ceiling, beyond=0.0):
    """Bandwidth of `users`: users x per_user up to the ceiling, then `beyond` more per user (a slow rise)."""

    def bandwidth(users):
        linear = users * per_user
        return linear if linear <= ceiling else ceiling + (users - ceiling / per_user) * beyond

    return bandwidth


def run_qos(storage, limit=100, **values):
    scaler = search(**values)
    users, decisions = autoscaler.start_users(config(**values)), []
    for index in range(limit):
        decision = scaler.decide(storage.step(index, users))
        decisions.append(decision)
        if decision.stop:
            return scaler, decisions
        users = decision.users_per_rank
    raise AssertionError(f"no stop in {limit} steps: {[s['users_per_rank'] for s in scaler.steps]}")


def run_capacity(bandwidth, limit=100, **values):
    scaler = search(autoscaler_mode="capacity", **values)
    users = autoscaler.start_users(config(**values))
    for index in range(limit):
        decision = scaler.decide(measure(index, users, read=bandwidth(users) * 0.75, write=bandwidth(users) * 0.25))
        if decision.stop:
            return scaler
        users = decision.users_per_rank
    raise AssertionError(f"no stop in {limit} steps")


def tried(scaler):
    return [s["users_per_rank"] for s in scaler.steps]


# -- qos --


def test_qos_grows_then_bisects_to_the_largest_count_that_holds():
    scaler, decisions = run_qos(LatencyStorage(13), num_users=4, autoscaler_max_users=64)
    assert tried(scaler) == [4, 8, 16, 12, 14, 13]
    assert [d.action for d in decisions] == ["grow", "grow", "bisect", "bisect", "bisect", "stop"]
    assert decisions[-1].users_per_rank == 13 and decisions[-1].stop
    out = scaler.outcome()
    assert out["converged"] is True and out["ended_because"] == "converged"
    assert out["max_users"] == {"per_rank": 13, "fleet": 26}
    assert out["largest_held"] == {"per_rank": 13, "fleet": 26}
    assert out["smallest_missed"] == {"per_rank": 14, "fleet": 28}
    assert out["search_s"] == 6 * STEP_S
    assert out["summary"].startswith("max 13 users/rank (fleet 26) with every QoS class's p95")
    assert "14 users/rank missed" in out["summary"]
    assert [s["holds"] for s in out["steps"]] == [True, True, False, True, False, True]
    assert all(set(s) == STEP_KEYS for s in out["steps"])
    assert "capacity" not in out and "peak_bandwidth_users" not in out and "knee_users" not in out


def test_qos_reason_and_condition_carry_the_numbers():
    scaler, decisions = run_qos(LatencyStorage(13), num_users=4, autoscaler_max_users=64)
    # 4 users at knee 13.5: interactive p95 = 50 x 0.8 x 4 / 13.5 = 11.85 ms.
    assert decisions[0].reason == "interactive p95 11.9 ms <= 0.8 x 50 ms and every class holds: 4 -> 8 users/rank"
    assert decisions[2].reason == "interactive p95 47.4 ms > 0.8 x 50 ms: 16 -> 12 users/rank"
    assert scaler.steps[0]["saturation"] == pytest.approx(0.8 * 4 / 13.5)
    assert scaler.outcome()["condition"] == (
        "every QoS class's p95 end-to-end latency at most 0.8 x its target "
        "(interactive 50 ms, responsive 100 ms, batch 1000 ms) over a 10 s step"
    )


@pytest.mark.parametrize("knee", [1, 2, 3, 7, 13, 31, 32, 33, 63, 99, 100])
@pytest.mark.parametrize("start", [1, 5, 32, 100])
@pytest.mark.parametrize("factors", [(2.0, 0.5), (1.2, 0.8), (3.0, 0.3)])
def test_qos_converges_on_the_exact_answer_from_any_start(knee, start, factors):
    up, down = factors
    scaler, _decisions = run_qos(
        LatencyStorage(knee),
        num_users=start,
        autoscaler_max_users=100,
        autoscaler_scale_up_factor=up,
        autoscaler_scale_down_factor=down,
    )
    counts = tried(scaler)
    out = scaler.outcome()
    if knee == 100:  # holds at the cap: the answer is at least 100, not found
        assert out["ended_because"] == "cap" and out["max_users"] is None
        assert out["largest_held"] == {"per_rank": 100, "fleet": 200} and out["smallest_missed"] is None
    else:
        assert out["ended_because"] == "converged"
        assert out["max_users"] == {"per_rank": knee, "fleet": 2 * knee}
        assert out["smallest_missed"]["per_rank"] == knee + 1
    assert len(counts) == len(set(counts)), f"a count was tried twice: {counts}"
    assert all(1 <= n <= 100 for n in counts)
    assert len(counts) <= 2 * math.ceil(math.log2(100)) + 12  # logarithmic, not a walk of every count


def test_qos_start_above_the_answer_shrinks_first():
    scaler, decisions = run_qos(LatencyStorage(13), num_users=100, autoscaler_max_users=1000)
    assert tried(scaler) == [100, 50, 25, 12, 18, 15, 13, 14]
    assert [d.action for d in decisions[:3]] == ["shrink", "shrink", "shrink"]
    assert decisions[3].action == "bisect"
    assert scaler.outcome()["max_users"]["per_rank"] == 13


def test_qos_nothing_holds_at_the_fewest_users():
    scaler, decisions = run_qos(LatencyStorage(0), num_users=10, autoscaler_min_users=2)
    assert tried(scaler) == [10, 5, 2]
    assert decisions[-1].stop and decisions[-1].users_per_rank == 2
    assert "at the fewest, 2 users/rank: stop, nothing holds" in decisions[-1].reason
    out = scaler.outcome("window")  # the search's own reason wins over the window's end
    assert out["ended_because"] == "nothing_holds" and out["converged"] is False
    assert out["max_users"] is None and out["largest_held"] is None
    assert out["smallest_missed"] == {"per_rank": 2, "fleet": 4}
    assert out["summary"] == (
        "no user count holds: even 2 users/rank (fleet 4, the fewest allowed) missed; "
        f"the condition: {out['condition']}"
    )


def test_qos_holds_at_the_cap_is_not_converged():
    scaler, decisions = run_qos(LatencyStorage(1000), num_users=4, autoscaler_max_users=20)
    assert tried(scaler) == [4, 8, 16, 20]
    assert decisions[-1].stop and "at the cap of 20 users/rank" in decisions[-1].reason
    out = scaler.outcome()
    assert out["ended_because"] == "cap" and out["converged"] is False and out["max_users"] is None
    assert out["largest_held"] == {"per_rank": 20, "fleet": 40}
    assert out["summary"].startswith("not converged: 20 users/rank (fleet 40) held at the cap")


def test_qos_holds_at_min_users_only():
    scaler, _decisions = run_qos(LatencyStorage(1), num_users=1)
    assert tried(scaler) == [1, 2]
    assert scaler.outcome()["max_users"] == {"per_rank": 1, "fleet": 2}


def test_qos_binding_class_can_be_any():
    scaler, decisions = run_qos(LatencyStorage(9, binding="batch"), num_users=4, autoscaler_max_users=64)
    assert scaler.outcome()["max_users"]["per_rank"] == 9
    assert decisions[0].reason.startswith("batch p95 ")


def test_a_class_absent_from_a_step_is_not_judged():
    scaler = search(num_users=8)
    # No interactive request completed; the others are far within their targets.
    decision = scaler.decide(measure(0, 8, p95_ms={"responsive": 10.0, "batch": 100.0}))
    assert scaler.steps[0]["holds"] is True and decision.action == "grow" and decision.users_per_rank == 16
    assert scaler.steps[0]["saturation"] == pytest.approx(0.1)
    # The same step with interactive over 0.8 x 50 ms misses.
    other = search(num_users=8)
    missed = other.decide(measure(0, 8, p95_ms={"interactive": 41.0, "responsive": 10.0, "batch": 100.0}))
    assert other.steps[0]["holds"] is False and missed.action == "shrink" and missed.users_per_rank == 4


def test_a_step_with_no_completed_request_misses():
    scaler = search(num_users=8)
    decision = scaler.decide(measure(0, 8, requests=0, p95_ms={}))
    assert scaler.steps[0]["holds"] is False and scaler.steps[0]["saturation"] is None
    assert decision.action == "shrink" and decision.users_per_rank == 4
    assert decision.reason == "no request completed in the 10 s step: 8 -> 4 users/rank"
    # A count of 0 misses even beside latencies (at least one request must complete).
    empty = search(num_users=8)
    assert empty.decide(measure(0, 8, requests=0, p95_ms={"interactive": 1.0})).action == "shrink"
    # Once a count held, a step without completions is the smallest miss: bisect between them.
    scaler.decide(measure(1, 4, p95_ms={"interactive": 1.0}))
    assert scaler.outcome("window")["largest_held"]["per_rank"] == 4
    final = scaler.decide(measure(2, 6, requests=0))
    assert final.action == "bisect" and final.users_per_rank == 5


def test_exactly_at_the_saturated_target_holds():
    scaler = search(num_users=8, target_saturation=0.5)
    scaler.decide(measure(0, 8, p95_ms={"interactive": 25.0}))
    assert scaler.steps[0]["holds"] is True
    scaler.decide(measure(1, 16, p95_ms={"interactive": 25.01}))
    assert scaler.steps[1]["holds"] is False


def test_grow_and_shrink_round_exactly():
    # 50 x 1.1 is 55.00000000000001 in floating point: 55 users, not 56; 100 x 0.29 is 28.999999999999996: 29.
    up = search(num_users=50, autoscaler_scale_up_factor=1.1)
    assert up.decide(measure(0, 50, p95_ms={"interactive": 1.0})).users_per_rank == 55
    down = search(num_users=100, autoscaler_scale_down_factor=0.29)
    assert down.decide(measure(0, 100, requests=0)).users_per_rank == 29
    # A factor too small to change the count still moves it by one.
    small = search(num_users=3, autoscaler_scale_up_factor=1.01, autoscaler_scale_down_factor=0.9)
    assert small.decide(measure(0, 3, p95_ms={"interactive": 1.0})).users_per_rank == 4
    assert small.decide(measure(1, 4, requests=0)).action == "stop"  # 3 held, 4 missed
    tiny = search(num_users=3, autoscaler_scale_up_factor=1.0000000001)  # 3.0000000003 keeps 9 decimals: 3
    assert tiny.decide(measure(0, 3, p95_ms={"interactive": 1.0})).users_per_rank == 4


def test_qos_window_ran_out_reports_bounds_not_an_answer():
    scaler = search(num_users=4)
    scaler.decide(measure(0, 4, p95_ms={"interactive": 1.0}))
    scaler.decide(measure(1, 8, p95_ms={"interactive": 2.0}))
    out = scaler.outcome("window")
    assert out["ended_because"] == "window" and out["converged"] is False and out["max_users"] is None
    assert out["largest_held"] == {"per_rank": 8, "fleet": 16} and out["smallest_missed"] is None
    assert out["search_s"] == 20.0
    assert out["summary"] == "not converged in 20 s: 8 users/rank held, none missed; give a longer --duration"
    scaler.decide(measure(2, 16, p95_ms={"interactive": 45.0}))
    assert scaler.outcome("window")["summary"] == (
        "not converged in 30 s: 8 users/rank held, 16 missed; give a longer --duration"
    )


def test_outcome_needs_a_reason_while_the_search_runs():
    scaler = search(num_users=4)
    scaler.decide(measure(0, 4, p95_ms={"interactive": 1.0}))
    with pytest.raises(ValueError, match="ended_because"):
        scaler.outcome()
    with pytest.raises(ValueError, match="ended_because"):
        scaler.outcome("timeout")


@pytest.mark.parametrize("mode", ["qos", "capacity"])
def test_a_failed_step_stops_the_search(mode):
    scaler = search(num_users=4, autoscaler_mode=mode)
    scaler.decide(measure(0, 4, p95_ms={"interactive": 1.0}, read=GIB))
    decision = scaler.decide(measure(1, 8, p95_ms={"interactive": 1.0}, read=2 * GIB, failed="rank 1: OSError"))
    assert decision.stop and decision.action == "stop" and decision.users_per_rank == 8
    assert decision.reason == "step 1 failed (rank 1: OSError): stop"
    last = scaler.steps[-1]
    assert (last["holds"], last["saturation"], last["gain"]) == (None, None, None)
    out = scaler.outcome()
    assert out["ended_because"] == "failed" and out["converged"] is False
    assert "step 1 failed (rank 1: OSError)" in out["summary"]
    if mode == "qos":
        assert out["max_users"] is None and out["largest_held"]["per_rank"] == 4
    else:  # the failed step's bandwidth is no peak
        assert out["peak_bandwidth_users"] == {"per_rank": 4, "fleet": 8, "bandwidth_bytes_per_s": GIB}
    with pytest.raises(RuntimeError, match="ended"):
        scaler.decide(measure(2, 8))


# -- capacity --


def test_capacity_stops_after_the_plateau_and_reports_peak_and_knee():
    scaler = run_capacity(bandwidth_storage(100 * MIB, GIB), num_users=1, autoscaler_max_users=1000)
    assert tried(scaler) == [1, 2, 4, 8, 16, 32, 64]
    assert [s["action"] for s in scaler.steps] == ["grow"] * 6 + ["stop"]
    assert scaler.steps[0]["gain"] is None
    assert scaler.steps[1]["gain"] == pytest.approx(1.0)
    assert scaler.steps[4]["gain"] == pytest.approx(GIB / (800 * MIB) - 1)
    assert scaler.steps[5]["gain"] == pytest.approx(0.0)
    out = scaler.outcome()
    assert out["converged"] is True and out["ended_because"] == "converged"
    assert out["peak_bandwidth_users"] == {"per_rank": 16, "fleet": 32, "bandwidth_bytes_per_s": GIB}
    assert out["knee_users"] == {"per_rank": 16, "fleet": 32, "bandwidth_bytes_per_s": GIB}
    assert out["summary"].startswith("peak 1.00 GiB/s at 16 users/rank (fleet 32), knee 16 users/rank (1.00 GiB/s)")
    assert "max_users" not in out and "largest_held" not in out
    assert all(set(s) == STEP_KEYS for s in out["steps"])
    assert all(s["holds"] is None and s["saturation"] is None for s in out["steps"])


def test_capacity_plateau_steps_and_min_gain():
    flat = bandwidth_storage(100 * MIB, GIB)
    assert tried(run_capacity(flat, num_users=1, autoscaler_plateau_steps=1)) == [1, 2, 4, 8, 16, 32]
    assert tried(run_capacity(flat, num_users=1, autoscaler_plateau_steps=3)) == [1, 2, 4, 8, 16, 32, 64, 128]
    # Past the ceiling bandwidth still rises, 1 MiB/s per user: below the 5 % gain, so 16 stays the knee,
    # but the peak is the last step measured.
    slow = run_capacity(bandwidth_storage(100 * MIB, GIB, beyond=MIB), num_users=1)
    out = slow.outcome()
    assert tried(slow) == [1, 2, 4, 8, 16, 32, 64]
    assert out["knee_users"]["per_rank"] == 16
    assert out["peak_bandwidth_users"]["per_rank"] == 64
    # Equal bandwidth is no gain, even with a gain threshold of 0.
    assert tried(run_capacity(flat, num_users=1, autoscaler_min_gain=0.0)) == [1, 2, 4, 8, 16, 32, 64]
    # The same rise beats a gain of 0: the search keeps growing to the cap.
    eager = run_capacity(bandwidth_storage(100 * MIB, GIB, beyond=MIB), num_users=1, autoscaler_min_gain=0.0)
    assert tried(eager) == [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 10000]
    assert eager.outcome()["ended_because"] == "cap"


def test_capacity_cap_reached_while_rising_is_not_converged():
    scaler = run_capacity(bandwidth_storage(100 * MIB, 100 * GIB), num_users=1, autoscaler_max_users=12)
    assert tried(scaler) == [1, 2, 4, 8, 12]
    assert scaler.steps[-1]["action"] == "stop" and "at the cap of 12 users/rank" in scaler.steps[-1]["reason"]
    out = scaler.outcome("window")
    assert out["ended_because"] == "cap" and out["converged"] is False
    assert out["peak_bandwidth_users"]["per_rank"] == 12 and out["knee_users"]["per_rank"] == 12
    assert out["summary"].startswith("not converged: the cap of 12 users/rank came first; peak 1.17 GiB/s")


def test_capacity_window_ran_out():
    scaler = search(autoscaler_mode="capacity", num_users=2)
    scaler.decide(measure(0, 2, read=GIB / 2))
    scaler.decide(measure(1, 4, read=GIB, write=GIB / 2))
    out = scaler.outcome("window")
    assert out["ended_because"] == "window" and out["converged"] is False
    assert out["summary"] == (
        "not converged in 20 s: peak 1.50 GiB/s at 4 users/rank (fleet 8), knee 4 users/rank (1.50 GiB/s); "
        "give a longer --duration"
    )


def test_capacity_zero_bandwidth_has_no_gain_ratio():
    scaler = search(autoscaler_mode="capacity", num_users=1)
    scaler.decide(measure(0, 1))
    scaler.decide(measure(1, 2, read=MIB))
    assert scaler.steps[1]["gain"] is None  # no ratio to a best of 0, but it gained
    assert scaler.outcome("window")["knee_users"]["per_rank"] == 2


def test_for_config_picks_the_mode_and_block_settings():
    assert isinstance(search(), QosSearch)
    scaler = search(
        autoscaler_mode="capacity", num_users=500, autoscaler_min_users=3, autoscaler_max_users=400, ranks=4
    )
    assert isinstance(scaler, CapacitySearch)
    out = scaler.outcome("window")
    assert (out["mode"], out["ranks"], out["step_s"]) == ("capacity", 4, STEP_S)
    assert (out["start_users_per_rank"], out["min_users_per_rank"], out["max_users_per_rank"]) == (400, 3, 400)
    assert out["steps"] == [] and out["search_s"] == 0.0 and out["peak_bandwidth_users"] is None


# -- options --


@pytest.mark.parametrize(
    "values, flag",
    [
        ({"autoscaler_min_users": 9, "autoscaler_max_users": 8}, "--autoscaler-min-users"),
        ({"request_rate": 5.0}, "--request-rate"),
        ({"use_burst_trace": True}, "--use-burst-trace"),
        ({"dataset_path": "conversations.json"}, "--dataset-path"),
        ({"max_requests": 100}, "--max-requests"),
        ({"io_trace_log": "trace.csv"}, "--io-trace-log"),
        ({"duration": 19.0}, "--duration"),
    ],
)
def test_check_refuses_with_the_flag_at_fault(values, flag):
    with pytest.raises(UsageError) as caught:
        autoscaler.check(config(**{"duration": 60.0, **values}))
    assert caught.value.option == flag
    assert str(caught.value).startswith(f"{flag}: ")
    autoscaler.check(config(**{"duration": 60.0, **values, "enable_autoscaling": False}))  # off: nothing is checked


def test_check_accepts_a_search_of_two_steps():
    autoscaler.check(config(duration=20.0, autoscaler_min_users=8, autoscaler_max_users=8))


def test_check_duration_message_names_the_steps():
    with pytest.raises(UsageError, match=r"--duration: 15 s is less than 2 steps of --autoscaler-step-s 10 s"):
        autoscaler.check(config(duration=15.0))


@pytest.mark.parametrize("num_users, expected", [(100, 64), (1, 5), (20, 20), (5, 5), (64, 64)])
def test_start_users_clamps_to_the_range(num_users, expected):
    cfg = config(num_users=num_users, autoscaler_min_users=5, autoscaler_max_users=64)
    assert autoscaler.start_users(cfg) == expected
    out = search(num_users=num_users, autoscaler_min_users=5, autoscaler_max_users=64).outcome("window")
    assert out["start_users_per_rank"] == expected
