"""The engine under Debian's Open MPI on localhost: one window, one aggregated result, failures that fail."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
from engine_helpers import SHORT_RUN, leftovers, load, mpirun_argv

from kvcache.metrics import decode, merge, percentile_block

pytestmark = [
    pytest.mark.mpi,
    pytest.mark.skipif(shutil.which("mpirun") is None, reason="needs Open MPI's mpirun (make test installs it)"),
]


def engine_under_mpirun(ranks, *args):
    return mpirun_argv(ranks) + [sys.executable, "-m", "kvcache", "run", *[str(a) for a in args]]


def test_three_ranks_make_one_aggregated_result(tmp_path):
    cache = tmp_path / "cache"
    cache.mkdir()
    done = subprocess.run(
        engine_under_mpirun(3, *SHORT_RUN, "--duration", "3", "--cache-dir", cache, "--output", tmp_path / "R.json"),
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("storagebench.kvcache  status:") == 1  # only rank 0 prints the summary
    result = load(tmp_path / "R.json")
    assert result["status"] == "ok"
    assert result["ranks"] == 3
    assert result["environment"]["mpi"]["world_size"] == 3
    # Open MPI's mpirun outside any Slurm job: the ranks' parent is mpirun (or its orted), and no job id.
    assert result["environment"]["launcher"] == {"kind": "mpirun", "job_id": None, "step_id": None, "nodes": None}
    ranks_line = next(line for line in done.stdout.splitlines() if " rank(s) on " in line)
    assert ranks_line.endswith("model tiny-1b, launched by mpirun")
    per_rank = result["per_rank"]
    assert [r["rank"] for r in per_rank] == [0, 1, 2]
    assert len({r["seed"] for r in per_rank}) == 3
    assert result["config"]["seeds_per_rank"] == [r["seed"] for r in per_rank] == [42, 43, 44]  # each rank's own
    assert len({r["cache_namespace"] for r in per_rank}) == 3
    assert all(r["cache_namespace"].endswith(f"rank-{r['rank']}") for r in per_rank)
    for key in ("bytes_read", "bytes_written"):
        assert result["tiers"]["storage"][key] == sum(r["tiers"]["storage"][key] for r in per_rank) > 0
    assert result["requests"]["completed"] == sum(r["requests"]["completed"] for r in per_rank)
    # Pooled percentiles are those of the merged per-rank histograms, not an average of percentiles.
    for name, (tier, op) in {"storage.read": ("storage", "read"), "storage.write": ("storage", "write")}.items():
        pooled = merge(decode(r["histograms"][name]) for r in per_rank)
        assert result["tiers"][tier][f"{op}_latency_ms"] == percentile_block(pooled)
        rank_p95s = [r["tiers"][tier][f"{op}_latency_ms"]["p95"] for r in per_rank]
        assert result["aggregate"]["max_rank_p95_ms"][name] == max(rank_p95s)
    pooled = merge(decode(r["histograms"]["storage_per_request"]) for r in per_rank)
    assert result["latency_ms"]["storage_per_request"] == percentile_block(pooled)
    assert pooled.get_total_count() == result["requests"]["completed"]
    # The reference's figure over every rank: all tokens over all storage seconds (not a mean of ratios).
    reference = result["reference_metrics"]
    assert reference["tokens"] == sum(r["reference_metrics"]["tokens"] for r in per_rank)
    assert reference["storage_io_seconds"] == pytest.approx(
        sum(r["reference_metrics"]["storage_io_seconds"] for r in per_rank), abs=1e-5
    )
    for key in ("read_ops", "write_ops", "entries"):
        assert result["tiers"]["storage"][key] == sum(r["tiers"]["storage"][key] for r in per_rank) > 0
    # One window for all ranks, measured from the shared start barrier (immune to clock skew).
    window = result["window"]
    ends = [r["window"]["end_offset_s"] for r in per_rank]
    assert all(r["window"]["start_offset_s"] == 0.0 for r in per_rank)
    assert window["seconds"] == pytest.approx(max(ends), abs=1e-6)
    assert 3.0 <= window["seconds"]  # every rank ran its full 3 s window
    assert result["aggregate"]["first_done_s"] == pytest.approx(min(ends), abs=1e-6)
    # One host: its first rank sampled the device and audited the host for all three.
    [device] = result["device"]["per_host"]
    assert device["ranks"] == [0, 1, 2] and device["engine_read_bytes"] == result["tiers"]["storage"]["bytes_read"]
    [audit] = result["audit"]["per_host"]
    assert audit["ranks"] == [0, 1, 2] and audit["start"]["cache_dir_mount_options"] and audit["changed"] == []
    assert all(r["numa_nodes"] for r in per_rank) or not os.path.isdir("/sys/devices/system/node")
    assert leftovers(cache) == []


def test_a_failing_rank_fails_the_run_quickly(tmp_path):
    cache = tmp_path / "cache"
    cache.mkdir()
    moved = tmp_path / "moved-away"
    result_path = tmp_path / "R.json"
    started = time.monotonic()
    process = subprocess.Popen(
        engine_under_mpirun(3, *SHORT_RUN, "--duration", "120", "--cache-dir", cache, "--output", result_path),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        rank1 = None
        for _attempt in range(600):  # up to 60 s for rank 1 to start writing
            runs = [n for n in os.listdir(cache) if n.startswith("kvcache-run-")]
            candidate = cache / runs[0] / "rank-1" if runs else None
            if candidate and candidate.is_dir() and any(n.endswith(".kv") for n in os.listdir(candidate)):
                rank1 = candidate
                break
            time.sleep(0.1)
        assert rank1 is not None, "rank 1 never wrote an entry"
        os.rename(rank1, moved)  # rank 1's storage vanishes: its next file operation fails
        stderr = process.communicate(timeout=90)[1]
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    elapsed = time.monotonic() - started
    assert process.returncode != 0
    assert elapsed < 90, "the other ranks must stop long before the 120 s window ends"
    assert "rank 1" in stderr
    result = load(result_path)
    assert result["status"] == "failed"
    assert 1 in result["failed_ranks"]
    assert result["error"].startswith("rank 1:")
    assert leftovers(cache) == []  # every surviving rank cleaned its namespace; the run dir is gone


def test_ranks_that_mpirun_stops_after_a_rank_is_killed_remove_their_files(tmp_path):
    # A SIGKILLed rank leaves the others blocked in MPI; mpirun sends them SIGTERM, then SIGKILL a second later.
    cache = tmp_path / "cache"
    cache.mkdir()
    process = subprocess.Popen(
        engine_under_mpirun(3, *SHORT_RUN, "--duration", "120", "--cache-dir", cache, "--quiet"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        run_dir = None
        for _attempt in range(600):  # up to 60 s for every rank to write an entry
            runs = [cache / n for n in os.listdir(cache) if n.startswith("kvcache-run-")]
            ranks = [runs[0] / f"rank-{r}" for r in range(3)] if runs else []
            if ranks and all(d.is_dir() and any(n.endswith(".kv") for n in os.listdir(d)) for d in ranks):
                run_dir = runs[0]
                break
            time.sleep(0.1)
        assert run_dir is not None, "the ranks never all wrote an entry"
        owner = json.loads((run_dir / ".storagebench-kvcache-rank-1").read_text())
        os.kill(owner["pid"], signal.SIGKILL)
        process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode != 0
    left = leftovers(cache)
    # Ranks 0 and 2 removed their namespaces and owner records at once; only the killed rank's files stay.
    assert not [p for p in left if "rank-0" in p or "rank-2" in p], left
    assert f"{run_dir.name}/rank-1" in left and f"{run_dir.name}/.storagebench-kvcache-rank-1" in left
    cleaned = subprocess.run(
        [sys.executable, "-m", "kvcache", "clean", "--cache-dir", str(cache)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert cleaned.returncode == 0, cleaned.stderr
    assert f"removed {run_dir.name}" in cleaned.stdout
    assert leftovers(cache) == []


def test_bad_input_on_any_rank_makes_every_rank_exit_2_creating_nothing(tmp_path):
    cache = tmp_path / "cache"
    cache.mkdir()
    done = subprocess.run(
        engine_under_mpirun(2, *SHORT_RUN, "--duration", "1", "--cache-dir", cache, "--io-depth", "1024",
                            "--io-chunk-mib", "1024", "--output", tmp_path / "R.json"),
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert "--io-depth" in done.stderr and "rank 0" in done.stderr and "rank 1" in done.stderr
    assert not (tmp_path / "R.json").exists()
    assert leftovers(cache) == []


# Two runs on one communicator: in run 1 rank 1 reports three failures and rank 0 relays a stop only when
# `relay`; run 2 must find none of them. Rank 0 prints what each rank still received in run 2.
TWO_RUNS = """
import sys, time
from kvcache.mpi import open_comm

relay = sys.argv[1] == "relay"
comm = open_comm("on")
if comm.rank == 1:
    for n in range(3):
        comm.report_failure(f"failure {n}")
if comm.rank == 0 and relay:
    for _tick in range(500):  # up to 5 s for the first failure to arrive
        if comm.poll_failure() is not None:
            break
        time.sleep(0.01)
comm.finish()
comm.barrier()
time.sleep(0.2)  # anything left behind has arrived by now
stale = comm.poll_failure()
comm.finish()
found = comm.gather(stale)
if comm.rank == 0:
    print(f"stale: {found}")
"""


@pytest.mark.parametrize("relay", ["relay", "no-relay"])
def test_finish_leaves_no_failure_or_stop_message_for_the_next_run(relay):
    done = subprocess.run(
        mpirun_argv(2) + [sys.executable, "-c", TWO_RUNS, relay],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "stale: [None, None]"


# Progress samples on one communicator: ranks 1 and 2 send five each in run 1 while rank 0 reads only some;
# finish() must take the rest, so that run 2 finds none. Rank 0 prints what it read in run 1, then in run 2.
PROGRESS_RUNS = """
import time
from kvcache.mpi import open_comm

comm = open_comm("on")
read = []
if comm.rank != 0:
    for n in range(5):
        comm.send_progress({"t_s": n, "rank": comm.rank})
else:
    for _tick in range(500):  # up to 5 s for the first of them
        read += comm.poll_progress()
        if read:
            break
        time.sleep(0.01)
comm.finish()
comm.barrier()
time.sleep(0.2)  # anything left behind has arrived by now
stale = comm.poll_progress()
comm.finish()
if comm.rank == 0:
    print(f"read: {sorted(set(rank for rank, _point in read))} {all(p['rank'] == r for r, p in read)}")
    print(f"stale: {stale}")
"""


def test_finish_takes_every_progress_sample_left_for_the_next_run():
    done = subprocess.run(
        mpirun_argv(3) + [sys.executable, "-c", PROGRESS_RUNS],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    read, stale = done.stdout.strip().splitlines()
    assert read.startswith("read: [") and read.endswith("] True") and read != "read: [] True"
    assert stale == "stale: []"


def test_progress_live_under_mpirun_shows_the_fleet_on_rank_0(tmp_path):
    cache = tmp_path / "cache"
    cache.mkdir()
    done = subprocess.run(  # SHORT_RUN without its --quiet
        engine_under_mpirun(2, *SHORT_RUN[:-1], "--duration", "3", "--cache-dir", cache, "--progress", "live",
                            "--output", tmp_path / "R.json"),
        capture_output=True, text=True, timeout=180, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    # mpirun copies rank 0's stderr (a pipe) to ours; the view draws there all the same, once a second.
    assert "fleet: 2 ranks, 2 reporting" in done.stderr
    assert done.stderr.count("kvcache run  ") >= 3 and "storage" in done.stderr
    result = load(tmp_path / "R.json")
    assert result["status"] == "ok" and result["config"]["progress"] == "live"
    assert leftovers(cache) == []
