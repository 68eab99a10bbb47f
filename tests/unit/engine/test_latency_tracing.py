"""--enable-latency-tracing: its refusals, the bpftrace program and its output (the real tracing path runs in
tests/integration/test_engine_device_counters.py)."""

import io
import json
import os
import shutil

from kvcache import latency_tracing
from kvcache.cli import main
from kvcache.latency_tracing import bucket_percentiles, parse_output, program, refusal

HIST = [{"max": -1, "count": 0}, {"min": 16, "max": 31, "count": 50}, {"min": 32, "max": 63, "count": 45},
        {"min": 1024, "max": 2047, "count": 5}]  # fmt: skip


def test_the_program_filters_the_disks_and_keys_by_rwbs():
    text = program([(259 << 20) | 0, (8 << 20) | 16])
    assert "/args->dev == 271581184 || args->dev == 8388624/" in text
    assert "@d2c_us[args->rwbs] = hist(" in text and "@bytes[args->rwbs] = hist(args->bytes)" in text


def test_output_lines_keyed_and_not_and_the_other_lines_skipped():
    lines = [
        '{"type": "attached_probes", "data": {"probes": 3}}',
        "Lost 3 events",
        json.dumps({"type": "hist", "data": {"@d2c_us": {"R": HIST, "WS": HIST[:2]}}}),
        json.dumps({"type": "hist", "data": {"@bytes": HIST}}),
        json.dumps({"type": "map", "data": {"@issued": {}}}),
    ]
    maps = parse_output("\n".join(lines))
    assert sorted(maps) == ["bytes", "d2c_us"]
    assert maps["d2c_us"]["R"] == HIST and maps["d2c_us"]["WS"] == HIST[:2] and maps["bytes"][""] == HIST


def test_percentiles_are_the_upper_bound_of_their_bucket():
    assert bucket_percentiles(HIST) == {"p50": 31, "p95": 63, "p99": 2047}
    assert bucket_percentiles([]) == {"p50": None, "p95": None, "p99": None}


def test_each_missing_piece_is_named(tmp_path, monkeypatch):
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    assert refusal(str(tmp_path)) == "needs root (bpftrace loads BPF programs)"
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    monkeypatch.setattr(latency_tracing.shutil, "which", lambda name: None)
    assert refusal(str(tmp_path)).startswith("needs bpftrace on PATH")
    monkeypatch.setattr(latency_tracing.shutil, "which", lambda name: "/usr/bin/bpftrace")
    assert refusal(str(tmp_path), tracefs_roots=[str(tmp_path / "none")]).startswith("needs tracefs")
    tracefs = tmp_path / "tracing"
    for event in latency_tracing.EVENTS:
        (tracefs / "events" / event).mkdir(parents=True)
    off_device = refusal(str(tmp_path), sys_root=str(tmp_path / "nosys"), tracefs_roots=[str(tracefs)])
    assert off_device.startswith("needs a cache dir on a block device")


def test_a_run_that_cannot_trace_exits_2_creating_nothing(tmp_path, monkeypatch):
    which = shutil.which  # this host may have bpftrace: the run is made to find none
    monkeypatch.setattr(latency_tracing.shutil, "which", lambda name: None if name == "bpftrace" else which(name))
    out, err = io.StringIO(), io.StringIO()
    argv = ["run", "--model", "tiny-1b", "--num-users", "1", "--duration", "1", "--gpu-mem-gb", "0",
            "--cpu-mem-gb", "0", "--cache-dir", str(tmp_path), "--output", str(tmp_path / "R.json"),
            "--enable-latency-tracing"]  # fmt: skip
    assert main(argv, out, err) == 2
    assert err.getvalue() == f"kvcache run: error: --enable-latency-tracing: {refusal(str(tmp_path))}\n"
    assert list(tmp_path.iterdir()) == []
