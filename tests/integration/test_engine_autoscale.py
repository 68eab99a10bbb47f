"""Autoscaling on real `python -m kvcache run` processes: the users really change during the window, in steps.

The workload is made to scale with its users: a toy model (tiny entries, so the I/O costs next to nothing) and
a fixed generation time of 0.1 s per request, so that a closed-loop user makes about ten requests a second
whatever the others do: the requests of a step follow its active users. The QoS targets are set huge (every
step holds) or tiny (every step misses), so the search's path is known in advance.
"""

import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
import yaml
from engine_helpers import ENGINE, kvcache, leftovers, load, mpirun_argv

GENERATION_TOKENS = 20  # x 0.005 s per token (--generation-mode fast below): 0.1 s per request
HUGE_TARGET_MS = 1e6  # every step holds
TINY_TARGET_MS = 0.001  # every step misses
STEP_S = 1
WAIT_S = 30.0


def workload(tmp_path, target_ms):
    """A --config file: the toy model, sleep-bound requests, and every QoS class's p95 target `target_ms`."""
    template = {"context_range": [256, 512], "generation_range": [GENERATION_TOKENS, GENERATION_TOKENS]}
    config = {
        "models": {"toy": {"layers": 1, "kv_heads": 1, "head_dim": 64}},
        "user_templates": {name: template for name in ("chatbot", "coding", "document")},
        "generation_timing": {"fast": 0.005},
        "qos_profiles": {name: {"target_latency_p95_ms": target_ms} for name in ("interactive", "responsive", "batch")},
    }
    path = tmp_path / f"workload-{target_ms:g}.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    # fmt: off
    return ["--config", path, "--model", "toy", "--gpu-mem-gb", "0", "--cpu-mem-gb", "0", "--io-chunk-mib", "1",
            "--performance-profile", "throughput", "--generation-mode", "fast", "--quiet",
            "--enable-autoscaling", "--autoscaler-step-s", STEP_S]
    # fmt: on


def cache_of(tmp_path):
    cache = tmp_path / "cache"
    cache.mkdir(exist_ok=True)
    return cache


def autoscaled(tmp_path, target_ms, *args):
    cache = cache_of(tmp_path)
    done = kvcache("run", *workload(tmp_path, target_ms), "--cache-dir", cache, "--output", tmp_path / "R.json", *args)
    assert done.returncode == 0, done.stderr
    assert leftovers(cache) == []
    return load(tmp_path / "R.json")


def counts(timeline):
    return [users for _t, users in timeline]


def test_closed_loop_users_grow_at_each_step_and_the_requests_with_them(tmp_path):
    result = autoscaled(tmp_path, HUGE_TARGET_MS, "--num-users", "1", "--autoscaler-max-users", "8", "--duration", "4")
    block = result["autoscaling"]
    assert block["mode"] == "qos" and block["ranks"] == 1
    steps = block["steps"]
    assert [s["users_per_rank"] for s in steps] == [1, 2, 4, 8]
    assert block["ended_because"] == "cap" and block["largest_held"] == {"per_rank": 8, "fleet": 8}
    [rank] = result["per_rank"]
    timeline = rank["users_timeline"]
    assert counts(timeline) == [1, 2, 4, 8]
    # Each count from the end of the step that decided it, the first from the window's start.
    assert timeline[0][0] == 0.0
    for (at, _users), step in zip(timeline[1:], steps):
        assert step["t_end_s"] <= at < step["t_end_s"] + 0.5
    requests = [s["requests"] for s in steps]
    assert all(later > earlier for earlier, later in zip(requests, requests[1:])), requests
    assert requests[-1] >= 4 * requests[0], requests  # 8 users make about 8 x what 1 makes
    assert sum(requests) <= result["requests"]["completed"]
    # The time series samples every second, on the steps' grid: each point shows the users of its step.
    assert [p["users"] for p in result["timeseries"]][:4] == [1, 2, 4, 8]
    assert result["window"]["seconds"] == pytest.approx(4.0, abs=0.5)


def test_tiny_targets_shrink_the_users_to_the_minimum_parked_users_stop_asking_and_nothing_holds(tmp_path):
    result = autoscaled(tmp_path, TINY_TARGET_MS, "--num-users", "8", "--duration", "6")
    block = result["autoscaling"]
    steps = block["steps"]
    assert [s["users_per_rank"] for s in steps] == [8, 4, 2, 1]
    assert all(s["holds"] is False for s in steps)
    assert block["ended_because"] == "nothing_holds" and block["converged"] is False
    assert block["max_users"] is None and block["largest_held"] is None
    assert block["smallest_missed"] == {"per_rank": 1, "fleet": 1}
    assert counts(result["per_rank"][0]["users_timeline"]) == [8, 4, 2, 1]
    # Parked users make no request: a step's requests fall with its active users.
    requests = [s["requests"] for s in steps]
    assert all(later < earlier for earlier, later in zip(requests, requests[1:])), requests
    assert requests[-1] * 4 <= requests[0], requests
    # The search stopped after its 4th step: the window ended there, not at --duration.
    assert result["window"]["seconds"] < 5.0


def test_closed_loop_users_beyond_max_concurrent_requests_wait_for_a_slot(tmp_path):
    result = autoscaled(
        tmp_path, HUGE_TARGET_MS, "--num-users", "1", "--autoscaler-max-users", "4", "--max-concurrent-requests", "2",
        "--duration", "3",
    )  # fmt: skip
    steps = result["autoscaling"]["steps"]
    assert [s["users_per_rank"] for s in steps] == [1, 2, 4]
    one, two, four = (s["requests"] for s in steps)
    assert two >= 1.6 * one and four <= 1.4 * two, (one, two, four)  # 2 requests at a time at most


def test_open_loop_users_and_workers_grow(tmp_path):
    result = autoscaled(
        tmp_path, HUGE_TARGET_MS, "--user-loop", "open", "--num-users", "2", "--autoscaler-max-users", "8",
        "--duration", "3",
    )  # fmt: skip
    steps = result["autoscaling"]["steps"]
    assert [s["users_per_rank"] for s in steps] == [2, 4, 8]
    assert counts(result["per_rank"][0]["users_timeline"]) == [2, 4, 8]
    requests = [s["requests"] for s in steps]
    # The workers grew with the users: the load did too. 4x the users gives 2x the requests on a quiet disk, but
    # a loaded one (CI's, with other tests' I/O) caps it near 1.4x; workers stuck at 2 would give about 1x.
    assert requests[-1] >= 1.25 * requests[0], requests


def test_a_sigint_during_an_autoscaled_run_fails_it_within_a_step(tmp_path):
    step_s = 2
    cache = cache_of(tmp_path)
    args = workload(tmp_path, HUGE_TARGET_MS)
    args[args.index("--autoscaler-step-s") + 1] = step_s
    process = subprocess.Popen(
        ENGINE + ["run", *map(str, args), "--num-users", "2", "--duration", "60", "--cache-dir", str(cache),
                  "--output", str(tmp_path / "R.json")],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + WAIT_S
        while not any(n.endswith(".kv") for n in leftovers(cache)):
            assert process.poll() is None and time.monotonic() < deadline, "the run never wrote an entry"
            time.sleep(0.05)
        signalled = time.monotonic()
        process.send_signal(signal.SIGINT)
        stdout, stderr = process.communicate(timeout=WAIT_S)
        took = time.monotonic() - signalled
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 1, stderr
    assert took < step_s + 5, took  # the rest of the step, the exchange, the result
    result = load(tmp_path / "R.json")
    assert result["status"] == "failed" and "SIGINT" in result["error"]
    block = result["autoscaling"]
    assert block["ended_because"] == "failed" and block["steps"][-1]["action"] == "stop"
    assert "SIGINT" in block["steps"][-1]["reason"]
    assert "PASS" not in stdout
    assert leftovers(cache) == []


REFUSED = {
    "request rate": (["--request-rate", "5"], "--request-rate"),
    "max requests": (["--max-requests", "10"], "--max-requests"),
    "io trace": (["--io-trace-log", "TRACE"], "--io-trace-log"),
    "burst trace": (["--use-burst-trace", "--burst-trace-path", "TRACE"], "--use-burst-trace"),
    "one step": (["--duration", "1"], "--duration"),
    "min above max": (["--autoscaler-min-users", "4", "--autoscaler-max-users", "2"], "--autoscaler-min-users"),
}


@pytest.mark.parametrize("case", REFUSED, ids=list(REFUSED))
def test_autoscaling_with_what_it_cannot_search_exits_2_creating_nothing(tmp_path, case):
    extra, flag = REFUSED[case]
    trace = tmp_path / "trace.csv"
    trace.write_text("Timestamp,Model,Request tokens,Response tokens,Total tokens,Log Type\n0,ChatGPT,64,8,72,x\n")
    extra = [str(trace) if a == "TRACE" and "burst" in case else a for a in extra]
    extra = [str(tmp_path / "io.csv") if a == "TRACE" else a for a in extra]
    cache = cache_of(tmp_path)
    done = kvcache(
        "run", *workload(tmp_path, HUGE_TARGET_MS), "--duration", "4", *extra, "--cache-dir", cache,
        "--output", tmp_path / "R.json",
    )  # fmt: skip
    assert done.returncode == 2, done.stdout + done.stderr
    message = done.stderr.strip()
    assert message.startswith(f"kvcache run: error: {flag}: ") and "\n" not in message, message
    assert leftovers(cache) == [] and not (tmp_path / "R.json").exists() and not (tmp_path / "io.csv").exists()


needs_mpirun = pytest.mark.skipif(shutil.which("mpirun") is None, reason="needs Open MPI's mpirun")


def under_mpirun(tmp_path, *args):
    cache = cache_of(tmp_path)
    argv = [*map(str, workload(tmp_path, HUGE_TARGET_MS)), *map(str, args)]
    return cache, mpirun_argv(2) + [sys.executable, "-m", "kvcache", "run", *argv, "--cache-dir", str(cache),
                                    "--output", str(tmp_path / "R.json")]  # fmt: skip


@pytest.mark.mpi
@needs_mpirun
def test_under_mpirun_both_ranks_change_their_users_together(tmp_path):
    cache, argv = under_mpirun(tmp_path, "--num-users", "1", "--autoscaler-max-users", "4", "--duration", "3")
    done = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    result = load(tmp_path / "R.json")
    timelines = [r["users_timeline"] for r in result["per_rank"]]
    assert counts(timelines[0]) == counts(timelines[1]) == [1, 2, 4]
    for (at0, _u0), (at1, _u1) in zip(*timelines):
        assert abs(at0 - at1) < 0.5  # the same step, on each rank's clock from the shared start
    block = result["autoscaling"]
    assert block["ranks"] == 2
    assert [(s["users_per_rank"], s["users_total"]) for s in block["steps"]] == [(1, 2), (2, 4), (4, 8)]
    assert block["largest_held"] == {"per_rank": 4, "fleet": 8}
    assert block["steps"][0]["requests"] > 0
    # The fleet's time series sums the ranks' users.
    assert [p["users"] for p in result["timeseries"]][:3] == [2, 4, 8]
    assert leftovers(cache) == []


@pytest.mark.mpi
@needs_mpirun
def test_under_mpirun_a_rank_failing_mid_window_ends_the_autoscaled_run_on_both(tmp_path):
    cache, argv = under_mpirun(tmp_path, "--num-users", "2", "--duration", "60")
    started = time.monotonic()
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        rank1 = None
        while rank1 is None:
            assert process.poll() is None and time.monotonic() < deadline, "rank 1 never wrote an entry"
            runs = [n for n in os.listdir(cache) if n.startswith("kvcache-run-")]
            candidate = cache / runs[0] / "rank-1" if runs else None
            if candidate and candidate.is_dir() and any(n.endswith(".kv") for n in os.listdir(candidate)):
                rank1 = candidate
            time.sleep(0.05)
        os.rename(rank1, tmp_path / "moved-away")  # rank 1's storage vanishes: its next file operation fails
        stderr = process.communicate(timeout=WAIT_S)[1]
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode != 0
    assert time.monotonic() - started < 45, "both ranks must stop within a step of the failure"
    result = load(tmp_path / "R.json")
    assert result["status"] == "failed" and result["error"].startswith("rank 1:"), result["error"]
    assert 1 in result["failed_ranks"]
    block = result["autoscaling"]
    assert block["ended_because"] == "failed" and "rank 1" in block["steps"][-1]["reason"]
    assert "rank 1" in stderr
    assert leftovers(cache) == []
