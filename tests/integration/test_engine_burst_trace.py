"""BurstGPT replay on real runs: requests arrive at the trace's timestamps (scaled by --trace-speedup), a
replay of one cycle ends the run when its last request is served, and under mpirun the ranks share the rows."""

import shutil
import subprocess
import sys

import pytest
from engine_helpers import SHORT_RUN, kvcache, leftovers, load, mpirun_argv

HEADER = "Timestamp,Model,Request tokens,Response tokens,Total tokens,Log Type\n"
BURST_ROWS = 4  # requests per burst
BURSTS_AT_S = (0.0, 1.5, 3.0)  # seconds of replay at which each burst arrives
TOLERANCE_S = 0.5  # a burst is served within this of its time (small requests, idle workers)


def write_trace(path, rows):
    """rows: (timestamp, request tokens, response tokens), or a str written as it is."""
    lines = [r if isinstance(r, str) else f"{r[0]},ChatGPT,{r[1]},{r[2]},{r[1] + r[2]},Conversation log" for r in rows]
    path.write_text(HEADER + "".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def replay_run(tmp_path, trace, *args):
    cache = tmp_path / "cache"
    cache.mkdir(exist_ok=True)
    out = tmp_path / "R.json"
    done = kvcache(
        "run", *SHORT_RUN, "--num-users", "8", "--cache-dir", cache, "--output", out,
        "--use-burst-trace", "--burst-trace-path", trace, *args,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert leftovers(cache) == []
    return load(out)


@pytest.mark.parametrize("speedup", [1, 10])
def test_requests_arrive_at_the_trace_timestamps(tmp_path, speedup):
    # The trace's bursts are `speedup` times further apart than the replay's.
    rows = [(1000 + at * speedup + i * 0.001, 64 + i, 8) for at in BURSTS_AT_S for i in range(BURST_ROWS)]
    trace = write_trace(tmp_path / "trace.csv", rows)
    timing = ["--trace-speedup", speedup, "--stats-interval", "0.1"]
    result = replay_run(tmp_path, trace, *timing, "--replay-cycles", "1", "--duration", "30")
    assert result["requests"]["completed"] == len(rows)
    # One cycle: the run ends once the last burst is served, not at --duration.
    assert BURSTS_AT_S[-1] <= result["window"]["seconds"] < BURSTS_AT_S[-1] + TOLERANCE_S
    samples = result["timeseries"]
    for k, at in enumerate(BURSTS_AT_S):
        before, after = BURST_ROWS * k, BURST_ROWS * (k + 1)
        # Nothing of burst k is served before its time ...
        assert all(s["requests"] <= before for s in samples if s["t_s"] < at - 0.05), (k, samples)
        # ... and all of it soon after.
        served = next(s["t_s"] for s in samples if s["requests"] >= after)
        assert served <= at + TOLERANCE_S, (k, samples)
    report = result["modes"]["burst_trace"]["total"]
    assert report["files"] == [str(trace)]
    assert report["rows_replayed"] == len(rows) and report["rows_skipped"] == 0
    assert report["completed_cycles"] == 1
    last = (BURSTS_AT_S[-1] * speedup + (BURST_ROWS - 1) * 0.001) / speedup
    assert report["last_arrival_s"] == pytest.approx(last)
    assert 0 <= report["max_arrival_lag_s"] < 0.2


def test_speedup_zero_sends_every_row_at_once_over_the_cycles(tmp_path):
    rows = [(i * 3600.0, 32, i % 3) for i in range(20)] + ["broken,row"]  # 19 hours of trace
    trace = write_trace(tmp_path / "trace.csv", rows)
    result = replay_run(tmp_path, trace, "--trace-speedup", "0", "--replay-cycles", "3", "--duration", "30")
    assert result["requests"]["completed"] == 60
    assert result["window"]["seconds"] < 10
    report = result["modes"]["burst_trace"]["total"]
    assert (report["rows_replayed"], report["rows_skipped"], report["completed_cycles"]) == (60, 3, 3)
    assert "max_arrival_lag_s" not in report


@pytest.mark.mpi
@pytest.mark.skipif(shutil.which("mpirun") is None, reason="needs Open MPI's mpirun (make test installs it)")
def test_two_ranks_replay_the_trace_once_between_them(tmp_path):
    rows = [(i * 0.01, 50 + i, 5) for i in range(11)] + ["x,ChatGPT,1,1,2,Conversation log"]
    trace = write_trace(tmp_path / "trace.csv", rows)
    cache = tmp_path / "cache"
    cache.mkdir()
    argv = mpirun_argv(2) + [sys.executable, "-m", "kvcache", "run", *SHORT_RUN, "--cache-dir", str(cache)]
    argv += ["--output", str(tmp_path / "R.json"), "--use-burst-trace", "--burst-trace-path", str(trace)]
    argv += ["--replay-cycles", "1", "--duration", "30"]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=180, check=False)
    assert done.returncode == 0, done.stderr
    result = load(tmp_path / "R.json")
    assert result["ranks"] == 2
    # Row i is rank i % 2's: rows 0, 2, ..., 10 (6) and 1, 3, ..., 9 (5); the malformed row 11 is rank 1's.
    assert [r["requests"]["completed"] for r in result["per_rank"]] == [6, 5]
    assert result["requests"]["completed"] == 11
    mode = result["modes"]["burst_trace"]
    assert [(r["rank"], r["rows_replayed"], r["rows_skipped"]) for r in mode["per_rank"]] == [(0, 6, 0), (1, 5, 1)]
    assert (mode["total"]["rows_replayed"], mode["total"]["rows_skipped"]) == (11, 1)
    assert mode["total"]["completed_cycles"] == 1  # the ranks' one pass together, not a sum
    assert mode["total"]["files"] == [str(trace)]
    assert leftovers(cache) == []
