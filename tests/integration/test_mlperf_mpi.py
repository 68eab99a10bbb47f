"""`kvcache mlperf run` under Debian's Open MPI on localhost: every rank is a client of one synchronized trial, and a
rank killed or failing in a trial makes that trial INVALID (never averaged away)."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
from engine_helpers import kvcache, mpirun_argv

from kvcache.mlperf import layout

pytestmark = [
    pytest.mark.mpi,
    pytest.mark.skipif(shutil.which("mpirun") is None, reason="needs Open MPI's mpirun (make test installs it)"),
]

OPEN = ["--category", "open", "--option", "1", "--model", "tiny-1b", "--num-users", "2", "--gpu-mem-gb", "0"]
OPEN += ["--cpu-mem-gb", "0", "--delay", "0", "--quiet"]


def mlperf_under_mpirun(tmp_path, ranks, *args):
    cache = tmp_path / "cache"
    cache.mkdir(exist_ok=True)
    engine = [sys.executable, "-m", "kvcache", "mlperf", "run", *OPEN, "--results-dir", str(tmp_path / "results")]
    return mpirun_argv(ranks) + engine + ["--cache-dir", str(cache), *[str(a) for a in args]]


def read(path):
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)


def checked(tmp_path):
    """The checker's exit code, overall verdict and every reason of every run directory."""
    done = kvcache("mlperf", "check", tmp_path / "results", "--json")
    report = json.loads(done.stdout)
    return done.returncode, report["verdict"], [reason for run in report["runs"] for reason in run["reasons"]]


def wait_for(found, what, seconds=60.0):
    """Poll `found()` until it returns something (bounded)."""
    for _attempt in range(int(seconds * 10)):
        value = found()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"{what} never happened in {seconds:g} s")


def rank1_writing(cache):
    """Rank 1's cache namespace once it holds an entry (it is inside trial 1's window), else None."""
    runs = [n for n in os.listdir(cache) if n.startswith("kvcache-run-")]
    candidate = cache / runs[0] / "rank-1" if runs else None
    if candidate and candidate.is_dir() and any(n.endswith(".kv") for n in os.listdir(candidate)):
        return candidate
    return None


def descendants(pid):
    """Every process below `pid` (Open MPI's local ranks are mpirun's children; bounded by /proc's size)."""
    parents = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat", encoding="utf-8") as handle:
                    parents[int(entry)] = int(handle.read().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
    below, frontier = set(), {pid}
    for _depth in range(8):
        frontier = {p for p, parent in parents.items() if parent in frontier} - below
        if not frontier:
            break
        below |= frontier
    return below


def rank_pid(mpirun_pid, rank):
    for pid in descendants(mpirun_pid):
        try:
            with open(f"/proc/{pid}/environ", "rb") as handle:
                environ = handle.read().split(b"\0")
        except OSError:
            continue
        if f"OMPI_COMM_WORLD_RANK={rank}".encode() in environ:
            return pid
    return None


def test_two_ranks_write_both_rank_files_and_a_summary_summing_both(tmp_path):
    done = subprocess.run(
        mlperf_under_mpirun(tmp_path, 2, "--trials", "2", "--duration", "2"),
        capture_output=True, text=True, timeout=180, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("option 1 (tiny-1b): storage read") == 1  # only rank 0 prints
    (run_dir,) = layout.find_run_dirs(str(tmp_path / "results"))
    timestamp = os.path.basename(run_dir)
    meta = read(layout.metadata_file(run_dir, timestamp))
    assert meta["world_size"] == 2 and [f["rank"] for f in meta["cluster"]["end"]] == [0, 1]
    per_trial = []
    for trial in (1, 2):
        trial_dir = layout.trial_dir(run_dir, "1", trial)
        assert read(os.path.join(trial_dir, layout.TRIAL_FILE))["world_size"] == 2
        ranks = [read(layout.rank_file(trial_dir, rank, timestamp)) for rank in (0, 1)]
        assert [r["rank"] for r in ranks] == [0, 1] and [r["rank_result"]["seed"] for r in ranks] == [42, 43]
        per_trial.append(sum(r["rank_result"]["tiers"]["storage"]["read_bandwidth_bytes_per_s"] for r in ranks))
    summary = read(layout.summary_file(run_dir, timestamp))
    assert summary["total_ranks"] == 2
    assert summary["options"]["1"]["rules"]["read_bandwidth_bytes_per_s"]["per_trial"] == pytest.approx(per_trial)
    code, verdict, reasons = checked(tmp_path)
    assert (code, verdict) == (0, "OPEN") and "1 rank" not in " ".join(reasons)


def test_a_rank_killed_in_trial_1_leaves_it_interrupted_and_the_checker_says_invalid(tmp_path):
    process = subprocess.Popen(
        mlperf_under_mpirun(tmp_path, 2, "--trials", "2", "--duration", "60"),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        wait_for(lambda: rank1_writing(tmp_path / "cache"), "rank 1 writing in trial 1")
        pid = wait_for(lambda: rank_pid(process.pid, 1), "finding rank 1's process", seconds=10)
        os.kill(pid, signal.SIGKILL)
        process.communicate(timeout=90)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode != 0
    (run_dir,) = layout.find_run_dirs(str(tmp_path / "results"))
    record = read(os.path.join(layout.trial_dir(run_dir, "1", 1), layout.TRIAL_FILE))
    assert record["state"] == layout.STARTED
    assert not os.path.exists(layout.trial_dir(run_dir, "1", 2))
    code, verdict, reasons = checked(tmp_path)
    assert (code, verdict) == (1, "INVALID")
    assert any("option 1" in r and "trial 1" in r and "interrupted" in r for r in reasons), reasons


def test_a_rank_whose_storage_vanishes_fails_the_trial_and_the_checker_names_it(tmp_path):
    process = subprocess.Popen(
        mlperf_under_mpirun(tmp_path, 2, "--trials", "2", "--duration", "60"),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        rank1 = wait_for(lambda: rank1_writing(tmp_path / "cache"), "rank 1 writing in trial 1")
        os.rename(rank1, tmp_path / "moved-away")  # rank 1's next file operation fails
        stderr = process.communicate(timeout=90)[1]
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 1, stderr
    assert "option 1 trial 1" in stderr and "rank 1" in stderr
    (run_dir,) = layout.find_run_dirs(str(tmp_path / "results"))
    timestamp = os.path.basename(run_dir)
    record = read(os.path.join(layout.trial_dir(run_dir, "1", 1), layout.TRIAL_FILE))
    assert record["state"] == layout.COMPLETE and record["status"] == "failed" and 1 in record["failed_ranks"]
    assert read(layout.rank_file(layout.trial_dir(run_dir, "1", 1), 1, timestamp))["rank_result"]["status"] == "failed"
    assert not os.path.exists(layout.trial_dir(run_dir, "1", 2))  # a failed trial stops the invocation
    meta = read(layout.metadata_file(run_dir, timestamp))
    assert meta["state"] == "failed" and meta["error"].startswith("option 1 trial 1: rank 1")
    assert read(layout.summary_file(run_dir, timestamp))["options"]["1"]["complete_trials"] == []
    code, verdict, reasons = checked(tmp_path)
    assert (code, verdict) == (1, "INVALID")
    assert any("option 1" in r and "trial 1" in r and "rank 1" in r for r in reasons), reasons


def test_what_if_under_two_ranks_prints_one_plan_with_both_rank_files_and_creates_nothing(tmp_path):
    done = subprocess.run(
        mlperf_under_mpirun(tmp_path, 2, "--trials", "2", "--duration", "2", "--what-if", "--json"),
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    plan = json.loads(done.stdout)  # one object: only rank 0 prints
    assert plan["world_size"] == 2 and plan["largest_option"] == "1"
    (option,) = plan["options"]
    assert [len(t["rank_files"]) for t in option["trials"]] == [2, 2]
    assert not (tmp_path / "results").exists() and os.listdir(tmp_path / "cache") == []


# Rank 1 fails its preflight with an unexpected error (not a refusal): the driver's plan_rank raises on rank 1 only.
FAILING_PREFLIGHT = """
import os, sys
from kvcache import cli
from kvcache.mlperf import driver

def broken(*_args, **_kwargs):
    raise OSError("disk_usage failed on rank 1")

if os.environ["OMPI_COMM_WORLD_RANK"] == "1":
    driver.plan_rank = broken
sys.exit(cli.main(sys.argv[1:]))
"""


def test_an_unexpected_error_in_one_ranks_preflight_ends_the_job_instead_of_hanging(tmp_path):
    argv = mlperf_under_mpirun(tmp_path, 2, "--trials", "1", "--duration", "1")
    at = argv.index("-m")
    argv[at : at + 2] = ["-c", FAILING_PREFLIGHT]  # the same command line, through the script above
    started = time.monotonic()
    done = subprocess.run(argv, capture_output=True, text=True, timeout=90, check=False)
    assert done.returncode != 0
    assert time.monotonic() - started < 60, "rank 0 must not wait for rank 1 in a collective"
    assert "OSError: disk_usage failed on rank 1" in done.stderr
    assert not (tmp_path / "results").exists()
