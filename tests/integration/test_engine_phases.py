"""The runner's phases on real runs: --prefill-only (writes, never reads), --decode-only (entries written
before the window, then only read) and --precondition (the storage filled before the window, reported
apart from it); each leaves nothing in the cache dir."""

import signal
import subprocess
import time

from engine_helpers import ENGINE, kvcache, leftovers, load

from kvcache.runner import DECODE_ENTRIES_PER_USER
from kvcache.units import GIB

SEED = 14  # user 0 is a chatbot user: small entries (see test_engine_reference_metrics)
STORAGE_ONLY = ["--model", "tiny-1b", "--gpu-mem-gb", "0", "--cpu-mem-gb", "0", "--seed", SEED]
CAPACITY_GB = 1


def run(tmp_path, *args, quiet=True):
    cache = tmp_path / "cache"
    cache.mkdir(parents=True)
    done = kvcache(
        "run", *STORAGE_ONLY, "--storage-capacity-gb", CAPACITY_GB, "--cache-dir", cache,
        "--output", tmp_path / "R.json", *(["--quiet"] if quiet else []), *args,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert leftovers(cache) == []  # entries and precondition files alike are gone
    return load(tmp_path / "R.json"), done


def test_prefill_only_writes_and_never_reads(tmp_path):
    result, _done = run(tmp_path, "--prefill-only", "--num-users", "2", "--max-requests", "6")
    assert result["requests"]["completed"] == 6
    assert result["tiers"]["storage"]["bytes_written"] > 0
    for tier in ("gpu", "cpu", "storage"):
        assert result["tiers"][tier]["bytes_read"] == 0, tier
        assert result["tiers"][tier]["read_latency_ms"]["count"] == 0, tier


def test_prefill_only_reads_no_memory_tier_either(tmp_path):
    # The entries fit the CPU tier, where a normal run's later turns and decode steps would hit.
    common = ("--num-users", "1", "--max-requests", "4", "--cpu-mem-gb", "3")
    plain, _done = run(tmp_path / "plain", *common)
    prefill, _done = run(tmp_path / "prefill", *common, "--prefill-only")
    assert plain["tiers"]["cpu"]["bytes_read"] > 0
    assert prefill["tiers"]["cpu"]["bytes_written"] > 0
    assert prefill["tiers"]["cpu"]["bytes_read"] == prefill["tiers"]["storage"]["bytes_read"] == 0


def test_decode_only_reads_entries_written_before_the_window_and_writes_nothing(tmp_path):
    result, _done = run(tmp_path, "--decode-only", "--num-users", "2", "--max-requests", "6")
    assert result["requests"]["completed"] == 6
    storage = result["tiers"]["storage"]
    assert storage["bytes_written"] == 0 and storage["write_latency_ms"]["count"] == 0
    assert storage["bytes_read"] > 0
    # Each request reads one whole entry, then once per decode batch: a multiple of one entry's size.
    report = result["modes"]["decode_only"]["total"]
    assert report["entries_written"] == report["entries_held"] == 2 * DECODE_ENTRIES_PER_USER
    entry = report["bytes_written"] // report["entries_written"]
    assert storage["bytes_read"] % entry == 0 and storage["bytes_read"] >= 6 * 2 * entry


def test_preconditioning_is_reported_apart_from_the_window(tmp_path):
    common = ("--num-users", "1", "--max-requests", "3")
    plain, _done = run(tmp_path / "plain", *common)
    conditioned, done = run(tmp_path / "conditioned", *common, "--precondition", "--precondition-threads", "2",
                            quiet=False)  # fmt: skip
    report = conditioned["modes"]["precondition"]["total"]
    assert report["bytes_written"] == report["target_bytes"] == 2 * CAPACITY_GB * GIB  # 0: twice the capacity
    assert report["footprint_bytes"] <= CAPACITY_GB * GIB and report["writers"] == 2
    assert report["elapsed_s"] > 0 and report["write_bandwidth_bytes_per_s"] > 0
    # The window's bytes are the workload's only: the same seed writes the same with and without it.
    assert conditioned["tiers"]["storage"]["bytes_written"] == plain["tiers"]["storage"]["bytes_written"]
    assert "precondition" not in plain.get("modes", {})
    assert "preconditioning: writing 2.00 GiB" in done.stderr and "preconditioning: done" in done.stderr


def test_preconditioning_with_a_given_size(tmp_path):
    result, done = run(tmp_path, "--num-users", "1", "--max-requests", "1", "--precondition",
                       "--precondition-size-gb", "0.25")  # fmt: skip
    assert result["modes"]["precondition"]["total"]["bytes_written"] == GIB // 4
    assert "preconditioning" not in done.stderr  # --quiet


def test_a_signal_while_preconditioning_fails_the_run_and_leaves_nothing(tmp_path):
    cache = tmp_path / "cache"
    cache.mkdir()
    argv = ENGINE + [str(a) for a in STORAGE_ONLY] + [
        "run", "--num-users", "1", "--storage-capacity-gb", str(CAPACITY_GB), "--cache-dir", str(cache),
        "--output", str(tmp_path / "R.json"), "--precondition", "--precondition-size-gb", "500",
        "--io-engine", "buffered",
    ]  # fmt: skip
    argv.insert(len(ENGINE), argv.pop(argv.index("run")))  # the command comes first
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        for line in process.stderr:
            if "preconditioning: writing" in line:
                break
        time.sleep(0.5)
        process.send_signal(signal.SIGTERM)
        _out, err = process.communicate(timeout=60)
    finally:
        process.kill()
    assert process.returncode == 1, err
    result = load(tmp_path / "R.json")
    assert result["status"] == "failed" and "SIGTERM" in result["error"]
    report = result["modes"]["precondition"]["total"]
    assert 0 < report["bytes_written"] < report["target_bytes"]
    assert result["requests"]["completed"] == 0
    assert leftovers(cache) == []
