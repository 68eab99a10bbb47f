"""`kvcache trace fio TRACE`: a fio job file that replays an --io-trace-log trace's operations on a device.

The trace is read as a stream (plain CSV, or .zst through zstandard), keeping one counter per (direction,
size). The job reproduces the operation sizes and the read/write mix of one tier's rows (Tier-2, the
storage, unless told otherwise):
- bssplit, one list per direction: the sizes in at most MAX_BINS bins of consecutive sizes, each of its
  share of that direction's operations (fio's bssplit counts I/Os), its block size the bin's bytes / ops
  (so the bytes are kept too), 4 KiB aligned;
- rwmixread: the share of operations that are reads (fio's rwmixread counts I/Os as well; with the sizes
  per direction this keeps the byte mix);
- io_size: the trace's bytes of that tier, so the job moves the same volume; size: the bytes it wrote
  (the most the trace can hold at once), at least the largest block.
Operations are whole entries, as the trace logs them: fio issues each as one I/O of that size.
"""

import csv
import io
import os
from collections import Counter
from typing import Dict, List, Optional, TextIO, Tuple

from kvcache.errors import UsageError, shown, shown_path
from kvcache.io_trace import COLUMNS, READ, TIER_LABELS, WRITE, compressed, import_zstandard
from kvcache.units import ALIGN

ARGUMENT = "TRACE"
ALL_TIERS = "all"
TIER_CHOICES = tuple(TIER_LABELS.values()) + (ALL_TIERS,)
DEFAULT_TIER = TIER_LABELS["storage"]
MAX_BINS = 16  # fio takes at most 64 sizes per direction; fewer bins keep each one's share well above 1 %
DEFAULT_FILENAME = "kvcache-trace.fio.data"


def _open_text(path: str):
    """The trace as text, streamed (a .zst through zstandard's stream reader)."""
    if compressed(path):
        zstandard = import_zstandard()
        raw = open(path, "rb")  # noqa: SIM115 - closed by the wrapper
        return io.TextIOWrapper(zstandard.ZstdDecompressor().stream_reader(raw, closefd=True), encoding="ascii")
    return open(path, encoding="ascii", newline="")


def read_histogram(path: str, tier: str = DEFAULT_TIER) -> Dict[str, Counter]:
    """{Read: Counter(size -> ops), Write: ...} of the rows of `tier` (or every tier with "all")."""
    if not os.path.isfile(path):
        raise UsageError(ARGUMENT, f"{shown_path(path)} is not a file")
    counts = {READ: Counter(), WRITE: Counter()}
    try:
        with _open_text(path) as text:
            rows = csv.reader(text)
            header = next(rows, None)
            if header is None or tuple(header) != COLUMNS:
                raise UsageError(
                    ARGUMENT,
                    f"{shown_path(path)} is not an --io-trace-log trace: its header must be {','.join(COLUMNS)}",
                )
            for line, row in enumerate(rows, start=2):
                if len(row) != len(COLUMNS) or row[1] not in counts or not row[2].isdigit():
                    raise UsageError(
                        ARGUMENT, f"{shown_path(path)} line {line}: not a trace row (Read/Write, a size in bytes)"
                    )
                if tier == ALL_TIERS or row[3] == tier:
                    counts[row[1]][int(row[2])] += 1
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise UsageError(ARGUMENT, f"cannot read {shown_path(path)}: {exc}") from None
    except Exception as exc:  # zstandard.ZstdError: not a zstd stream; the class is the optional package's
        if type(exc).__module__.startswith("zstandard"):
            raise UsageError(ARGUMENT, f"{shown_path(path)} is not a zstandard stream: {exc}") from None
        raise
    if not (counts[READ] or counts[WRITE]):
        raise UsageError(ARGUMENT, f"{shown_path(path)} holds no operation of {tier}")
    return counts


def _bins(sizes: Counter) -> List[Tuple[int, int]]:
    """(ops, bytes) of at most MAX_BINS bins of consecutive sizes, about equal in ops."""
    total = sum(sizes.values())
    bins: List[Tuple[int, int]] = []
    ops = nbytes = 0
    ordered = sorted(sizes)
    for size in ordered:
        ops += sizes[size]
        nbytes += sizes[size] * size
        # Close a bin once it holds its equal share of the operations (the last one holds the rest).
        if ops * MAX_BINS >= total or size == ordered[-1]:
            bins.append((ops, nbytes))
            ops = nbytes = 0
    return bins


def _percentages(weights: List[int]) -> List[int]:
    """Whole percentages summing to 100 (largest remainder)."""
    total = sum(weights)
    exact = [w * 100 / total for w in weights]
    shares = [int(x) for x in exact]
    for index in sorted(range(len(exact)), key=lambda i: shares[i] - exact[i])[: 100 - sum(shares)]:
        shares[index] += 1
    return shares


def bssplit(sizes: Counter) -> str:
    """fio's bssplit of one direction: size/percent pairs; a bin too small for 1 % joins its neighbour."""
    bins = _bins(sizes)
    while True:
        shares = _percentages([ops for ops, _bytes in bins])
        if all(shares) or len(bins) == 1:
            break
        index = shares.index(0)
        other = index - 1 if index else 1
        merged = (bins[index][0] + bins[other][0], bins[index][1] + bins[other][1])
        bins[min(index, other)] = merged
        del bins[max(index, other)]
    parts = []
    for (ops, nbytes), share in zip(bins, shares):
        block = max(ALIGN, round(nbytes / ops / ALIGN) * ALIGN)
        parts.append(f"{block}/{share}")
    return ":".join(parts)


def job_text(path: str, counts: Dict[str, Counter], tier: str, filename: str) -> str:
    reads, writes = counts[READ], counts[WRITE]
    read_ops, write_ops = sum(reads.values()), sum(writes.values())
    read_bytes = sum(size * n for size, n in reads.items())
    write_bytes = sum(size * n for size, n in writes.items())
    largest = max(list(reads) + list(writes))
    region = max(write_bytes, largest)
    lines = [
        f"; fio job written by `kvcache trace fio` from {os.path.basename(path)} ({tier} rows)",
        f"; {read_ops} reads ({read_bytes} bytes), {write_ops} writes ({write_bytes} bytes)",
        "; bssplit: each direction's sizes by share of its operations; rwmixread: the share of operations",
        "; that are reads. Point filename at the device to measure: fio overwrites what it holds.",
        "[global]",
        "ioengine=libaio",
        "direct=1",
        "iodepth=1",
        "randrepeat=0",
        f"filename={filename}",
        f"size={region}",
        f"io_size={read_bytes + write_bytes}",
        "",
        "[kvcache-trace]",
    ]
    if read_ops and write_ops:
        rwmixread = round(read_ops * 100 / (read_ops + write_ops))
        lines += ["rw=randrw", f"rwmixread={rwmixread}", f"bssplit={bssplit(reads)},{bssplit(writes)}"]
    elif read_ops:
        lines += ["rw=randread", f"bssplit={bssplit(reads)}"]
    else:
        lines += ["rw=randwrite", f"bssplit={bssplit(writes)}"]
    return "\n".join(lines) + "\n"


def run_trace_fio(
    trace: str, output: Optional[str], tier: Optional[str], filename: Optional[str], stdout: TextIO
) -> int:
    """Write the job to `output` (refused when it exists: a job file is never replaced) or to stdout."""
    tier, filename = tier or DEFAULT_TIER, filename or DEFAULT_FILENAME
    if tier not in TIER_CHOICES:
        raise UsageError("--tier", f"choose one of {', '.join(TIER_CHOICES)}, got {shown(tier)}")
    if output is not None:
        directory = os.path.dirname(os.path.abspath(output))
        if os.path.lexists(output):
            raise UsageError("--output", f"{shown_path(output)} exists; give a new path")
        if not os.path.isdir(directory):
            raise UsageError("--output", f"the directory {shown_path(directory)} does not exist")
    text = job_text(trace, read_histogram(trace, tier), tier, filename)
    if output is None:
        stdout.write(text)
        return 0
    try:
        with open(output, "x", encoding="ascii") as handle:
            handle.write(text)
    except OSError as exc:
        raise UsageError("--output", f"cannot write {shown_path(output)}: {exc.strerror}") from None
    stdout.write(f"fio job: {os.path.abspath(output)}\n")
    return 0
