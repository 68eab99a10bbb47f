#!/usr/bin/env python
"""Engine storage bandwidth against fio on the same directory, A/B pair by pair.

Each pair runs the engine in throughput mode (no GPU or CPU tier: every byte goes to storage,
O_DIRECT, --io-chunk-mib 16, N users and --io-depth N, so N chunk operations in flight), then fio
on the same directory with the same chunk (--bs), the same concurrency (--numjobs N, psync: one
operation in flight per job), O_DIRECT, and the same total bytes the engine moved in its window.
The ratio is taken within each pair (the disk here drifts by 2x from one minute to the next, so
only neighbouring runs compare), and the median ratio is reported with its min and max.

Which fio job is the fair reference? The engine's window is MIXED: its users read and write
at the same time (a request reads its prefix and previous turn, writes its new context, then
reads it back), so its read and its write bandwidth are each a share of one device shared by
both directions. Comparing the engine's write bandwidth with a pure fio write job (and read with
a pure read job) would charge the engine for the reads running beside its writes: with a 60/40
read/write mix, even a perfect engine would score about 0.6 on reads and 0.4 on writes. So by
default (--mode mixed) fio runs `--rw=rw --rwmixread=P`, P being the share of bytes the engine
read in the same pair, on files fio has just written (reads of real data, never sparse files).
Then engine read / fio read and engine write / fio write both measure the same thing: how much of
what the device delivers for this exact mix the engine gets, and a perfect engine scores 1.0 on
both. (With equal mixes the two ratios come out nearly equal: that is expected.)

--mode separate gives the brief's other reading: fio writes the total bytes, then reads them back,
and the engine's (mixed) write and read bandwidths are divided by those pure bandwidths. It is
printed for reference; expect ratios well below 1 even for a perfect engine.

The fio layout write uses --fallocate=none, so it extends fresh files as the engine does (fio
otherwise preallocates them). The fio mixed job then overwrites those allocated blocks, while the
engine always writes new files (allocation included): an honest, small difference that favours fio.
The fresh-file fio write bandwidth is shown beside the results for that reason.

Last line: `engine/fio read R write W` (median ratios). Goal: both >= 0.90.
"""

import argparse
import json
import math
import os
import shutil
import statistics
import subprocess
import sys

from _common import GIB, MIB, die, engine_command, engine_env, load_json, require_program, spread, work_directory


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description="Engine storage bandwidth vs fio (O_DIRECT, psync) in A/B pairs on one directory.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--dir", help="directory on the storage under test (default: a fresh temp dir under /var/tmp)")
    parser.add_argument("--pairs", type=int, default=3, help="engine/fio pairs")
    parser.add_argument("--duration", type=float, default=10.0, help="engine window per pair, seconds")
    parser.add_argument("--io-depth", type=int, default=2, help="engine --io-depth and --num-users = fio --numjobs")
    parser.add_argument("--chunk-mib", type=int, default=16, help="engine --io-chunk-mib = fio --bs")
    parser.add_argument("--model", default="llama3.1-8b", help="engine --model")
    parser.add_argument(
        "--mode",
        choices=("mixed", "separate"),
        default="mixed",
        help="mixed: fio rw with the engine's read share (fair); separate: fio write then read (pure)",
    )
    parser.add_argument("--fio", default="fio", help="fio executable")
    parser.add_argument("--python", default=sys.executable, help="Python that runs the engine")
    args = parser.parse_args(argv)
    if args.pairs < 1 or args.io_depth < 1 or args.chunk_mib < 1 or args.duration <= 0:
        parser.error("--pairs, --io-depth, --chunk-mib and --duration must be positive")
    return args


def run_engine(args, workdir: str, index: int, chunk_mib=None, io_depth=None, prefix=()) -> dict:
    """One engine window in throughput mode at `chunk_mib` and `io_depth` (default: the arguments'), with
    io_depth users per rank; its bandwidths, bytes, read share and the CPU seconds its ranks took in the window.
    `prefix`: a launcher (mpirun ... -n R) for R ranks on this host."""
    chunk_mib = args.chunk_mib if chunk_mib is None else chunk_mib
    io_depth = args.io_depth if io_depth is None else io_depth
    cache = os.path.join(workdir, "engine")
    os.makedirs(cache, exist_ok=True)
    output = os.path.join(workdir, f"engine-{index}.json")
    command = engine_command(
        [
            "--model", args.model,
            "--performance-profile", "throughput",
            "--generation-mode", "none",
            "--gpu-mem-gb", "0",
            "--cpu-mem-gb", "0",
            "--io-chunk-mib", f"{chunk_mib:g}",
            "--io-depth", str(io_depth),
            "--num-users", str(io_depth),
            "--duration", str(args.duration),
            "--cache-dir", cache,
            "--output", output,
            "--quiet",
            *(["--mpi", "on"] if prefix else []),
        ],
        args.python,
    )  # fmt: skip
    command = [*prefix, *command]
    done = subprocess.run(
        command, env=engine_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, check=False
    )
    if done.returncode != 0 or not os.path.exists(output):
        die(f"engine run failed (exit {done.returncode}): {done.stderr.strip()[-2000:]}")
    result = load_json(output)
    os.remove(output)
    if result["status"] != "ok":
        die(f"engine run failed: {result.get('error')}")
    if result["environment"]["io_engine"] != "direct":
        die(f"engine fell back to {result['environment']['io_engine']} I/O: not comparable with fio --direct=1")
    storage = result["tiers"]["storage"]
    return {
        "read_bw": storage["read_bandwidth_bytes_per_s"],
        "write_bw": storage["write_bandwidth_bytes_per_s"],
        "bytes": storage["bytes_read"] + storage["bytes_written"],
        "read_share": storage["bytes_read"] / max(1, storage["bytes_read"] + storage["bytes_written"]),
        "cpu_s": result["aggregate"]["cpu_seconds"],  # the window's, not the process start's
        # Each I/O call's p50 in ms (None where the engine made none that way).
        "read_p50_ms": storage["read_chunk_latency_ms"]["p50"],
        "write_p50_ms": storage["write_chunk_latency_ms"]["p50"],
    }


def run_fio(args, directory: str, rw: str, size: int, output: str, extra=(), chunk_bytes=None, jobs=None,
            ioengine="psync", iodepth=1) -> dict:  # fmt: skip
    """One fio job on `directory`, O_DIRECT, `jobs` jobs (default --io-depth) of `ioengine` with `iodepth`
    operations in flight each; its read and write bytes per second and completion latency p50s."""
    chunk_bytes = args.chunk_mib * MIB if chunk_bytes is None else chunk_bytes
    command = [
        args.fio,
        "--name=kvfio",
        f"--directory={directory}",
        "--filename_format=kvfio.$jobnum",
        "--direct=1",
        f"--ioengine={ioengine}",
        f"--iodepth={iodepth}",
        f"--bs={chunk_bytes}",
        f"--numjobs={args.io_depth if jobs is None else jobs}",
        f"--size={size}",
        f"--rw={rw}",
        "--group_reporting",
        "--output-format=json",
        f"--output={output}",
        *extra,
    ]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        die(f"fio --rw={rw} failed (exit {done.returncode}): {(done.stderr or done.stdout).strip()[-2000:]}")
    with open(output, encoding="utf-8") as handle:
        text = handle.read()
    job = json.loads(text[text.index("{") :])["jobs"][0]  # fio may print notes before the JSON
    if job.get("error"):
        die(f"fio --rw={rw} job error {job['error']}")
    return {
        "read_bw": job["read"]["bw_bytes"],
        "write_bw": job["write"]["bw_bytes"],
        "read_p50_ms": _clat_p50_ms(job["read"]),
        "write_p50_ms": _clat_p50_ms(job["write"]),
    }


def _clat_p50_ms(side: dict):
    """fio's completion latency p50 of one direction, in ms; None where it made no operation that way."""
    if not side.get("total_ios"):
        return None
    return side["clat_ns"]["percentile"]["50.000000"] / 1e6


def one_pair(args, workdir: str, index: int) -> dict:
    engine = run_engine(args, workdir, index)
    chunk = args.chunk_mib * MIB
    per_job = max(1, math.ceil(engine["bytes"] / args.io_depth / chunk)) * chunk
    fio_dir = os.path.join(workdir, "fio")
    os.makedirs(fio_dir, exist_ok=True)
    try:
        # Lay out the files as the engine does: fresh files, extended by O_DIRECT writes.
        layout = run_fio(args, fio_dir, "write", per_job, os.path.join(workdir, "fio-write.json"), ["--fallocate=none"])
        if args.mode == "mixed":
            mix = min(100, max(0, round(engine["read_share"] * 100)))
            fio = run_fio(args, fio_dir, "rw", per_job, os.path.join(workdir, "fio-rw.json"), [f"--rwmixread={mix}"])
        else:
            read = run_fio(args, fio_dir, "read", per_job, os.path.join(workdir, "fio-read.json"))
            fio = {"read_bw": read["read_bw"], "write_bw": layout["write_bw"]}
    finally:
        shutil.rmtree(fio_dir, ignore_errors=True)
    return {
        "engine": engine,
        "fio": fio,
        "fio_fresh_write_bw": layout["write_bw"],
        "fio_bytes": per_job * args.io_depth,
        "read_ratio": engine["read_bw"] / fio["read_bw"] if fio["read_bw"] else float("nan"),
        "write_ratio": engine["write_bw"] / fio["write_bw"] if fio["write_bw"] else float("nan"),
    }


def main(argv=None) -> int:
    args = parse_args(argv)
    require_program(args.fio, "fio")
    print(
        f"mode {args.mode}: engine throughput, {args.io_depth} users/io-depth, {args.chunk_mib} MiB chunks, "
        f"{args.duration:g} s window; fio psync direct bs={args.chunk_mib}M numjobs={args.io_depth}"
    )
    header = (
        f"{'pair':>4} {'eng rd':>7} {'eng wr':>7} {'rd%':>4} {'GiB':>6} "
        f"{'fio rd':>7} {'fio wr':>7} {'fresh wr':>8} {'rd ratio':>8} {'wr ratio':>8}"
    )
    pairs = []
    with work_directory(args.dir, "kvcache-io-vs-fio-") as workdir:
        print(f"directory {workdir}   (bandwidths in GiB/s)")
        print(header)
        for index in range(args.pairs):
            pair = one_pair(args, workdir, index)
            pairs.append(pair)
            e, f = pair["engine"], pair["fio"]
            print(
                f"{index + 1:>4} {e['read_bw'] / GIB:7.3f} {e['write_bw'] / GIB:7.3f} {e['read_share'] * 100:4.0f} "
                f"{e['bytes'] / GIB:6.1f} {f['read_bw'] / GIB:7.3f} {f['write_bw'] / GIB:7.3f} "
                f"{pair['fio_fresh_write_bw'] / GIB:8.3f} {pair['read_ratio']:8.2f} {pair['write_ratio']:8.2f}",
                flush=True,
            )
    reads = [p["read_ratio"] for p in pairs]
    writes = [p["write_ratio"] for p in pairs]
    print(f"read  ratio median (min .. max): {spread(reads)}")
    print(f"write ratio median (min .. max): {spread(writes)}")
    print(f"engine/fio read {statistics.median(reads):.2f} write {statistics.median(writes):.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
