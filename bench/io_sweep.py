#!/usr/bin/env python
"""The engine against fio at every io-depth x chunk size, in A/B pairs on one directory.

For each point (depth D, chunk C) a pair is an engine window (throughput mode: no GPU or CPU tier, D users,
--io-depth D, --io-chunk-mib C, O_DIRECT) and then fio on the same directory with its best engine at that depth:
io_uring (libaio where the kernel has no io_uring), one job with --iodepth D, so the same number of operations in
flight, --bs C, O_DIRECT, the bytes the engine moved, and the engine's read share as --rwmixread on files fio laid
out first with --fallocate=none (the mixed reference io_vs_fio.py explains). The ratio is taken within each pair,
as the disk drifts between minutes.

The mixed job overwrites files laid out before, while every engine entry is a new file: on ext4 writes that
extend new files run at about 60 % of overwrites at high depth (32 psync writers of 4 MiB here: 1.33-1.39 GiB/s
fresh, 2.17-2.27 overwriting), so at depth >= 8 the write ratios carry that cost of the workload. (fio's layout job
is no fair fresh-file reference: it extends one file, and io_uring hands such writes to a kernel worker that
runs writes to one file one at a time.)

Printed: a line per pair; then the matrix of median read/write ratios (min..max of the pairs beside), the
engine's CPU seconds in its window (user + sys, every thread) per GiB moved at each point (with the floor beside it:
one thread's bare O_DIRECT pwritev/preadv loop at each chunk size: what the syscalls alone cost here), and last
`engine/fio min read R write W`: the lowest median over the matrix. With depth 1 in --depths, also the
latency fidelity: at each chunk size, the engine's per-call p50 (result tiers.storage.*_chunk_latency_ms) over
fio's completion latency p50 (clat) in the same pair, like for like: reads against a sequential read job,
writes against the layout job (at depth 1 both extend a fresh file one write at a time); the mixed job's are
printed too. Goal: within 10 %.
Goals (issue 15): every point >= 0.90, CPU <= 0.10 s/GiB at 1 MiB chunks and <= 0.05 at >= 4 MiB.

--ranks 1,2,4,8 adds the many-ranks rows: `mpirun -n R` engine ranks on this host, each with --ranks-depth users
and io-depth, against fio --numjobs R --iodepth --ranks-depth (the same total depth) at --ranks-chunk; they
count in the last line too. Goal: >= 0.90.
"""

import argparse
import math
import mmap
import os
import shutil
import statistics
import subprocess
import sys
import time

from _common import GIB, MIB, die, mpirun_prefix, require_program, work_directory
from io_vs_fio import run_engine, run_fio

DEPTHS = "1,2,8,32,64"
CHUNKS_MIB = "0.25,1,4,16,64"


def _numbers(text: str, kind, what: str):
    try:
        values = [kind(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{what}: a comma-separated list of numbers, got {text!r}") from None
    if not values or any(v <= 0 for v in values):
        raise argparse.ArgumentTypeError(f"{what}: positive numbers, got {text!r}")
    return values


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description="Engine vs fio (its best engine at each depth) over an io-depth x chunk-size matrix.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--dir", help="directory on the storage under test (default: a fresh temp dir under /var/tmp)")
    parser.add_argument("--depths", default=DEPTHS, type=lambda t: _numbers(t, int, "--depths"),
                        help="io-depths (engine --io-depth and users; fio --iodepth)")  # fmt: skip
    parser.add_argument("--chunks", default=CHUNKS_MIB, type=lambda t: _numbers(t, float, "--chunks"),
                        help="chunk sizes in MiB, whole 4 KiB blocks (engine --io-chunk-mib; fio --bs)")  # fmt: skip
    parser.add_argument("--pairs", type=int, default=2, help="engine/fio pairs per point")
    parser.add_argument("--duration", type=float, default=5.0, help="engine window per pair, seconds")
    parser.add_argument("--ranks", type=lambda t: _numbers(t, int, "--ranks"), default=[],
                        help="also rank counts for mpirun on this host, e.g. 1,2,4,8 (mpirun, mpi4py)")  # fmt: skip
    parser.add_argument("--ranks-depth", type=int, default=8, help="io-depth (and users) per rank in the ranks rows")
    parser.add_argument("--ranks-chunk", type=float, default=4.0, help="chunk size in MiB in the ranks rows")
    parser.add_argument("--mpirun", default="mpirun", help="Open MPI launcher for --ranks")
    parser.add_argument("--model", default="llama3.1-8b", help="engine --model")
    parser.add_argument("--fio", default="fio", help="fio executable")
    parser.add_argument("--python", default=sys.executable, help="Python that runs the engine")
    args = parser.parse_args(argv)
    if args.pairs < 1 or args.duration <= 0:
        parser.error("--pairs and --duration must be positive")
    if args.ranks_depth < 1:
        parser.error("--ranks-depth must be positive")
    if any(round(c * MIB) % 4096 for c in [*args.chunks, args.ranks_chunk]):
        parser.error("--chunks: each size must be whole 4 KiB blocks (0.25 = 256 KiB)")
    return args


def best_fio_engine(args, directory: str) -> str:
    """io_uring where this kernel and fio run it, else libaio (a 4 KiB O_DIRECT write tells)."""
    probe = os.path.join(directory, "probe")
    for engine in ("io_uring", "libaio"):
        done = subprocess.run([args.fio, "--name=probe", f"--filename={probe}", "--size=4k", "--bs=4k",
                               "--rw=write", "--direct=1", f"--ioengine={engine}"],
                              capture_output=True, text=True, check=False)  # fmt: skip
        if os.path.exists(probe):
            os.remove(probe)
        if done.returncode == 0:
            return engine
    die("fio runs neither io_uring nor libaio here")
    return ""


def one_pair(args, workdir: str, index: int, depth: int, chunk_mib: float, fio_engine: str, ranks=0) -> dict:
    """Engine then fio at one point; `ranks` > 0: that many engine ranks under mpirun, fio jobs alike."""
    prefix = mpirun_prefix(args.mpirun, ranks) if ranks else ()
    engine = run_engine(args, workdir, index, chunk_mib=chunk_mib, io_depth=depth, prefix=prefix)
    chunk = round(chunk_mib * MIB)
    jobs = max(1, ranks)
    size = max(1, math.ceil(engine["bytes"] / jobs / chunk)) * chunk  # per fio job
    fio_dir = os.path.join(workdir, "fio")
    os.makedirs(fio_dir, exist_ok=True)
    same = {"chunk_bytes": chunk, "jobs": jobs, "ioengine": fio_engine, "iodepth": depth}
    try:
        fresh = run_fio(args, fio_dir, "write", size, os.path.join(workdir, "fio-write.json"), ["--fallocate=none"],
                        **same)  # fmt: skip
        mix = min(100, max(0, round(engine["read_share"] * 100)))
        fio = run_fio(args, fio_dir, "rw", size, os.path.join(workdir, "fio-rw.json"), [f"--rwmixread={mix}"], **same)
        # Depth 1, for the latency: reads that run through each file in order, as the engine reads an entry.
        sequential = (run_fio(args, fio_dir, "read", size, os.path.join(workdir, "fio-read.json"),
                              [f"--runtime={args.duration:g}"], **same) if depth == 1 else fio)  # fmt: skip
    finally:
        shutil.rmtree(fio_dir, ignore_errors=True)
    return {
        "engine": engine,
        "fio": fio,
        "read_ratio": _ratio(engine["read_bw"], fio["read_bw"]),
        "write_ratio": _ratio(engine["write_bw"], fio["write_bw"]),
        "cpu_s_per_gib": _ratio(engine["cpu_s"], engine["bytes"] / GIB),
        # Like for like: the engine reads each entry in order and writes new files, extending them, as fio's
        # sequential read and layout jobs do; the mixed job's random mix and overwrites are kept beside.
        "read_p50_ratio": _ratio(engine["read_p50_ms"], sequential["read_p50_ms"]),
        "write_p50_ratio": _ratio(engine["write_p50_ms"], fresh["write_p50_ms"]),
        "mixed_read_p50_ratio": _ratio(engine["read_p50_ms"], fio["read_p50_ms"]),
        "overwrite_p50_ratio": _ratio(engine["write_p50_ms"], fio["write_p50_ms"]),
    }


def _ratio(numerator, denominator) -> float:
    """numerator / denominator; nan where either is missing or the denominator is 0 (nothing moved that way)."""
    return numerator / denominator if numerator is not None and denominator else float("nan")


def bare_loop_cpu(directory: str, chunk: int, total: int = GIB) -> float:
    """The floor under the CPU goal: CPU seconds per GiB of one thread that only calls pwritev then preadv with
    O_DIRECT, `chunk` bytes at a time, over `total` bytes of a fresh file (the kernel's share of every engine)."""
    buf = mmap.mmap(-1, chunk)
    buf[:] = os.urandom(chunk)
    path = os.path.join(directory, "bare-loop")
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_DIRECT, 0o600)
    try:
        offsets = range(0, max(chunk, total - total % chunk), chunk)
        started = time.process_time()
        for offset in offsets:
            os.pwritev(fd, [buf], offset)
        for offset in offsets:
            os.preadv(fd, [buf], offset)
        used = time.process_time() - started
    finally:
        os.close(fd)
        os.remove(path)
        buf.close()
    return used / (2 * len(offsets) * chunk / GIB)


def _lowest(every, key: str) -> str:
    """The lowest median over the points; a point where fio moved nothing that way (nan) has no ratio."""
    medians = [statistics.median(p[key] for p in pairs) for pairs in every]
    found = [m for m in medians if not math.isnan(m)]
    return f"{min(found):.2f}" if found else "n/a"


def _cell(values) -> str:
    return f"{statistics.median(values):.2f} ({min(values):.2f}..{max(values):.2f})"


def print_matrix(title: str, depths, chunks, cell) -> None:
    width = 18
    print(f"\n{title}")
    print(f"{'depth':>5} " + " ".join(f"{f'{c:g} MiB':>{width}}" for c in chunks))
    for depth in depths:
        print(f"{depth:>5} " + " ".join(f"{cell(depth, c):>{width}}" for c in chunks))


def print_latency_fidelity(chunks, rows) -> None:
    """Depth 1: the engine's per-call latency p50 against fio's completion latency p50 (goal: within 10 %)."""
    print(
        "\nlatency at depth 1: engine per-call p50 / fio completion (clat) p50, median (min..max of the pairs): "
        "read vs fio's sequential reads, write vs its writes extending fresh files (as the engine's do); "
        "mixed read and overwrite vs the mixed job"
    )
    for chunk, pairs in zip(chunks, rows):
        cells = []
        for op in ("read", "write", "mixed_read", "overwrite"):
            values = [p[f"{op}_p50_ratio"] for p in pairs if not math.isnan(p[f"{op}_p50_ratio"])]
            cells.append(f"{op.replace('_', ' ')} {_cell(values) if values else 'n/a'}")
        print(f"{chunk:>6g} MiB  " + "  ".join(cells))


def run_point(args, workdir, counter, depth, chunk, fio_engine, label, ranks=0):
    """The pairs of one point, each printed as it ends."""
    pairs = []
    for pair_number in range(1, args.pairs + 1):
        counter[0] += 1
        pair = one_pair(args, workdir, counter[0], depth, chunk, fio_engine, ranks)
        pairs.append(pair)
        e, f = pair["engine"], pair["fio"]
        bandwidths = [e["read_bw"], e["write_bw"], f["read_bw"], f["write_bw"]]
        print(f"{label} {chunk:>6g} {pair_number:>4} " + " ".join(f"{bw / GIB:7.3f}" for bw in bandwidths)
              + f" {pair['read_ratio']:8.2f} {pair['write_ratio']:8.2f} {pair['cpu_s_per_gib']:9.3f}",
              flush=True)  # fmt: skip
    return pairs


def main(argv=None) -> int:
    args = parse_args(argv)
    require_program(args.fio, "fio")
    if args.ranks:
        require_program(args.mpirun, "openmpi-bin")
    points, ranked = {}, {}
    with work_directory(args.dir, "kvcache-io-sweep-") as workdir:
        fio_engine = best_fio_engine(args, workdir)
        print(f"directory {workdir}; fio {fio_engine} --iodepth D --numjobs 1 against the engine's D users and "
              f"--io-depth D; {args.duration:g} s windows, {args.pairs} pair(s) per point")  # fmt: skip
        print("bandwidths in GiB/s; cpu: the engine's CPU seconds in its window per GiB it moved")
        print(f"{'depth':>5} {'chunk':>6} {'pair':>4} {'eng rd':>7} {'eng wr':>7} {'fio rd':>7} {'fio wr':>7} "
              f"{'rd ratio':>8} {'wr ratio':>8} {'cpu s/GiB':>9}")  # fmt: skip
        floor = {chunk: bare_loop_cpu(workdir, round(chunk * MIB)) for chunk in args.chunks}
        counter = [0]
        for depth in args.depths:
            for chunk in args.chunks:
                points[(depth, chunk)] = run_point(args, workdir, counter, depth, chunk, fio_engine, f"{depth:>5}")
        for ranks in args.ranks:
            label = f"{f'{ranks}r x{args.ranks_depth}':>5}"
            ranked[ranks] = run_point(args, workdir, counter, args.ranks_depth, args.ranks_chunk, fio_engine, label,
                                      ranks=ranks)  # fmt: skip

    def ratios(depth, chunk, key):
        return [pair[key] for pair in points[(depth, chunk)]]

    print_matrix("engine/fio read, median (min..max of the pairs)", args.depths, args.chunks,
                 lambda d, c: _cell(ratios(d, c, "read_ratio")))  # fmt: skip
    print_matrix("engine/fio write, median (min..max of the pairs)", args.depths, args.chunks,
                 lambda d, c: _cell(ratios(d, c, "write_ratio")))  # fmt: skip
    print_matrix("engine CPU s/GiB in its window (user + sys), median (min..max)", args.depths, args.chunks,
                 lambda d, c: _cell(ratios(d, c, "cpu_s_per_gib")))  # fmt: skip
    print("floor: one thread's bare O_DIRECT pwritev + preadv loop, CPU s/GiB:  "
          + "  ".join(f"{c:g} MiB {floor[c]:.3f}" for c in args.chunks))  # fmt: skip
    if ranked:
        print(f"\nmany ranks on this host, {args.ranks_depth} in flight per rank, {args.ranks_chunk:g} MiB chunks "
              "(fio: as many jobs)")  # fmt: skip
        for ranks, pairs in ranked.items():
            read, write = _cell([p["read_ratio"] for p in pairs]), _cell([p["write_ratio"] for p in pairs])
            print(f"{ranks:>5} rank(s): read {read}  write {write}")
    if 1 in args.depths:
        print_latency_fidelity(args.chunks, [points[(1, chunk)] for chunk in args.chunks])
    every = [*points.values(), *ranked.values()]
    print(f"engine/fio min read {_lowest(every, 'read_ratio')} write {_lowest(every, 'write_ratio')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
