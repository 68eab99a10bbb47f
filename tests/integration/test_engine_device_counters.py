"""What the device saw, beside the engine's bytes, on an ext4 loop device that only the test's run uses.

Under O_DIRECT every byte the engine moves reaches the device (plus ext4's journal and metadata on writes). With
--io-engine buffered the engine drops each file's pages (fadvise DONTNEED) before it reads it; a process holding
the files mapped keeps those pages in the page cache, as any cache in the path would, and the reads it serves
never reach the device: the ratio drops and the result says so. Skipped, with the reason, where the machine
cannot make loop storage (throttled_storage.py).

With --enable-latency-tracing, bpftrace counts the requests the device completed; they are the ones the device's own
counters saw. That test mounts tracefs where the kernel has it and nothing mounted it (and unmounts it after), and
is skipped, saying why, where bpftrace cannot trace (no bpftrace, no block tracepoints).
"""

import mmap
import os
import subprocess
import threading

import pytest
from engine_helpers import ENGINE, SHORT_RUN, load
from throttled_storage import Unavailable, loop_storage, missing

from kvcache import latency_tracing
from kvcache.mlperf import layout
from kvcache.tracing_result import pooled_buckets, tracing_line

RUN_TIMEOUT_S = 120
PIN_EVERY_S = 0.02

pytestmark = pytest.mark.skipif(missing() is not None, reason=f"loop storage: {missing()}")


def engine_on_loop_device(argv_for, while_running=None, can_run=lambda mount: None):
    """(stdout, the loop device's name) of the engine command argv_for(mount) on a fresh ext4 loop device, which
    must succeed; skipped where can_run(mount) gives a reason. while_running(mount, stop) runs beside it."""
    try:
        with loop_storage(size_mib=2048) as storage:
            reason = can_run(str(storage.mount))
            if reason:
                pytest.skip(reason)
            stop = threading.Event()
            helper = threading.Thread(target=while_running, args=(storage.mount, stop)) if while_running else None
            if helper:
                helper.start()
            try:
                done = storage.run(ENGINE + argv_for(str(storage.mount)), timeout=RUN_TIMEOUT_S)
            finally:
                stop.set()
                if helper:
                    helper.join(timeout=30)
            assert done.returncode == 0, done.stderr
            return done.stdout, os.path.basename(storage.device)
    except Unavailable as reason:
        pytest.skip(f"loop storage: {reason}")


def run_on_loop_device(tmp_path, *extra, while_running=None, can_run=lambda mount: None):
    """(result, stdout, the loop device's name) of a short run whose cache dir is a fresh ext4 loop device."""
    output = tmp_path / "R.json"
    stdout, device = engine_on_loop_device(
        lambda mount: ["run", *SHORT_RUN, "--duration", "4", "--cache-dir", mount, "--output", str(output), *extra],
        while_running,
        can_run,
    )
    return load(output), stdout, device


def test_under_o_direct_the_device_moved_what_the_engine_moved(tmp_path):
    result, _stdout, device = run_on_loop_device(tmp_path)
    block = result["device"]
    [host] = block["per_host"]
    assert (host["source"], host["device"], host["disks"], host["fstype"]) == ("diskstats", device, [device], "ext4")
    assert host["engine_read_bytes"] == result["tiers"]["storage"]["bytes_read"] > 0
    assert host["engine_write_bytes"] == result["tiers"]["storage"]["bytes_written"] > 0
    assert 0.95 <= host["read_ratio"] <= 1.05, host
    assert 0.98 <= host["write_ratio"] <= 1.3, host  # entries, plus ext4's journal and metadata
    assert 0 < host["utilisation"] <= 1 and host["avg_queue_depth"] > 0
    assert len(host["timeseries"]) >= 3 and all(p["cached_bytes"] for p in host["timeseries"])
    assert not [w for w in result["warnings"] if "a cache in the path" in w]
    headline = subprocess.run(ENGINE + ["report", "--headline", str(tmp_path / "R.json")], capture_output=True,
                              text=True, timeout=60, check=True).stdout  # fmt: skip
    assert f"device ({device}): read {block['read_ratio']:.2f}x, write {block['write_ratio']:.2f}x" in headline


def pin_entry_files(mount, stop):
    """Map every entry file as it appears, and again when it grows or is made anew, and touch its pages, so that
    fadvise(DONTNEED) cannot drop them."""
    mapped = {}  # path -> ((inode, size) mapped, the mapping)
    for _tick in range(int(RUN_TIMEOUT_S / PIN_EVERY_S)):
        if stop.wait(PIN_EVERY_S):
            break
        for root, _dirs, names in os.walk(mount):
            for name in names:
                path = os.path.join(root, name)
                if not name.endswith(".kv"):
                    continue
                try:
                    with open(path, "rb") as handle:
                        found = os.fstat(handle.fileno())
                        if mapped.get(path, (None,))[0] == (found.st_ino, found.st_size):
                            continue
                        view = mmap.mmap(handle.fileno(), 0, prot=mmap.PROT_READ)
                except (OSError, ValueError):
                    continue  # gone again (evicted), or still empty
                for offset in range(0, len(view), mmap.PAGESIZE):
                    view[offset]  # noqa: B018 - the read brings the page into the cache
                if path in mapped:
                    mapped[path][1].close()
                mapped[path] = ((found.st_ino, found.st_size), view)
    for _key, view in mapped.values():
        view.close()


def test_reads_a_cache_served_are_shown_and_warned_about(tmp_path):
    result, _stdout, _device = run_on_loop_device(tmp_path, "--io-engine", "buffered", while_running=pin_entry_files)
    [host] = result["device"]["per_host"]
    assert host["engine_read_bytes"] > 64 * 2**20
    assert host["read_ratio"] < 0.8, host
    [warning] = [w for w in result["warnings"] if "a cache in the path" in w]
    assert warning.startswith(f"on {host['host']} the device ({host['device']}) delivered ")


@pytest.fixture
def tracefs():
    """tracefs at /sys/kernel/tracing for the test: mounted here only where the kernel has it and it is not there."""
    root = latency_tracing.TRACEFS_ROOTS[0]
    mounted = False
    if not os.path.isdir(os.path.join(root, "events")) and os.path.isdir(root):
        mounted = (
            subprocess.run(["mount", "-t", "tracefs", "nodev", root], capture_output=True, check=False).returncode == 0
        )
    yield
    if mounted:
        subprocess.run(["umount", root], capture_output=True, check=False)


def test_the_traced_requests_are_the_ones_the_device_counted(tmp_path, tracefs):
    result, _stdout, device = run_on_loop_device(tmp_path, "--enable-latency-tracing", can_run=latency_tracing.refusal)
    [host] = result["device"]["per_host"]
    [traced] = result["latency_tracing"]["per_host"]
    assert (traced["disks"], traced["error"]) == ([device], None)
    d2c = pooled_buckets(result["latency_tracing"])
    sizes = pooled_buckets(result["latency_tracing"], "request_bytes")
    for op in ("read", "write"):
        requests = sum(b["count"] for b in d2c[op])
        # The trace starts before the window and the counters at its start: a few more requests traced.
        assert host[f"{op}_ops"] <= requests <= host[f"{op}_ops"] * 1.1 + 16, (op, requests, host)
        smallest = sum(b["min"] * b["count"] for b in sizes[op])
        largest = sum((b["max"] + 1) * b["count"] for b in sizes[op])
        assert smallest <= host[f"{op}_bytes"] * 1.1 and largest >= host[f"{op}_bytes"], (op, sizes[op], host)
    headline = subprocess.run(ENGINE + ["report", "--headline", str(tmp_path / "R.json")], capture_output=True,
                              text=True, timeout=60, check=True).stdout  # fmt: skip
    assert tracing_line(result["latency_tracing"]) in headline.splitlines()
    assert f"block-layer latency ({device}, bpftrace, device time per request): read p50 < " in headline


def test_an_mlperf_trial_is_traced_too(tmp_path, tracefs):
    def one_traced_trial(mount):
        return ["mlperf", "run", "--category", "open", "--option", "1", *SHORT_RUN, "--duration", "2", "--delay", "0",
                "--trials", "1", "--cache-dir", mount, "--results-dir", str(tmp_path / "results"),
                "--enable-latency-tracing"]  # fmt: skip

    stdout, device = engine_on_loop_device(one_traced_trial, can_run=latency_tracing.refusal)
    [result_path] = (tmp_path / "results").rglob(layout.TRIAL_RESULT_FILE)
    [traced] = load(result_path)["latency_tracing"]["per_host"]
    assert traced["disks"] == [device] and pooled_buckets({"per_host": [traced]})["write"]
    assert f"block-layer latency ({device}, bpftrace, device time per request): " in stdout


def test_chunks_below_a_mib_reach_the_device_at_their_size(tmp_path, tracefs):
    chunk = 256 * 1024  # --io-chunk-mib 0.25: whole 4 KiB blocks, below a MiB
    result, _stdout, _device = run_on_loop_device(tmp_path, "--io-chunk-mib", "0.25", "--enable-latency-tracing",
                                                  can_run=latency_tracing.refusal)  # fmt: skip
    assert result["config"]["io_chunk_mib"] == 0.25
    [host] = result["device"]["per_host"]
    sizes = pooled_buckets(result["latency_tracing"], "request_bytes")
    for op in ("read", "write"):
        # each O_DIRECT chunk is one request, of at most the chunk's bytes (log2 bucket [256 KiB, 512 KiB))
        assert max(b["min"] for b in sizes[op] if b["count"]) <= chunk, (op, sizes[op])
        assert host[f"{op}_ops"] >= host[f"engine_{op}_bytes"] // chunk > 0, host
