"""`kvcache run --io-trace-log` for real: no storage I/O (nothing in the cache dir but the run directory's own
bookkeeping, during the run; nothing at all after it), and a trace whose rows add up, tier by tier, to the bytes a
normal run of the same requests moves; `kvcache trace fio` turns it into a job fio parses."""

import csv
import io
import os
import re
import shutil
import subprocess
import sys
import time

import pytest
from engine_helpers import ENGINE, kvcache, leftovers, load, mpirun_argv

from kvcache.cachedir import MARKER, OWNER_FILE, RANK_DIR, RUN_PREFIX

zstandard = pytest.importorskip("zstandard")

TIER_NAMES = {"Tier-0": "gpu", "Tier-1": "cpu", "Tier-2": "storage"}
# One user, a fixed number of requests, no think time and seed 14: the same requests in both runs. The GPU and
# CPU tiers hold two or three of tiny-1b's entries, so that demotions reach the storage.
SAME_REQUESTS = [
    "--model", "tiny-1b", "--num-users", "1", "--max-requests", "20", "--performance-profile", "throughput",
    "--seed", "14", "--gpu-mem-gb", "0.05", "--cpu-mem-gb", "0.1", "--storage-capacity-gb", "0.6",
    "--duration", "120", "--quiet",
]  # fmt: skip


def trace_rows(path):
    with open(path, "rb") as raw:
        stream = zstandard.ZstdDecompressor().stream_reader(raw) if path.endswith(".zst") else raw
        return list(csv.DictReader(io.TextIOWrapper(stream, encoding="ascii", newline="")))


def row_sums(rows):
    sums = {}
    for row in rows:
        key = (TIER_NAMES[row["Tier"]], row["Operation"])
        sums[key] = sums.get(key, 0) + int(row["Object_Size_Bytes"])
    return sums


def test_trace_rows_add_up_to_what_a_normal_run_moves(tmp_path):
    normal_cache, trace_cache = tmp_path / "normal", tmp_path / "traced"
    normal_cache.mkdir()
    trace_cache.mkdir()
    normal = kvcache("run", *SAME_REQUESTS, "--cache-dir", normal_cache, "--output", tmp_path / "normal.json")
    assert normal.returncode == 0, normal.stderr
    trace = str(tmp_path / "ops.csv.zst")
    traced = kvcache(
        "run", *SAME_REQUESTS, "--cache-dir", trace_cache, "--output", tmp_path / "traced.json", "--io-trace-log", trace
    )
    assert traced.returncode == 0, traced.stderr
    assert leftovers(trace_cache) == []
    moved, logged = load(tmp_path / "normal.json"), load(tmp_path / "traced.json")
    assert moved["requests"]["completed"] == logged["requests"]["completed"] == 20
    rows = trace_rows(trace)
    sums = row_sums(rows)
    for tier in ("gpu", "cpu", "storage"):
        assert sums.get((tier, "Read"), 0) == moved["tiers"][tier]["bytes_read"], tier
        assert sums.get((tier, "Write"), 0) == moved["tiers"][tier]["bytes_written"], tier
        assert logged["tiers"][tier]["bytes_read"] == moved["tiers"][tier]["bytes_read"]
        assert logged["tiers"][tier]["read_latency_ms"]["count"] == 0  # counted, never timed
        assert logged["tiers"][tier]["write_latency_ms"]["p95"] is None
        assert logged["tiers"][tier]["traced"] is True
        assert logged["tiers"][tier]["read_ops"] == moved["tiers"][tier]["read_ops"]
    assert moved["tiers"]["storage"]["bytes_written"] > 0 and moved["tiers"]["storage"]["bytes_read"] > 0
    assert logged["events"] == moved["events"]
    phases = {(r["Phase"], r["Operation"]) for r in rows}
    assert {("Prefill", "Write"), ("Decode", "Read"), ("Evict", "Read"), ("Evict", "Write")} <= phases
    evict_reads = sum(1 for r in rows if r["Phase"] == "Evict" and r["Operation"] == "Read")
    assert evict_reads == moved["events"]["demotions.gpu"] + moved["events"]["demotions.cpu"]
    report = logged["modes"]["io_trace"]["per_rank"][0]
    assert report["path"] == trace and report["rows"] == len(rows) and report["compressed"] is True
    assert report["write_bytes"] == sum(v for (t, op), v in sums.items() if op == "Write")
    assert any(w.startswith("--io-trace-log: no storage I/O was done") for w in logged["warnings"])
    assert logged["tiers"]["storage"]["io_engine"] == "none"
    assert logged["environment"]["io_engine"] == "none"  # what did the I/O: nothing
    assert moved["environment"]["io_engine"] in ("direct", "buffered")

    job = tmp_path / "job.fio"
    made = kvcache("trace", "fio", trace, "--output", job)
    assert made.returncode == 0, made.stderr
    text = job.read_text()
    storage_ops = [r for r in rows if r["Tier"] == "Tier-2"]
    reads = sum(1 for r in storage_ops if r["Operation"] == "Read")
    assert f"rwmixread={round(reads * 100 / len(storage_ops))}\n" in text
    assert f"io_size={sum(int(r['Object_Size_Bytes']) for r in storage_ops)}\n" in text
    if shutil.which("fio"):
        parsed = subprocess.run(["fio", "--parse-only", str(job)], capture_output=True, text=True, check=False)
        assert parsed.returncode == 0, parsed.stderr


def test_no_file_in_the_cache_dir_during_the_run_and_no_sla_verdict(tmp_path):
    """While the run lasts, the cache dir holds only its run directory, the run's marker, the rank's owner
    record and the (empty) rank directory; afterwards nothing."""
    cache = tmp_path / "cache"
    cache.mkdir()
    trace = tmp_path / "ops.csv"
    argv = ENGINE + ["run", "--model", "tiny-1b", "--num-users", "2", "--gpu-mem-gb", "0.05", "--cpu-mem-gb", "0.1"]
    argv += ["--storage-capacity-gb", "0.6", "--duration", "3", "--quiet", "--cache-dir", str(cache)]
    argv += ["--performance-profile", "latency", "--io-trace-log", str(trace), "--output", str(tmp_path / "R.json")]
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    seen = set()
    while process.poll() is None:
        seen.update(leftovers(cache))
        time.sleep(0.05)
    _out, err = process.communicate()
    assert process.returncode == 0, err
    assert leftovers(cache) == []
    run_dirs = {p.split(os.sep)[0] for p in seen}
    assert len(run_dirs) == 1 and next(iter(run_dirs)).startswith(RUN_PREFIX)
    for path in seen:
        parts = path.split(os.sep)[1:]
        assert parts in ([], [MARKER], ["rank-0"]) or (len(parts) == 1 and OWNER_FILE.fullmatch(parts[0])), path
    assert any(RANK_DIR.fullmatch(p.split(os.sep)[-1]) for p in seen)  # it was looked at while it ran
    result = load(tmp_path / "R.json")
    assert result["sla"]["passed"] is None
    assert result["sla"]["no_verdict_reason"].startswith("an --io-trace-log run does no storage I/O")
    assert "no SLA verdict" in err and "PASS" not in _out
    assert len(trace_rows(str(trace))) == result["modes"]["io_trace"]["total"]["rows"] > 0


def test_bad_trace_paths_exit_2_and_create_nothing(tmp_path):
    cache = tmp_path / "cache"
    cache.mkdir()
    existing = tmp_path / "mine.csv"
    existing.write_text("not ours\n")
    base = ["run", "--model", "tiny-1b", "--num-users", "1", "--duration", "1", "--quiet", "--cache-dir", cache]
    cases = [
        (tmp_path / "missing" / "t.csv", "the directory .* does not exist"),
        (existing, "mine.csv exists; give a new path"),
    ]
    for path, message in cases:
        done = kvcache(*base, "--io-trace-log", path)
        assert done.returncode == 2, done.stderr
        assert done.stderr.startswith("kvcache run: error: --io-trace-log: "), done.stderr
        assert re.search(message, done.stderr), done.stderr
        assert leftovers(cache) == []
    assert existing.read_text() == "not ours\n"
    assert sorted(os.listdir(tmp_path)) == ["cache", "mine.csv"]


@pytest.mark.mpi
@pytest.mark.skipif(shutil.which("mpirun") is None, reason="needs Open MPI's mpirun (make test installs it)")
def test_one_trace_per_rank_under_mpi(tmp_path):
    cache = tmp_path / "cache"
    cache.mkdir()
    trace = tmp_path / "ops.csv"
    argv = mpirun_argv(2) + [sys.executable, "-m", "kvcache", "run", *SAME_REQUESTS, "--cache-dir", str(cache)]
    argv += ["--io-trace-log", str(trace), "--output", str(tmp_path / "R.json")]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=180, check=False)
    assert done.returncode == 0, done.stderr
    assert not trace.exists()
    result = load(tmp_path / "R.json")
    reports = result["modes"]["io_trace"]["per_rank"]
    assert [r["path"] for r in reports] == [str(tmp_path / f"ops.rank{rank}.csv") for rank in (0, 1)]
    for report in reports:
        assert len(trace_rows(report["path"])) == report["rows"] > 0
    assert result["modes"]["io_trace"]["total"]["rows"] == sum(r["rows"] for r in reports)
    assert leftovers(cache) == []


def test_a_trace_run_holds_no_cpu_tier_bytes_so_the_host_memory_check_leaves_it_out(tmp_path):
    """A CPU tier far beyond this host's memory: refused for a real run (its bytes are real), fine for a trace
    run, which only accounts its entries."""
    huge = ["--model", "tiny-1b", "--num-users", "1", "--max-requests", "2", "--gpu-mem-gb", "0", "--quiet",
            "--cpu-mem-gb", "100000", "--cache-dir", tmp_path]  # fmt: skip
    real = kvcache("run", *huge)
    assert real.returncode == 2 and "--cpu-mem-gb" in real.stderr and "available memory" in real.stderr
    traced = kvcache("run", *huge, "--io-trace-log", tmp_path / "t.csv", "--output", tmp_path / "R.json")
    assert traced.returncode == 0, traced.stderr
    assert load(tmp_path / "R.json")["tiers"]["cpu"]["capacity_bytes_per_rank"] == 100000 << 30
